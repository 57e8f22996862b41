"""Strategies: named sets of client options pushed by the heartbeat, and who gets which."""

import re

from .. import tables
from ..http import bad_request
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id
from .forms import MAX_FORM_BYTES

OPTION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_OPTIONS = 200
MAX_VALUE = 1000


def parse_options(text):
    """``key=value`` lines (blank lines skipped) as a dict; a key twice is a mistake."""
    options = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not OPTION_KEY.fullmatch(key):
            raise bad_request(f"line {number}: write option=value, the option in letters, "
                              "digits, '.', '_' or '-'")
        if key in options:
            raise bad_request(f"line {number}: {key} is set twice")
        if len(value) > MAX_VALUE:
            raise bad_request(f"line {number}: the value is longer than {MAX_VALUE} characters")
        options[key] = value
    if len(options) > MAX_OPTIONS:
        raise bad_request(f"a strategy has at most {MAX_OPTIONS} options")
    return options


class StrategyPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/strategies", self.list, "Strategies", query=LIST_QUERY)
        route(router, "POST", "/strategies", self.add, "Add a strategy", back="/strategies",
              fields=("name",))
        route(router, "GET", "/strategies/{id}", self.show, "One strategy")
        route(router, "POST", "/strategies/{id}", self.edit, "Edit a strategy",
              back="/strategies/{id}", fields=("name", "enabled", "options"))
        route(router, "POST", "/strategies/{id}/assign", self.assign,
              "Give a user or a device a strategy", back="/strategies/{id}",
              fields=("target_kind", "name"))
        route(router, "POST", "/strategies/{id}/delete", self.delete, "Delete a strategy",
              back="/strategies/{id}")

    async def list(self, call, viewer):
        q, number = list_args(call)
        total, strategies = await self.db.run(data.list_strategies, q, number)
        return self.console.page(viewer, "strategies.html", section="strategies",
                                 title="Strategies", q=q, strategies=strategies,
                                 pager=pager(call, number, total))

    async def add(self, call, viewer):
        name = call.form.text("name", tables.NAME, required=True)
        strategy_id = await self.db.run(data.add_strategy, actor(call, viewer), name)
        return self.console.done(viewer, f"/strategies/{strategy_id}",
                                 f"Strategy {name} added; give it options below.")

    async def show(self, call, viewer):
        strategy = await self.db.run(data.get_strategy, path_id(call))
        text = "\n".join(f"{k}={v}" for k, v in strategy["options"].items())
        return self.console.page(viewer, "strategy.html", section="strategies",
                                 title=strategy["name"], strategy=strategy, options_text=text)

    async def edit(self, call, viewer):
        strategy_id, form = path_id(call), call.form
        name = form.text("name", tables.NAME, required=True)
        options = parse_options(form.text("options", MAX_FORM_BYTES))
        await self.db.run(data.edit_strategy, actor(call, viewer), strategy_id, name,
                          form.checked("enabled"), options)
        return self.console.done(viewer, f"/strategies/{strategy_id}",
                                 "Saved: devices take it at their next heartbeat.")

    async def assign(self, call, viewer):
        strategy_id, form = path_id(call), call.form
        target = form.choice("target_kind", ("user", "device"))
        name = form.text("name", tables.NAME, required=True)
        await self.db.run(data.assign_strategy, actor(call, viewer), strategy_id, target, name)
        return self.console.done(viewer, f"/strategies/{strategy_id}",
                                 f"Strategy given to {target} {name}.")

    async def delete(self, call, viewer):
        await self.db.run(data.delete_strategy, actor(call, viewer), path_id(call))
        return self.console.done(viewer, "/strategies", "Strategy deleted.")
