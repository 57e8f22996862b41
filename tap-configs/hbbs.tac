"""hbbs embedded in another Twisted application: ``twistd -ny tap-configs/hbbs.tac``.

The rendezvous server is an ordinary service; put it beside your own.
"""

from twisted.application import service
from twisted.internet import reactor

from rustdesk_twisted.config import Settings
from rustdesk_twisted.hbbs.tap import HbbsConfig, HbbsService

settings = Settings(layers=[("hbbs.tac", {
    "PORT": "21116",
    "DATA-DIR": ".",
    "RELAY-SERVERS": "",
})])

application = service.Application("my-app-with-hbbs")
HbbsService(HbbsConfig(settings), reactor).setServiceParent(application)
