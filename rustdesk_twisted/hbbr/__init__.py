"""hbbr: the RustDesk relay server (PROTOCOL.md sections 4.4 d3, 7.4, 7.5, 7.9, 9.3)."""
