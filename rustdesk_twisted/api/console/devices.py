"""Devices: the list with hbbs's online state, editing, and hbbs's change-ID and release.

Change-ID and release go to hbbs's console socket (:class:`~..hbbs.HbbsLink`)
and its reply is shown as it is.  A device's ID came from the device itself,
so only IDs of word characters are ever put into a console command: anything
else could carry a second command.
"""

import re

from twisted.internet import defer, error

from ...hbbs.registry import ID_FORMAT
from .. import tables
from ..http import bad_request
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id

SAFE_ID = re.compile(r"[\w-]{1,64}")
DEVICE_STATUS = {1: "enabled", 0: "disabled"}


def hbbs_reply(d):
    """hbbs's reply, or a sentence saying why there is none."""
    def unreachable(failure):
        failure.trap(error.ConnectError, error.TimeoutError, defer.TimeoutError)
        return f"hbbs's console did not answer: {failure.getErrorMessage()}\n"
    return d.addErrback(unreachable)


def _sendable(rustdesk_id):
    if not SAFE_ID.fullmatch(rustdesk_id):
        raise bad_request("this device's ID has characters hbbs's console cannot take")


class DevicePages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/devices", self.list, "Devices", query=LIST_QUERY)
        route(router, "GET", "/devices/{id}", self.show, "One device")
        route(router, "POST", "/devices/{id}", self.edit, "Edit a device", back="/devices/{id}",
              fields=("owner", "device_group_id", "strategy_id", "status", "note"))
        route(router, "POST", "/devices/{id}/change-id", self.change_id,
              "Change a device's ID through hbbs", back="/devices/{id}", fields=("new_id",))
        route(router, "POST", "/devices/{id}/release", self.release,
              "Release a device's ID in hbbs", back="/devices/{id}")

    async def list(self, call, viewer):
        q, number = list_args(call)
        total, devices = await self.db.run(data.list_devices, q, number)
        online = await self.console.hbbs.online([d["rustdesk_id"] for d in devices])
        return self.console.page(viewer, "devices.html", section="devices", title="Devices",
                                 q=q, devices=devices, online=online,
                                 pager=pager(call, number, total), statuses=DEVICE_STATUS)

    async def show(self, call, viewer):
        device = await self.db.run(data.get_device, path_id(call))
        online = await self.console.hbbs.online([device["rustdesk_id"]])
        choices = await self.db.run(data.choices)
        return self.console.page(viewer, "device.html", section="devices",
                                 title=device["rustdesk_id"], device=device,
                                 online=device["rustdesk_id"] in online, choices=choices,
                                 statuses=DEVICE_STATUS)

    async def edit(self, call, viewer):
        device_id, form = path_id(call), call.form
        values = {"note": form.text("note", tables.NOTE),
                  "status": int(form.choice("status", ("1", "0"))),
                  "device_group_id": form.reference("device_group_id"),
                  "strategy_id": form.reference("strategy_id")}
        owner = form.text("owner", tables.NAME)
        await self.db.run(data.edit_device, actor(call, viewer), device_id, values, owner)
        return self.console.done(viewer, f"/devices/{device_id}", "Saved.")

    async def change_id(self, call, viewer):
        device = await self.db.run(data.get_device, path_id(call))
        old_id = device["rustdesk_id"]
        new_id = call.form.text("new_id", tables.NAME, required=True, label="new ID")
        if not ID_FORMAT.fullmatch(new_id):
            raise bad_request(f"{new_id!r} is not a valid ID: a letter, then 5 to 15 letters, "
                              "digits, _ or -")
        _sendable(old_id)
        reply = await hbbs_reply(self.console.hbbs.rename(old_id, new_id))
        renamed = reply == f"{old_id}: renamed to {new_id}\n"
        await self.db.run(data.device_renamed, actor(call, viewer), device["id"], old_id, new_id,
                          reply, renamed)
        return self.console.done(viewer, f"/devices/{device['id']}",
                                 f"Reply from hbbs: {reply.strip()}", "ok" if renamed else "error")

    async def release(self, call, viewer):
        device = await self.db.run(data.get_device, path_id(call))
        _sendable(device["rustdesk_id"])
        reply = await hbbs_reply(self.console.hbbs.release(device["rustdesk_id"]))
        await self.db.run(data.device_released, actor(call, viewer), device["rustdesk_id"],
                          reply)
        released = reply == f"{device['rustdesk_id']}: released\n"
        return self.console.done(viewer, f"/devices/{device['id']}",
                                 f"Reply from hbbs: {reply.strip()}", "ok" if released else "error")
