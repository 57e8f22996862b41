"""hbbs: the RustDesk ID/rendezvous server."""
