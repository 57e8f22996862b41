"""hbbr embedded in a twisted Application: ``twistd -ny tap-configs/hbbr.tac``.

Edit the arguments below as you would pass them to ``twistd rustdesk-hbbr``.
"""

from twisted.application.service import Application

from rustdesk_twisted.hbbr.tap import Options, makeService

options = Options()
options.parseOptions(["--console", "unix:hbbr-console.sock"])

application = Application("rustdesk-hbbr")
makeService(options).setServiceParent(application)
