"""Whether a file may become hbbs's database, decided before anything is written to it.

Opening ``db_v2.sqlite3`` read-write switches it to WAL and creates tables:
done to the wrong file (another application's database, a damaged one, a
file of random bytes) it changes data that is not ours.  So the file is
first examined read-only: it must be absent or empty, or an SQLite database
whose ``peer`` table has the official columns (PROTOCOL.md section 8), and it
must pass SQLite's ``quick_check``.  Anything else is refused with one
sentence naming the file and the problem, and the file is left as it was.
Files we create or accept are made private (0600) whatever the umask.
"""

import os
import sqlite3
import stat

# (name, declared type, not null, primary key position) as ``pragma table_info`` reports them.
OFFICIAL_PEER_COLUMNS = (
    ("guid", "blob", 1, 1),
    ("id", "varchar(100)", 1, 0),
    ("uuid", "blob", 1, 0),
    ("pk", "blob", 1, 0),
    ("created_at", "datetime", 1, 0),
    ("user", "blob", 0, 0),
    ("status", "tinyint", 0, 0),
    ("note", "varchar(300)", 0, 0),
    ("info", "text", 1, 0),
)
LAST_SEEN_COLUMNS = (("guid", "blob", 1, 1), ("last_seen", "integer", 1, 0))
SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm")
MIN_FREE_BYTES = 16 << 20
MIN_FREE_FRACTION = 0.1

NEW, OFFICIAL, OURS = "new", "official", "ours"


class DatabaseRefused(Exception):
    """The database file cannot be used; the message names it and says why, in one sentence."""


def examine(path):
    """``NEW``, ``OFFICIAL`` (no table of ours yet) or ``OURS``; raises DatabaseRefused."""
    conn = open_read_only(path)
    if conn is None:
        return NEW
    try:
        return _classify(conn, path)
    except sqlite3.DatabaseError as e:
        raise DatabaseRefused(f"{path} is not a usable SQLite database ({e}); restore it from a "
                              "backup or move it away") from None
    finally:
        conn.close()


def open_read_only(path, setting="DB_URL"):
    """A read-only sqlite3 connection to ``path``, or None when it is absent or empty.

    A database without a pending WAL is opened ``immutable`` (no side files at
    all), one with a WAL read-only, which never checkpoints.  A file that is
    not an SQLite database raises DatabaseRefused naming ``setting``, the
    option that would point the server elsewhere.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DatabaseRefused(f"cannot examine the database {path}: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DatabaseRefused(f"the database {path} is not a regular file")
    if info.st_size == 0:
        return None
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise DatabaseRefused(f"cannot read the database {path}: {e.strerror}") from None
    if header != SQLITE_HEADER:
        raise DatabaseRefused(f"{path} is not an SQLite database (it may belong to another "
                              f"program, or be damaged); move it away or set {setting}")
    wal = path + "-wal"
    pending_wal = os.path.exists(wal) and os.path.getsize(wal) > 0
    try:
        return sqlite3.connect(read_only_uri(path, immutable=not pending_wal), uri=True)
    except sqlite3.Error as e:
        raise DatabaseRefused(f"cannot open the database {path}: {e}") from None


def read_only_uri(path, immutable=False):
    """An SQLite URI opening ``path`` read-only (``immutable``: not even side files)."""
    quoted = os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def _classify(conn, path):
    tables = {name for (name,) in conn.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")}
    if not tables:
        return NEW
    if "peer" not in tables:
        names = ", ".join(sorted(tables)[:5])
        raise DatabaseRefused(f"{path} holds no RustDesk peer table (it has {names}): it belongs "
                              "to another application; point DB_URL elsewhere")
    problem = _columns_problem(conn, "peer", OFFICIAL_PEER_COLUMNS)
    if problem is None and not _without_rowid(conn, "peer"):
        problem = "it is not declared WITHOUT ROWID"
    if problem is not None:
        raise DatabaseRefused(f"{path} has a peer table that is not RustDesk's ({problem}): it "
                              "belongs to another application; point DB_URL elsewhere")
    kind = OFFICIAL
    if "peer_last_seen" in tables:
        problem = _columns_problem(conn, "peer_last_seen", LAST_SEEN_COLUMNS, extra=False)
        if problem is not None:
            raise DatabaseRefused(f"{path} has a peer_last_seen table that is not ours "
                                  f"({problem}); point DB_URL elsewhere")
        kind = OURS
    (check,) = conn.execute("pragma quick_check(1)").fetchone()
    check = " ".join(check.replace("*** in database main ***", "").split())
    if check != "ok":
        raise DatabaseRefused(f"{path} is damaged (SQLite quick_check: {check}); restore it from "
                              "a backup (rustdesk-admin restore)")
    return kind


def _columns_problem(conn, table, expected, extra=True):
    """Why ``table``'s columns differ from ``expected``, or None.

    Extra columns (another server's additions) are fine when nullable or
    defaulted, because our inserts do not name them.
    """
    columns = {row[1]: row for row in conn.execute(f"pragma table_info({table})")}
    for name, declared, notnull, pk in expected:
        row = columns.pop(name, None)
        if row is None:
            return f"no column {name}"
        if (row[2].lower(), row[3], row[5]) != (declared, notnull, pk):
            return f"column {name} is {row[2]!r}"
    for name, row in columns.items():
        if not extra:
            return f"unexpected column {name}"
        if row[3] and row[4] is None:
            return f"extra column {name} is NOT NULL without a default"
    return None


def _without_rowid(conn, table):
    (sql,) = conn.execute("select sql from sqlite_master where type = 'table' and name = ?",
                          (table,)).fetchone()
    return "without rowid" in " ".join(sql.lower().split())


def check_writable(path):
    """Refuse a database (or its directory) that we could open but never write."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseRefused(f"the database {path} is read-only; the server must be able to "
                              "write it (check its owner and mode, and that the disk is mounted "
                              "read-write)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseRefused(f"the data directory {directory} is read-only; SQLite must create "
                              f"{os.path.basename(path)}-wal beside the database there")


def create_private(path):
    """Create an empty database file, mode 0600 whatever the umask; an existing one is kept."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise DatabaseRefused(f"cannot create the database {path}: {e.strerror}") from None
    os.close(fd)


def make_private(path):
    """Mode 0600 for the database and its WAL files (SQLite gives new ones the database's mode)."""
    for name in (path,) + tuple(path + suffix for suffix in SIDE_FILES):
        try:
            if stat.S_IMODE(os.stat(name).st_mode) != 0o600:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DatabaseRefused(f"cannot make {name} private (mode 0600): {e.strerror}") from None


def space_to_spare(path):
    """Whether the disk of ``path`` has room for more than a WAL's slack: 16 MiB, or a tenth
    of a small disk; a commit that worked on a nearly full disk is no recovery yet."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return True
    free = fs.f_bavail * fs.f_frsize
    return free >= min(MIN_FREE_BYTES, MIN_FREE_FRACTION * fs.f_blocks * fs.f_frsize)
