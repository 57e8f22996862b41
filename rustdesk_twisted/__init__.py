"""rustdesk-twisted: RustDesk's hbbs (rendezvous) and hbbr (relay) servers on Twisted."""

__version__ = "0.1.0"
