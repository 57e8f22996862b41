"""User groups and device groups, and the access rules of user groups (group_rules)."""

from .. import tables
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id

KINDS = {"user": ("/user-groups", "User groups", "user group"),
         "device": ("/device-groups", "Device groups", "device group")}


def _fields(form):
    return {"name": form.text("name", tables.NAME, required=True),
            "note": form.text("note", tables.NOTE)}


class GroupPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        for kind, (base, title, what) in KINDS.items():
            route(router, "GET", base, self._bound(self.list, kind), title, query=LIST_QUERY)
            route(router, "POST", base, self._bound(self.add, kind), f"Add a {what}", back=base,
                  fields=("name", "note"))
            route(router, "GET", base + "/{id}", self._bound(self.show, kind), f"One {what}")
            route(router, "POST", base + "/{id}", self._bound(self.edit, kind), f"Edit a {what}",
                  back=base + "/{id}", fields=("name", "note"))
            route(router, "POST", base + "/{id}/delete", self._bound(self.delete, kind),
                  f"Delete a {what}", back=base + "/{id}")
        route(router, "POST", "/user-groups/{id}/rules", self.add_rule,
              "Let a user group access a user, user group or device group",
              back="/user-groups/{id}", fields=("target_kind", "target"))
        route(router, "POST", "/user-groups/{id}/rules/{rule}/delete", self.delete_rule,
              "Remove an access rule", back="/user-groups/{id}")

    @staticmethod
    def _bound(handler, kind):
        return lambda call, viewer: handler(call, viewer, kind)

    async def list(self, call, viewer, kind):
        q, number = list_args(call)
        total, groups = await self.db.run(data.list_groups, kind, q, number)
        base, title, what = KINDS[kind]
        return self.console.page(viewer, "groups.html", section="groups", title=title, q=q,
                                 kind=kind, base=base, what=what, groups=groups,
                                 pager=pager(call, number, total))

    async def add(self, call, viewer, kind):
        fields = _fields(call.form)
        group_id = await self.db.run(data.add_group, actor(call, viewer), kind, fields["name"],
                                     fields["note"])
        return self.console.done(viewer, f"{KINDS[kind][0]}/{group_id}",
                                 f"{KINDS[kind][2].capitalize()} {fields['name']} added.")

    async def show(self, call, viewer, kind):
        group = await self.db.run(data.get_group, kind, path_id(call))
        rules = await self.db.run(data.group_rules, group["id"]) if kind == "user" else []
        base, _, what = KINDS[kind]
        return self.console.page(viewer, "group.html", section="groups", title=group["name"],
                                 kind=kind, base=base, what=what, group=group, rules=rules,
                                 targets=data.RULE_TARGETS)

    async def edit(self, call, viewer, kind):
        group_id = path_id(call)
        await self.db.run(data.edit_group, actor(call, viewer), kind, group_id,
                          _fields(call.form))
        return self.console.done(viewer, f"{KINDS[kind][0]}/{group_id}", "Saved.")

    async def delete(self, call, viewer, kind):
        await self.db.run(data.delete_group, actor(call, viewer), kind, path_id(call))
        return self.console.done(viewer, KINDS[kind][0], f"{KINDS[kind][2].capitalize()} "
                                 "deleted; its members have no group now.")

    async def add_rule(self, call, viewer):
        group_id = path_id(call)
        target_kind = call.form.choice("target_kind", data.RULE_TARGETS)
        name = call.form.text("target", tables.NAME, required=True)
        await self.db.run(data.add_rule, actor(call, viewer), group_id, target_kind, name)
        return self.console.done(viewer, f"/user-groups/{group_id}", "Rule added.")

    async def delete_rule(self, call, viewer):
        group_id = path_id(call)
        await self.db.run(data.delete_rule, actor(call, viewer), group_id,
                          path_id(call, "rule"))
        return self.console.done(viewer, f"/user-groups/{group_id}", "Rule removed.")
