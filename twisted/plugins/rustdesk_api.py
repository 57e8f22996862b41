from twisted.application.service import ServiceMaker

rustdesk_api = ServiceMaker(
    "rustdesk-api",
    "rustdesk_twisted.api.tap",
    "RustDesk API server (accounts, devices, address books, web console)",
    "rustdesk-api",
)
