"""The hbbr text console (PROTOCOL.md 7.9), on its own endpoint.

The official server answers consoles on the public relay port for loopback
peers; here it listens only where ``--console`` says (a Unix socket in the
working directory by default).  One read of at most 1024 bytes within one
second, one reply, close.  Outputs are byte-exact with the official ones (G25).
"""

from ..textconsole import ConsoleFactory
from .bandwidth import MBIT, mbit_text, parse_positive, rust_float

HELP = "".join(line + "\n" for line in (
    "blacklist-add(ba) <ip>",
    "blacklist-remove(br) <ip>",
    "blacklist(b) <ip>",
    "blocklist-add(Ba) <ip>",
    "blocklist-remove(Br) <ip>",
    "blocklist(B) <ip>",
    "downgrade-threshold(dt) [value]",
    "downgrade-start-check(t) [value(second)]",
    "limit-speed(ls) [value(Mb/s)]",
    "total-bandwidth(tb) [value(Mb/s)]",
    "single-bandwidth(sb) [value(Mb/s)]",
    "usage(u)",
))


def _edit_list(address_list, argument, adding):
    if argument is None:
        return ""
    if not adding and argument == "all":
        address_list.clear()
        return ""
    for entry in argument.split("|"):
        if adding:
            if not address_list.add(entry):
                return f"{address_list.name.capitalize()} entry limit reached\n"
        else:
            address_list.remove(entry)
    return ""


def _show_list(address_list, argument):
    if argument is not None:
        return "true\n" if argument in address_list else "false\n"
    return "".join(entry + "\n" for entry in address_list.entries())


def _rate(policy, attribute, argument):
    if argument is None:
        return mbit_text(getattr(policy, attribute)) + "Mb/s\n"
    value = parse_positive(argument)
    if value is not None:
        setattr(policy, attribute, int(value * MBIT))
    return ""


def run_command(server, text):
    """The console's reply to ``text`` (already decoded)."""
    tokens = text.strip().split(" ")
    command = tokens[0]
    argument = tokens[1] if len(tokens) > 1 else None
    policy = server.policy
    if command == "h":
        return HELP
    if command in ("ba", "blacklist-add"):
        return _edit_list(server.blacklist, argument, True)
    if command in ("br", "blacklist-remove"):
        return _edit_list(server.blacklist, argument, False)
    if command in ("b", "blacklist"):
        return _show_list(server.blacklist, argument)
    if command in ("Ba", "blocklist-add"):
        return _edit_list(server.blocklist, argument, True)
    if command in ("Br", "blocklist-remove"):
        return _edit_list(server.blocklist, argument, False)
    if command in ("B", "blocklist"):
        return _show_list(server.blocklist, argument)
    if command in ("dt", "downgrade-threshold"):
        if argument is None:
            return rust_float(policy.threshold_100 / 100) + "\n"
        value = parse_positive(argument)
        if value is not None:
            policy.threshold_100 = int(value * 100)
        return ""
    if command in ("t", "downgrade-start-check"):
        if argument is None:
            return f"{policy.start_check_ms // 1000}s\n"
        if argument.isdigit() and int(argument) > 0:
            policy.start_check_ms = int(argument) * 1000
        return ""
    if command in ("ls", "limit-speed"):
        return _rate(policy, "limit", argument)
    if command in ("sb", "single-bandwidth"):
        return _rate(policy, "single", argument)
    if command in ("tb", "total-bandwidth"):
        reply = _rate(policy, "total", argument)
        server.retune()
        return reply
    if command in ("u", "usage"):
        return server.usage()
    return ""


def console_factory(server):
    """The hbbr console on the shared one-read transport; a TCP console admits loopback only."""
    return ConsoleFactory(lambda text: run_command(server, text), server.clock,
                          loopback_only=True)
