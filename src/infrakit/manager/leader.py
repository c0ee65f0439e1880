"""Leadership on one machine: whoever holds an exclusive lock on a file leads.

The kernel releases the lock when its holder dies, however it dies, so a waiting manager
takes over without a stale lease to expire; and two managers can never both hold it.
The leader writes who it is beside the lock, for ``infrakit manager status``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

import msgspec

from infrakit.atomicfile import write_atomic
from infrakit.spi.types import Wire

log = logging.getLogger("infrakit.manager")


class LeaderInfo(Wire, kw_only=True):
    pid: int = msgspec.field(name="PID")
    host: str
    since: float
    store: str
    address: str = ""
    """The socket the leader serves on, where followers on its machine forward calls."""
    url: str = msgspec.field(default="", name="URL")
    """The leader's TCP listener, if it has one: where followers elsewhere forward calls."""

    @classmethod
    def me(cls, store: str, address: str = "", url: str = "") -> LeaderInfo:
        """This process, leading from now on."""
        return cls(pid=os.getpid(), host=socket.gethostname(), since=time.time(), store=store,
                   address=address, url=url)

    def now(self) -> LeaderInfo:
        """The same, leading from this moment."""
        import msgspec.structs

        return msgspec.structs.replace(self, since=time.time())

    def is_me(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()


class LockLeadership:
    """The lock file ``<directory>/leader.lock`` and the record ``leader.json`` beside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock_path = directory / "leader.lock"
        self.info_path = directory / "leader.json"
        self._fd: int | None = None

    def acquire(self, me: LeaderInfo, poll: float = 0.1) -> LeaderInfo:
        """Wait until this process leads; returns what it recorded about itself. The lock
        is held by an open descriptor until the process ends, however it ends."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        leader = self.leader()
        if leader is not None:
            log.info("waiting to lead: pid %d on %s leads", leader.pid, leader.host)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(poll)  # polled, not blocking: signals still stop the wait
        self._fd = fd
        info = me.now()
        write_atomic(self.info_path, msgspec.json.encode(info))
        return info

    def leader(self) -> LeaderInfo | None:
        """Who leads now, or None when nobody holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: someone leads
        else:
            return None
        finally:
            os.close(fd)
        try:
            return msgspec.json.decode(self.info_path.read_bytes(), type=LeaderInfo)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
