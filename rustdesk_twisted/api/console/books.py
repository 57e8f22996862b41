"""Address books: every user's books, a book's peers and share rules, its recycle bin."""

from .. import tables
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id

TARGETS = ("user", "group", "everyone")


class BookPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/address-books", self.list, "Address books", query=LIST_QUERY)
        route(router, "POST", "/address-books", self.add, "Create a shared address book",
              back="/address-books", fields=("name", "owner", "note"))
        route(router, "GET", "/address-books/{id}", self.show,
              "An address book: peers and share rules", query=LIST_QUERY)
        route(router, "GET", "/address-books/{id}/bin", self.bin,
              "An address book's recycle bin", query=LIST_QUERY)
        route(router, "POST", "/address-books/{id}/rules", self.add_rule,
              "Share an address book", back="/address-books/{id}",
              fields=("target_kind", "name", "rule"))
        route(router, "POST", "/address-books/{id}/rules/{rule}/delete", self.delete_rule,
              "Stop sharing an address book with someone", back="/address-books/{id}")
        route(router, "POST", "/address-books/{id}/bin/{peer}/restore", self.restore,
              "Restore a deleted peer", back="/address-books/{id}/bin")
        route(router, "POST", "/address-books/{id}/bin/empty", self.empty,
              "Empty an address book's recycle bin", back="/address-books/{id}/bin")

    async def list(self, call, viewer):
        q, number = list_args(call)
        total, books = await self.db.run(data.list_books, q, number)
        return self.console.page(viewer, "books.html", section="books", title="Address books",
                                 q=q, books=books, pager=pager(call, number, total))

    async def add(self, call, viewer):
        form = call.form
        owner = form.text("owner", tables.NAME, required=True)
        name = form.text("name", tables.NAME, required=True)
        note = form.text("note", tables.NOTE)
        book_id = await self.db.run(data.add_book, actor(call, viewer), owner, name, note)
        return self.console.done(viewer, f"/address-books/{book_id}",
                                 f"Shared address book {name} created; share it below.")

    async def _book_page(self, call, viewer, deleted):
        book = await self.db.run(data.get_book, path_id(call))
        q, number = list_args(call)
        total, peers = await self.db.run(data.book_peers, book["id"], deleted, q, number)
        rules = await self.db.run(data.book_rules, book["id"])
        return self.console.page(viewer, "book.html", section="books", title=book["name"],
                                 book=book, q=q, peers=peers, rules=rules, bin=deleted,
                                 pager=pager(call, number, total), rule_names=data.RULE_NAMES,
                                 targets=TARGETS)

    def show(self, call, viewer):
        return self._book_page(call, viewer, deleted=False)

    def bin(self, call, viewer):
        return self._book_page(call, viewer, deleted=True)

    async def add_rule(self, call, viewer):
        book_id, form = path_id(call), call.form
        target = form.choice("target_kind", TARGETS)
        name = form.text("name", tables.NAME, required=target != "everyone")
        rule = form.integer("rule", minimum=1, maximum=3)
        await self.db.run(data.add_book_rule, actor(call, viewer), book_id, target, name, rule)
        return self.console.done(viewer, f"/address-books/{book_id}", "Shared.")

    async def delete_rule(self, call, viewer):
        book_id = path_id(call)
        await self.db.run(data.delete_book_rule, actor(call, viewer), book_id,
                          path_id(call, "rule"))
        return self.console.done(viewer, f"/address-books/{book_id}", "Rule removed.")

    async def restore(self, call, viewer):
        book_id = path_id(call)
        await self.db.run(data.restore_peer, actor(call, viewer), book_id,
                          path_id(call, "peer"))
        return self.console.done(viewer, f"/address-books/{book_id}/bin", "Peer restored.")

    async def empty(self, call, viewer):
        book_id = path_id(call)
        await self.db.run(data.empty_bin, actor(call, viewer), book_id)
        return self.console.done(viewer, f"/address-books/{book_id}/bin", "Recycle bin emptied.")
