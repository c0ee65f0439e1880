"""Leadership on one machine: whoever holds an exclusive lock on a file leads.

The kernel releases the lock when its holder dies, however it dies, so a waiting manager
takes over without a stale lease to expire; and two managers can never both hold it.
The leader writes who it is beside the lock, for ``infrakit manager status``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path

import msgspec

from infrakit.atomicfile import write_atomic
from infrakit.manager.leader_info import LeaderInfo
from infrakit.rpc.paths import make_private_dir
from infrakit.spi.errors import PluginError

log = logging.getLogger("infrakit.manager")

POLL = 0.1
"""Seconds between two tries of the lock: polled, not blocking, so signals still stop the
wait."""


class LockLeadership:
    """The lock file ``<directory>/leader.lock`` and the record ``leader.json`` beside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock_path = directory / "leader.lock"
        self.info_path = directory / "leader.json"
        self._fd: int | None = None

    def acquire(self, me: LeaderInfo, stop: threading.Event) -> bool:
        """Wait until this process leads (True) or ``stop`` is set (False). The lock is
        held by an open descriptor until the process ends, however it ends."""
        make_private_dir(self.directory, "manager directory")
        leader = self.leader()
        if leader is not None:
            log.info("waiting to lead: pid %d on %s leads", leader.pid, leader.host)
        try:  # never through a link: it would create or lock whatever it leads to
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PluginError(f"lock file {self.lock_path} is a symbolic link: refusing "
                                  "to use it; remove it") from None
            raise
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop.wait(POLL):
                    os.close(fd)
                    return False
        self._fd = fd
        write_atomic(self.info_path, msgspec.json.encode(me.now()))
        return True

    def fence(self) -> None:
        """Raise unless this process holds the lock on the file that is there now: a lock
        file removed under a leader lets another manager lock a new one."""
        fd = self._fd
        try:
            held = fd is not None and os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
        except OSError:
            held = False
        if not held:
            raise PluginError(f"not acting: this manager does not hold {self.lock_path}")

    def leader(self) -> LeaderInfo | None:
        """Who leads now, or None when nobody holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):  # none; or a link, refused to lead
                return None
            raise
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
