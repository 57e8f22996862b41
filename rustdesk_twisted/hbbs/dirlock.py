"""One hbbs per data directory.

Two hbbs on one directory would share ``db_v2.sqlite3`` and ``id_ed25519``
while each keeps its own peer table in memory: registrations answered by one
are overwritten by the other.  A lock on ``hbbs.lock`` in the directory (an
advisory ``flock``, released by the kernel when the process dies, so a crash
leaves nothing to clean up) makes the second one refuse with one sentence
naming the first one's pid.
"""

import fcntl
import os

from ..config import ConfigError

LOCK_FILE = "hbbs.lock"


class DataDirectoryLock:
    """Holds the lock on ``directory`` from :meth:`acquire` to :meth:`release`."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self._fd = None

    def acquire(self):
        """Take the lock and write our pid, or raise ConfigError naming the holder."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot lock the data directory {self.directory}: "
                              f"{e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"another hbbs (pid {holder}) uses {self.directory}") from None
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"cannot lock the data directory {self.directory}: "
                              f"{e.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only for the message; the lock is what matters
        self._fd = fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
