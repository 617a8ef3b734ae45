"""One process at a time writes a project folder: `FolderLock` (an OS lock on `.dermaseg/serve.lock`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from dermaseg.core.annotation.project.database import DB_DIR
from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.errors import StoreError

LOCK_NAME = "serve.lock"


@dataclass(frozen=True)
class LockHolder:
    """The process that holds a project folder: its pid, host, start time (UTC) and command."""

    pid: int | None
    host: str
    started_utc: str
    command: str

    def describe(self) -> str:
        return f"{self.command!r} (pid {self.pid} on {self.host}, since {self.started_utc})"


class FolderLock:
    """One dermaseg process at a time writes a project folder: an OS lock (`flock`) on `.dermaseg/serve.lock`.

    The file holds the holder's pid, host, start time and command, so a refused process can name it. The
    operating system releases the lock when the holder exits, however it ends (even `kill -9`), so a lock
    is never stale. Where `fcntl` does not exist (Windows), nothing is locked.
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.path = Path(folder).expanduser().resolve() / DB_DIR / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise StoreError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        try:
            self.path.parent.mkdir(exist_ok=True)  # the project folder itself must exist
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the project lock ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            who = holder.describe() if holder else "another dermaseg process"
            raise StoreError(
                f"{self.path.parent.parent}: this project is already open in {who}; one project folder is "
                "served by one dermaseg at a time: use that one's page, or stop it first"
            ) from None
        me = LockHolder(os.getpid(), _hostname(), utc_now(), self.command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> LockHolder | None:
        try:
            d = json.loads(os.pread(fd, 4096, 0) or b"null")
            return LockHolder(int(d["pid"]), str(d["host"]), str(d["started_utc"]), str(d["command"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _hostname() -> str:
    import socket

    return socket.gethostname()
