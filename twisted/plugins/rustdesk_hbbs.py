from twisted.application.service import ServiceMaker

rustdesk_hbbs = ServiceMaker(
    "rustdesk-hbbs",
    "rustdesk_twisted.hbbs.tap",
    "RustDesk ID/rendezvous server (hbbs)",
    "rustdesk-hbbs",
)
