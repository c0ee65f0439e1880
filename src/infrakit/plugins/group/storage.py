"""What the group controller needs to keep across restarts, whatever keeps it: the
protocol the stores implement (SQLite on one machine, :mod:`infrakit.store.sqlite`; etcd
across machines, :mod:`infrakit.store.etcd`), declared here beside its one user so that
the group code depends on no store.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from infrakit.spi.group import GroupEvent


class InFlight(msgspec.Struct, kw_only=True):
    """An operation that was recorded before it was started, so that a crash or a restart
    can never forget it: a provision counts toward the group's size until its instance is
    described or its deadline passes; a destroy keeps its instance out of every count."""

    key: str
    group: str
    op: Literal["provision", "destroy"]
    instance: str | None = None
    """The instance ID: known for a destroy; for a provision, once Provision has answered."""
    logical_id: str | None = None
    started: float
    deadline: float


class GroupStore(Protocol):
    def load_groups(self) -> dict[str, bytes]:
        """Every committed group: ID to the spec as committed (JSON)."""
        ...

    def save_group(self, group: str, spec: bytes) -> None:
        """Store a committed spec; a different spec stored before becomes the previous one."""
        ...

    def previous_spec(self, group: str) -> bytes | None:
        """The spec committed before the current one, to roll back to."""
        ...

    def set_paused(self, group: str, paused: bool) -> None:
        """Pause or resume the group's rolling update, durably."""
        ...

    def paused(self, group: str) -> bool: ...

    def set_destroying(self, group: str) -> None:
        """Mark the group as being destroyed, durably: it never provisions again, even
        after a restart, until :meth:`delete_group`."""
        ...

    def destroying(self, group: str) -> bool: ...

    def delete_group(self, group: str) -> None:
        """Forget a group, its in-flight records and its events."""
        ...

    def inflight(self, group: str) -> list[InFlight]:
        """The group's in-flight records; read on every pass, so it should be cheap. The
        records may be shared with the store: the caller must not change them."""
        ...

    def record(self, *ops: InFlight) -> None:
        """Insert or replace in-flight records (by key), durably and all at once, before
        acting on them."""
        ...

    def forget(self, *keys: str) -> None: ...

    def reserve_sequences(self, group: str, count: int) -> int:
        """The first of ``count`` numbers for the next members of ``group``, never given
        out twice."""
        ...

    def append_events(self, group: str, events: list[GroupEvent]) -> None:
        """Add ``events`` to the group's history, numbered in order after the last, all at
        once; only the last :data:`~infrakit.spi.group.EVENTS_KEPT` are kept."""
        ...

    def events(self, group: str, since: float | None = None, after: int | None = None,
               limit: int = 0) -> list[GroupEvent]:
        """The group's events, oldest first: those at or after ``since`` and numbered after
        ``after``; with ``limit``, only the newest ``limit`` of them."""
        ...
