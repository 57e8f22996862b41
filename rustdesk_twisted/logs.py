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

from twisted.logger import ILogObserver, jsonFileLogObserver

FORMATS = ("text", "json")


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
