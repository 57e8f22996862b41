"""hbbs and hbbr in one process: ``twistd -ny tap-configs/rustdesk.tac``.

Edit the arguments below as you would pass them to ``twistd rustdesk-server``.
"""

from twisted.application.service import Application

from rustdesk_twisted.combined_tap import Options, makeService

options = Options()
options.parseOptions(["--data-dir", ".", "--announced-only"])

application = Application("rustdesk-server")
makeService(options).setServiceParent(application)
