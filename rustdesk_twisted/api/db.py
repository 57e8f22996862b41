"""Where the API's rows live: SQLite in the data directory, or PostgreSQL by ``API_DB_URL``.

Every statement runs in the API's own thread pool, never on the reactor
thread: :meth:`Database.run` hands a function of one SQLAlchemy connection to
the pool and returns a Deferred of its result, the whole function being one
transaction (committed before the Deferred fires, so an answer built on it is
on disk).  SQLite gets one thread, since it takes one writer at a time anyway;
PostgreSQL gets a few.

A database that stops working (a full disk, a read-only file, PostgreSQL
down) is the operator's problem, not a bug: the request gets a 503 with a JSON
error and the log one line when the failing starts and one when it ends.
"""

import os

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twisted.internet.defer import execute
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..config import ConfigError
from ..hbbs.dbfile import create_private, make_private, space_to_spare
from ..logs import Logger
from .http import MAX_PAGE_SIZE, ApiError

DEFAULT_FILE = "db_api.sqlite3"
POSTGRES_THREADS = 4
RECOVERY_HOLD = 5.0
# The database, not the statement, is at fault: disk full or read-only, locked too long,
# connection refused or lost, no connection free in the pool.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


class DatabaseUnavailable(ApiError):
    """What a request gets while the database fails: 503, try again later."""

    def __init__(self):
        super().__init__(503, "the database is unavailable, try again later")


def engine_url(api_db_url, data_dir):
    """The SQLAlchemy URL for an ``API_DB_URL`` value (empty: the file in ``data_dir``).

    ``postgresql://`` (the form operators know from libpq) is driven by psycopg 3;
    anything without a scheme is a SQLite file path."""
    text = (api_db_url or "").strip()
    if not text:
        text = os.path.join(data_dir, DEFAULT_FILE)
    if "://" not in text:
        return make_url("sqlite://").set(database=os.path.abspath(text))
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"API_DB_URL is not a database URL: {text!r}") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "sqlite":
        return url
    raise ConfigError(f"API_DB_URL must be a SQLite path or postgresql://…, got "
                      f"{url.drivername}://")


def describe(url):
    """The URL for a log line: the password hidden."""
    return url.render_as_string(hide_password=True)


def where(url):
    """The database as an operator knows it: the file, or the URL without its password."""
    return url.database if url.get_backend_name() == "sqlite" else describe(url)


def reason(error):
    """A database error in one line for an operator: the driver's message, no SQL, no traceback."""
    original = getattr(error, "orig", None) or error
    return " ".join(str(original).split()) or type(original).__name__


class Database:
    """An engine plus the pool of threads its statements run in.

    ``failure`` holds why statements fail (None while they work); ``errors``
    counts the failed transactions.  The failing state ends with a transaction
    that works ``RECOVERY_HOLD`` seconds after the last failure (and, for a
    SQLite file, with space to spare on its disk), so reads that still work on
    a full disk do not make it flap with every write.  ``reactor`` gives the time.
    """

    log = Logger()

    def __init__(self, url, reactor, threads=None, in_thread_pool=True):
        self.url = url
        self.in_thread_pool = in_thread_pool
        self.reactor = reactor
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self.threads = threads or (1 if self.is_sqlite else POSTGRES_THREADS)
        self.engine = None
        self.pool = None
        self.failure = None
        self.errors = 0
        self._failed_at = None

    def open(self):
        """Create the engine and start the threads (at service start; may block briefly);
        once only."""
        if self.engine is not None:
            return
        if self.is_sqlite:
            path = self.url.database
            create_private(path)
            self.engine = create_engine(self.url, connect_args={"check_same_thread": False},
                                        pool_size=self.threads, max_overflow=0)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            with self.engine.connect():
                pass
            make_private(path)
        else:
            self.engine = create_engine(self.url, pool_size=self.threads, max_overflow=0,
                                        pool_pre_ping=True)
        if self.in_thread_pool:
            self.pool = ThreadPool(minthreads=1, maxthreads=self.threads, name="rustdesk-api-db")
            self.pool.start()

    def run(self, work, *args, **kwargs):
        """Deferred of ``work(connection, *args, **kwargs)`` run in one committed transaction.

        Without a thread pool (``in_thread_pool=False``: the in-memory tests, whose
        Clock cannot wait for threads) the work runs at once."""
        if self.pool is None:
            d = execute(self.run_now, work, *args, **kwargs)
        else:
            d = deferToThreadPool(self.reactor, self.pool, self.run_now, work, *args, **kwargs)
        return d.addCallbacks(self._worked, self._failed)

    def run_now(self, work, *args, **kwargs):
        """The same, in the calling thread: for start-up, the admin CLI and migrations."""
        with self.engine.begin() as connection:
            return work(connection, *args, **kwargs)

    def _worked(self, result):
        if self.failure is not None:
            now = self.reactor.seconds()
            if now - self._failed_at >= RECOVERY_HOLD and (
                    not self.is_sqlite or space_to_spare(self.url.database)):
                self.log.info("API database {place} works again (failing for {seconds:.0f}s: "
                              "{reason})", place=self.place, seconds=now - self._failed_at,
                              reason=self.failure, event="api.db_recovered")
                self.failure = None
        return result

    def _failed(self, failure):
        failure.trap(*UNAVAILABLE)
        self.errors += 1
        self._failed_at = self.reactor.seconds()
        if self.failure is None:
            self.failure = reason(failure.value)
            self.log.error("API database {place} fails ({reason}); requests get 503 until it "
                           "works again", place=self.place, reason=self.failure,
                           event="api.db_failing")
        raise DatabaseUnavailable()

    @property
    def place(self):
        return where(self.url)

    def close(self):
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def page(connection, statement, current=1, page_size=100):
    """``{"total", "data"}`` of an ordered select: page ``current`` (1-based) of ``page_size``
    rows as dicts, the client's pagination (API.md 1.0); ``page_size`` at most 1000."""
    current = max(1, int(current))
    page_size = min(max(1, int(page_size)), MAX_PAGE_SIZE)
    total = connection.execute(
        select(func.count()).select_from(statement.order_by(None).subquery())).scalar()
    rows = connection.execute(statement.limit(page_size).offset((current - 1) * page_size))
    return {"total": total, "data": [dict(row._mapping) for row in rows]}
