"""What the group controller needs to keep across restarts, whatever keeps it: the
protocol the stores implement (SQLite on one machine, :mod:`infrakit.store.sqlite`; etcd
across machines, :mod:`infrakit.store.etcd`), declared here beside its one user so that
the group code depends on no store.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, Protocol

import msgspec

from infrakit.spi.group import GroupEvent, UsageRecord


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


DAY = 86400.0


def day_of(t: float) -> int:
    """The UTC day holding ``t`` (seconds since the epoch), as days since the epoch."""
    return int(t // DAY)


def day_name(day: int) -> str:
    """``2026-11-29`` for a day since the epoch."""
    import datetime

    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).isoformat()


class UsageRow(msgspec.Struct, kw_only=True):
    """Member-seconds of one config of a group on one day, to add to what is stored."""

    day: int
    """Days since the epoch (UTC)."""
    config: str
    seconds: float
    instance: bytes | None = None
    """The config's Instance block (``{"Plugin": ..., "Properties": ...}``, JSON), when
    the controller knows it: what a price table matches."""


class _Instance(msgspec.Struct, rename="pascal"):
    plugin: str = ""
    properties: Any = None


_decode_instance = msgspec.json.Decoder(_Instance).decode


def usage_record(group: str, config: str, seconds: float, first: int, last: int,
                 instance: bytes | None) -> UsageRecord:
    """A stored sum as the wire gives it; an Instance block that cannot be read leaves
    the plugin unknown (the usage itself still counts)."""
    block = _Instance()
    if instance is not None:
        with contextlib.suppress(msgspec.DecodeError):
            block = _decode_instance(instance)
    return UsageRecord(group=group, config=config, plugin=block.plugin,
                       properties=block.properties, seconds=seconds, first=day_name(first),
                       last=day_name(last))


class UsageBatch(msgspec.Struct, kw_only=True):
    """One write of a group's usage. ``writer`` (one per controller's life) and ``seq``
    (its writes, from 1) name it, so that a store whose write may have been applied
    although it answered an error (etcd, when a member dies under the call) tells a
    retry of it from a new write, and adds it once."""

    writer: str
    seq: int
    rows: list[UsageRow]


class GroupStore(Protocol):
    def load_groups(self) -> dict[str, bytes]:
        """Every committed group: ID to the spec as committed (JSON)."""
        ...

    def save_group(self, group: str, spec: bytes) -> None:
        """Store a committed spec; a different spec stored before becomes the previous one."""
        ...

    def created(self, group: str) -> float | None:
        """When the group was first committed (seconds since the epoch): kept from its
        first :meth:`save_group` until :meth:`delete_group`; None when not known."""
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
        """Forget a group, its in-flight records and its events (not its usage)."""
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

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        """Add ``batch`` to the group's usage, all at once, once however often it is
        retried; drop the days older than :data:`~infrakit.spi.group.USAGE_KEPT_DAYS`,
        every group's. Usage outlives its group: :meth:`delete_group` keeps it."""
        ...

    def usage(self, group: str | None, since_day: int = 0) -> list[UsageRecord]:
        """The usage of ``group`` (every group's when None) on the days from ``since_day``
        (days since the epoch), summed by group and config, in that order."""
        ...
