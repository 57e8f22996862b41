"""What the three twistd plugins' option parsers share.

``--version`` prints this project's version (``twistd --version`` prints
Twisted's).  In the foreground (``-n``) no ``twistd.pid`` is written unless
``--pidfile`` names one: the README runs hbbs and hbbr as two processes in one
directory, and the default file made the second say "Another twistd server is
running".  A daemon keeps the default, since its pid file is how it is stopped.
"""

import sys

from twisted.python import usage

from . import __version__

TWISTD_DEFAULT_PIDFILE = "twistd.pid"


class PluginOptions(usage.Options):
    def opt_version(self):
        """Print the rustdesk-twisted version and exit."""
        print(f"rustdesk-twisted {__version__}")
        sys.exit(0)

    def parseOptions(self, options=None):
        super().parseOptions(options)
        twistd = getattr(self, "parent", None)
        if (twistd is not None and twistd.get("nodaemon")
                and twistd.get("pidfile") == TWISTD_DEFAULT_PIDFILE):
            twistd["pidfile"] = ""
