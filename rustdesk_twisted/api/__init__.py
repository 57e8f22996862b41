"""The HTTP API RustDesk clients call on port 21114 (API.md), and its web console.

``db`` and ``tables`` hold the rows, ``http`` the HTTP conventions, one module
per capability (``accounts``, ...) its logic and routes, ``app`` joins them and
``tap`` is ``twistd rustdesk-api``.
"""
