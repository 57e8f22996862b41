"""Startup errors under twistd: one line naming the problem and exit status 1, not a traceback.

Wrong keys, unreadable configuration and ports in use are the operator's to
fix; they deserve a sentence, not a stack (USERS.md section 1.23).
"""

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError

from . import logs
from .config import ConfigError
from .hbbs.dbfile import DatabaseRefused
from .wire.keys import KeyFileError

STARTUP_ERRORS = (ConfigError, KeyFileError, DatabaseRefused, OSError, CannotListenError)


def exit_on_startup_error(name, start):
    """Call ``start()``; an operator-fixable error becomes ``SystemExit("name: why")``."""
    try:
        return start()
    except STARTUP_ERRORS as e:
        raise SystemExit(f"{name}: {e}")


class ExitOnStartupError(MultiService):
    """The twistd plugins' top service: starts ``inner`` with :func:`exit_on_startup_error`.

    ``log_format`` ("text" or "json") is applied to the twistd application it joins.
    """

    def __init__(self, name, inner, log_format=None):
        super().__init__()
        self.name_for_errors = name
        self.log_format = log_format
        self.inner = inner
        inner.setServiceParent(self)

    def setServiceParent(self, parent):
        if self.log_format is not None:
            logs.use_format(parent, self.log_format)
        super().setServiceParent(parent)

    def startService(self):
        exit_on_startup_error(self.name_for_errors, super().startService)
