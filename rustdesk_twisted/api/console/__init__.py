"""The administrators' web console, on the API's own port at ``/``.

Server-rendered HTML (jinja2 templates shipped in this package, autoescaped)
and one stylesheet; no JavaScript.  :mod:`.core` holds sign-in, sessions and
the checks every page passes; each area of the console is a module of pages.
"""

from .audit import AuditPages
from .books import BookPages
from .core import ConsoleCore, ConsoleOptions
from .devices import DevicePages
from .groups import GroupPages
from .settings import SettingsPages
from .strategies import StrategyPages
from .users import UserPages

__all__ = ["Console", "ConsoleOptions"]


class Console(ConsoleCore):
    parts = (UserPages, GroupPages, DevicePages, BookPages, AuditPages, StrategyPages,
             SettingsPages)
