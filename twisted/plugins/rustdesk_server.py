from twisted.application.service import ServiceMaker

rustdesk_server = ServiceMaker(
    "rustdesk-server",
    "rustdesk_twisted.combined_tap",
    "RustDesk ID server (hbbs) and relay (hbbr) in one process, sharing one key",
    "rustdesk-server",
)
