"""What every way of electing one manager offers: a lock file on one machine
(:mod:`infrakit.manager.lock_leader`), a lease in etcd across machines
(:mod:`infrakit.manager.etcd_leader`)."""

from __future__ import annotations

import threading
from typing import Protocol

from infrakit.manager.leader_info import LeaderInfo


class Leadership(Protocol):
    def leader(self) -> LeaderInfo | None:
        """Who leads now, or None when nobody does."""
        ...

    def acquire(self, me: LeaderInfo, stop: threading.Event) -> bool:
        """Wait until this manager leads, recording ``me`` as the leader (True), or until
        ``stop`` is set (False)."""
        ...

    def fence(self) -> None:
        """Raise unless this manager still leads: awaited before every action that changes
        a provider, so that a manager that lost its term acts on nothing."""
        ...
