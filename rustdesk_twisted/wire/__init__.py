"""Wire code shared by hbbs, hbbr and the client: framing, AddrMangle, keys, secure_tcp, protobuf."""
