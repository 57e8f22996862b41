"""Users: the list, adding, editing, enabling and disabling, password and TOTP resets; and
every user's own page (their devices, their password)."""

from .. import tables
from ..accounts import MAX_PASSWORD, TOO_MANY_ATTEMPTS, _check_password, hash_password
from ..http import bad_request
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id

MIN_PASSWORD = 8


def new_password(form, name="password", confirm="confirm"):
    password = form.secret(name, MAX_PASSWORD)
    if len(password) < MIN_PASSWORD:
        raise bad_request(f"a password has at least {MIN_PASSWORD} characters")
    if password != form.secret(confirm, MAX_PASSWORD):
        raise bad_request("the two passwords differ")
    return password


USER_FIELDS = ("display_name", "email", "note", "is_admin", "group_id", "strategy_id")


def _user_fields(form):
    return {"display_name": form.text("display_name", tables.NAME),
            "email": form.text("email", tables.SHORT),
            "note": form.text("note", tables.NOTE),
            "is_admin": form.checked("is_admin"),
            "group_id": form.reference("group_id"),
            "strategy_id": form.reference("strategy_id")}


class UserPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/users", self.list, "Users", query=LIST_QUERY)
        route(router, "POST", "/users", self.add, "Add a user", back="/users",
              fields=USER_FIELDS + ("name", "password", "confirm"))
        route(router, "GET", "/users/{id}", self.show, "One user")
        route(router, "POST", "/users/{id}", self.edit, "Edit a user", back="/users/{id}",
              fields=USER_FIELDS + ("name",))
        route(router, "POST", "/users/{id}/status", self.status, "Enable or disable a user",
              back="/users/{id}", fields=("status",))
        route(router, "POST", "/users/{id}/password", self.reset_password,
              "Set a user's password", back="/users/{id}", fields=("password", "confirm"))
        route(router, "POST", "/users/{id}/totp-reset", self.reset_totp,
              "Turn off a user's TOTP", back="/users/{id}")
        route(router, "GET", "/me", self.me, "Your devices and password", admin=False,
              query=LIST_QUERY)
        route(router, "POST", "/me/password", self.change_password, "Change your password",
              admin=False, back="/me", fields=("current", "password", "confirm"))

    async def list(self, call, viewer):
        q, number = list_args(call)
        total, users = await self.db.run(data.list_users, q, number)
        choices = await self.db.run(data.choices)
        return self.console.page(viewer, "users.html", section="users", title="Users", q=q,
                                 users=users, pager=pager(call, number, total), choices=choices,
                                 statuses=data.USER_STATUS)

    async def add(self, call, viewer):
        form = call.form
        values = _user_fields(form)
        values["name"] = form.text("name", tables.NAME, required=True)
        password = new_password(form)
        values["password_hash"] = await self.console.blocking(hash_password, password)
        user_id = await self.db.run(data.add_user, actor(call, viewer), values)
        return self.console.done(viewer, f"/users/{user_id}", f"User {values['name']} added.")

    async def show(self, call, viewer):
        user = await self.db.run(data.get_user, path_id(call))
        choices = await self.db.run(data.choices)
        total, devices = await self.db.run(data.user_devices, user["id"], 1)
        return self.console.page(viewer, "user.html", section="users", title=user["name"],
                                 user=user, choices=choices, devices=devices,
                                 device_total=total, statuses=data.USER_STATUS)

    async def edit(self, call, viewer):
        user_id = path_id(call)
        values = _user_fields(call.form)
        values["name"] = call.form.text("name", tables.NAME, required=True)
        await self.db.run(data.edit_user, actor(call, viewer), user_id, values)
        return self.console.done(viewer, f"/users/{user_id}", "Saved.")

    async def status(self, call, viewer):
        user_id = path_id(call)
        status = int(call.form.choice("status", ("1", "0")))
        await self.db.run(data.edit_user, actor(call, viewer), user_id, {"status": status})
        return self.console.done(viewer, f"/users/{user_id}",
                                 "Enabled." if status == 1 else "Disabled: its sessions end.")

    async def reset_password(self, call, viewer):
        user_id = path_id(call)
        digest = await self.console.blocking(hash_password, new_password(call.form))
        keep = viewer.token_id if user_id == viewer.user["id"] else None
        await self.db.run(data.set_password, actor(call, viewer), user_id, digest, keep)
        return self.console.done(viewer, f"/users/{user_id}",
                                 "Password set; the user's other sessions have ended.")

    async def reset_totp(self, call, viewer):
        user_id = path_id(call)
        await self.db.run(data.reset_totp, actor(call, viewer), user_id)
        return self.console.done(viewer, f"/users/{user_id}",
                                 "TOTP turned off: the user signs in with the password alone.")

    async def me(self, call, viewer):
        _, number = list_args(call)
        total, devices = await self.db.run(data.user_devices, viewer.user["id"], number)
        online = await self.console.hbbs.online([d["rustdesk_id"] for d in devices])
        return self.console.page(viewer, "me.html", section="me", title="My account",
                                 devices=devices, online=online,
                                 pager=pager(call, number, total))

    async def change_password(self, call, viewer):
        current = call.form.secret("current", MAX_PASSWORD)
        password = new_password(call.form)
        throttle, name = self.console.accounts.throttle, viewer.user["name"]
        if throttle.refused(call.client_ip, name, call.now) is not None:
            raise bad_request(TOO_MANY_ATTEMPTS)
        if await self.console.blocking(_check_password, viewer.user, current) is None:
            throttle.failed(call.client_ip, name, call.now)
            raise bad_request("the current password is wrong")
        digest = await self.console.blocking(hash_password, password)
        await self.db.run(data.set_password, actor(call, viewer), viewer.user["id"], digest,
                          viewer.token_id)
        return self.console.done(viewer, "/me", "Password changed; your other sessions ended.")
