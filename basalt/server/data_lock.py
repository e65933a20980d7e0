"""The data folder's lock: which process may use a data folder.

A SQLite deployment lives in its data folder, and only the server that holds
the database sees its commits (subscriptions are woken in that process). A
second server, or a ``basalt run`` / ``export`` / ``import`` that worked in
process beside the server, would write around it: its subscribers would never
see those writes. So every process that uses a data folder first takes an
advisory lock on ``<data>/basalt.lock`` (``flock``), holds it for as long as it
uses the folder, and the operating system drops it when the process ends in any
way, ``kill -9`` included (the file stays; only the lock matters).

- A server on SQLite, and ``basalt run`` / ``export`` / ``import`` in process,
  take it **exclusively**: one of them at a time.
- Servers on PostgreSQL take it **shared**: several of them may share one data
  folder (and its admin key and local blobs), as they share the database; its
  commits reach every server through the database. A SQLite server, or an
  export or import, is refused while they run.

Each holder writes a line with its pid and command into the file (a shared
holder keeps the lines of the others that still live), so that a refused
process can say who holds the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from basalt.errors import BasaltError

__all__ = ["LOCK_FILE", "DataFolderBusy", "DataFolderLock"]

LOCK_FILE = "basalt.lock"


class DataFolderBusy(BasaltError):
    """Another process holds the data folder's lock."""

    code = "DataFolderBusy"

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(f"the data folder {data_dir} is in use by {holder}")
        self.data_dir = data_dir
        self.holder = holder


class DataFolderLock:
    """A held lock on a data folder; :meth:`release` (or leaving ``with``) gives it back."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, command: str, *, shared: bool = False) -> DataFolderLock:
        """Take the lock of ``data_dir`` (made if missing) for ``command`` (e.g.
        ``"basalt serve"``), or raise :class:`DataFolderBusy` naming its holder.
        Never waits."""
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as all of it
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataFolderBusy(data_dir, describe_holder(data_dir)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            others = [h for h in _live_holders(path) if h.pid != os.getpid()] if shared else []
            text = "".join(h.line() for h in [*others, Holder(os.getpid(), command)])
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        except OSError:
            pass  # only a refused process's message would miss it
        return cls(data_dir, fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the lock

    def __enter__(self) -> DataFolderLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


class Holder(NamedTuple):
    """A process that holds (or held) the lock, as its line in the file says."""

    pid: int
    command: str

    def line(self) -> str:
        return json.dumps({"pid": self.pid, "command": self.command}) + "\n"


def _live_holders(path: Path) -> list[Holder]:
    """The holders the lock file names whose processes still run."""
    holders = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            info = json.loads(line)
            holder = Holder(int(info["pid"]), str(info["command"]))
        except (ValueError, KeyError, TypeError):
            continue
        if _alive(holder.pid):
            holders.append(holder)
    return holders


def describe_holder(data_dir: Path) -> str:
    """Who holds the lock, as far as its file and the server marker tell:
    ``basalt serve (pid 123, http://127.0.0.1:3210)``."""
    from .config import running_server

    pid: int | None = None
    command = "another Basalt process"
    holders = _live_holders(data_dir / LOCK_FILE)
    servers = [h for h in holders if h.command in ("basalt serve", "basalt dev")]
    if servers or holders:
        pid, command = (servers or holders)[0]
    details = [] if pid is None else [f"pid {pid}"]
    server = running_server(data_dir)
    if server is not None and (pid is None or server.pid == pid):
        if pid is None:
            details.append(f"pid {server.pid}")
        details.append(server.url)
    return command + (f" ({', '.join(details)})" if details else "")
