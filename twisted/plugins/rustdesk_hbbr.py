from twisted.application.service import ServiceMaker

rustdesk_hbbr = ServiceMaker(
    "rustdesk-hbbr",
    "rustdesk_twisted.hbbr.tap",
    "RustDesk relay server (hbbr)",
    "rustdesk-hbbr",
)
