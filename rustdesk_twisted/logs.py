"""Log output: twistd's human-readable lines by default, JSON lines behind a flag.

Every event operators act on carries a stable ``event`` field (``banner``,
``peer_added``, ``peer_updated``, ``id_changed``, ``punch_forwarded``,
``punch_refused``, ``relay_forwarded``, ``rate_limited``, ...; from hbbr
``paired``, ``closed`` with bytes and duration, ``refused``),
so a JSON consumer filters on a field instead of a message text.

Two ways to get JSON:

* ``twistd --logger=rustdesk_twisted.logs.json_observer -n rustdesk-hbbs``
* ``--log-format json`` on the plugin, which sets the observer on the
  application twistd creates (``twistd --logger`` still wins).
"""

import sys

from twisted.logger import ILogObserver, LogLevel, jsonFileLogObserver
from twisted.logger import Logger as _TwistedLogger

FORMATS = ("text", "json")
LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error, "critical": LogLevel.critical}
_PRIORITY = {level: rank for rank, level in enumerate(LEVELS.values())}
_minimum = [_PRIORITY[LogLevel.info]]


def check_level(name):
    """The validated ``--log-level`` value; ValueError for an unknown one."""
    value = (name or "info").strip().lower()
    if value not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {name!r}")
    return value


def set_level(name):
    """Drop, process-wide, the events of our loggers below level ``name``."""
    _minimum[0] = _PRIORITY[LEVELS[check_level(name)]]


class Logger(_TwistedLogger):
    """A ``twisted.logger.Logger`` that drops events below the process-wide level.

    twistd writes every level it is given, debug included, so without this a
    routine event logged at debug in a flood would still cost a formatted line
    of I/O each.  The check comes before any formatting or publishing.
    """

    def __set_name__(self, owner, name):
        self._attribute = name

    def __get__(self, instance, owner=None):
        """The logger bound to ``instance``, kept in the instance's ``__dict__`` under this
        attribute's name, so later lookups find it there: Twisted builds a new Logger on
        every access, which costs more than the event on a hot path."""
        bound = super().__get__(instance, owner)
        name = getattr(self, "_attribute", None)
        if instance is not None and name is not None and hasattr(instance, "__dict__"):
            instance.__dict__[name] = bound
        return bound

    def emit(self, level, format=None, **kwargs):
        if _PRIORITY.get(level, 0) >= _minimum[0]:
            super().emit(level, format, **kwargs)

    def debug(self, format=None, **kwargs):
        if _minimum[0] == 0:
            super().emit(LogLevel.debug, format, **kwargs)


def json_observer(stream=None):
    """One JSON object per line on stdout (``twistd --logger`` takes this callable)."""
    return jsonFileLogObserver(stream if stream is not None else sys.stdout, recordSeparator="")


def check_format(name):
    """The validated ``--log-format`` value; ValueError for an unknown one."""
    value = (name or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {name!r}")
    return value


def use_format(application, log_format):
    """Make twistd log ``application`` in ``log_format`` (it asks the application for an observer)."""
    if log_format == "json" and hasattr(application, "setComponent"):
        application.setComponent(ILogObserver, json_observer())
