"""The group store across machines: etcd (v3), through an :class:`EtcdClient`.

Keys, under a prefix (default ``/infrakit/``)::

    spec/<group>        the committed spec (JSON, as committed)
    previous/<group>    the spec committed before it
    created/<group>     when the group was first committed (seconds since the epoch)
    paused/<group>      "1" while an operator has paused the rolling update
    destroying/<group>  "1" once the group is being destroyed: it never provisions again
    sequence/<group>    the last member sequence number handed out
    inflight/<key>      an in-flight record (JSON)
    eventseq/<group>    the number of the group's last event
    events/<group>/<n>  an event (JSON), ``n`` zero-padded so that keys sort by number
    usage/<day>/<group> a group's usage on a day (days since the epoch, zero-padded): the
                        seconds and the Instance block of each config, and the last write
                        of each writer, so that a retried write is added once; the day
                        comes first, so that one range delete drops every group's old days

Every change that must be atomic is one etcd transaction; a read-modify-write (the previous
spec, the sequence) compares the revision it read and retries if another writer came in
between. etcd caps the operations of one transaction (128 by default), so recording many
in-flight records takes one transaction per 100: each is durable before the controller
acts, and a crash between two leaves records that only delay, never duplicate. Events
go in one transaction per 100 too, each with the counter and with one range delete that
drops what is beyond the last 1,000. Usage is one transaction per day of a write (a write
spans one day, two across midnight), with the range delete of the days too old to keep.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import msgspec
import msgspec.structs

from infrakit.plugins.group.storage import InFlight, UsageBatch, UsageRow, day_of, usage_record
from infrakit.spi.errors import PluginError
from infrakit.spi.group import EVENTS_KEPT, USAGE_KEPT_DAYS, GroupEvent, UsageRecord
from infrakit.store.etcd_client import (
    TXN_OPS,
    EtcdClient,
    b64,
    delete,
    exists,
    prefix_end,
    put,
    unchanged,
)

_decode = msgspec.json.Decoder(InFlight).decode
_decode_event = msgspec.json.Decoder(GroupEvent).decode
log = logging.getLogger(__name__)
_SEQ_DIGITS = 12
_DAY_DIGITS = 6


class _Bucket(msgspec.Struct, rename="pascal"):
    """A group's usage on one day."""

    seconds: dict[str, float] = msgspec.field(default_factory=dict)
    instances: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict)
    writes: dict[str, int] = msgspec.field(default_factory=dict)
    """Each writer's last write added here."""


_decode_bucket = msgspec.json.Decoder(_Bucket).decode


class EtcdStore:
    """A :class:`~infrakit.plugins.group.storage.GroupStore` in etcd, shared by every manager. Its
    writes obey the fence of its ``client``."""

    def __init__(self, client: EtcdClient, prefix: str = "/infrakit/") -> None:
        self.client = client
        self.prefix = prefix

    def __str__(self) -> str:
        return f"etcd under {self.prefix}spec/"

    def close(self) -> None:
        self.client.close()

    def load_groups(self) -> dict[str, bytes]:
        return self.client.get_prefix(f"{self.prefix}spec/")

    def save_group(self, group: str, spec: bytes) -> None:
        key = f"{self.prefix}spec/{group}"
        while True:
            current, revision = self.client.get_value(key)
            success = [put(key, spec)]
            if current is None:
                success.append(put(f"{self.prefix}created/{group}", repr(time.time())))
            elif current != spec:
                success.append(put(f"{self.prefix}previous/{group}", current))
            if self.client.txn(success, [unchanged(key, revision)]):
                return

    def previous_spec(self, group: str) -> bytes | None:
        return self.client.get_value(f"{self.prefix}previous/{group}")[0]

    def created(self, group: str) -> float | None:
        raw = self.client.get_value(f"{self.prefix}created/{group}")[0]
        try:
            return float(raw) if raw is not None else None
        except ValueError:  # not written by this store: the age is unknown, nothing more
            return None

    def set_paused(self, group: str, paused: bool) -> None:
        self.client.txn([put(f"{self.prefix}paused/{group}", "1" if paused else "0")])

    def paused(self, group: str) -> bool:
        return self.client.get_value(f"{self.prefix}paused/{group}")[0] == b"1"

    def set_destroying(self, group: str) -> None:
        self.client.txn([put(f"{self.prefix}destroying/{group}", "1")])

    def destroying(self, group: str) -> bool:
        return self.client.get_value(f"{self.prefix}destroying/{group}")[0] == b"1"

    def delete_group(self, group: str) -> None:
        ops = [delete(f"{self.prefix}{part}/{group}")
               for part in ("spec", "previous", "created", "paused", "destroying", "sequence",
                            "eventseq")]
        ops.append(_delete_range(self._event_key(group, 0),
                                 self._event_key(group, 10 ** _SEQ_DIGITS - 1)))
        keys = [op.key for op in self.inflight(group)]
        self.client.txn(ops + [delete(self._inflight_key(k))
                               for k in keys[:TXN_OPS - len(ops)]])
        self.forget(*keys[TXN_OPS - len(ops):])

    def _inflight_key(self, key: str) -> str:
        return f"{self.prefix}inflight/{key}"

    def inflight(self, group: str) -> list[InFlight]:
        """The group's records. One that cannot be read names its key: which group it is of
        cannot be told, so every group acts on nothing until it is repaired or removed."""
        ops = []
        where = f"{self.prefix}inflight/"
        for key, raw in self.client.get_prefix(where).items():
            try:
                op = _decode(raw)
            except msgspec.DecodeError as exc:
                raise PluginError(f"group store in etcd: the in-flight record {key!r} under "
                                  f"{where} cannot be read: {exc}") from None
            if op.group == group:
                ops.append(op)
        return ops

    def record(self, *ops: InFlight) -> None:
        for start in range(0, len(ops), TXN_OPS):
            self.client.txn([put(self._inflight_key(op.key), msgspec.json.encode(op))
                             for op in ops[start:start + TXN_OPS]])

    def forget(self, *keys: str) -> None:
        for start in range(0, len(keys), TXN_OPS):
            self.client.txn([delete(self._inflight_key(k))
                             for k in keys[start:start + TXN_OPS]])

    def reserve_sequences(self, group: str, count: int) -> int:
        spec = f"{self.prefix}spec/{group}"
        key = f"{self.prefix}sequence/{group}"
        while True:
            if self.client.get_value(spec)[0] is None:
                return 0  # no group, no sequence
            current, revision = self.client.get_value(key)
            last = int(current or b"0")
            if self.client.txn([put(key, str(last + count))],
                               [unchanged(key, revision), exists(spec)]):
                return last + 1

    def _event_key(self, group: str, seq: int) -> str:
        return f"{self.prefix}events/{group}/{seq:0{_SEQ_DIGITS}d}"

    def append_events(self, group: str, events: list[GroupEvent]) -> None:
        for start in range(0, len(events), TXN_OPS - 2):
            self._append(group, events[start:start + TXN_OPS - 2])

    def _append(self, group: str, events: list[GroupEvent]) -> None:
        """One transaction: the events, the counter, and the trim of what is too old."""
        counter = f"{self.prefix}eventseq/{group}"
        while True:
            current, revision = self.client.get_value(counter)
            last = int(current or b"0")
            ops = [put(self._event_key(group, n), msgspec.json.encode(
                       msgspec.structs.replace(e, seq=n, group=group)))
                   for n, e in enumerate(events, last + 1)]
            last += len(events)
            ops.append(put(counter, str(last)))
            if last > EVENTS_KEPT:
                ops.append(_delete_range(self._event_key(group, 0),
                                         self._event_key(group, last - EVENTS_KEPT + 1)))
            if self.client.txn(ops, [unchanged(counter, revision)]):
                return

    def events(self, group: str, since: float | None = None, after: int | None = None,
               limit: int = 0) -> list[GroupEvent]:
        found = []
        where = f"{self.prefix}events/{group}/"
        for key, raw in sorted(self.client.get_prefix(where).items()):
            try:
                found.append(_decode_event(raw))
            except msgspec.DecodeError as exc:  # history: the others are still told
                log.error("group store in etcd: the event %s under %s cannot be read, left "
                          "out: %s", key, where, exc)
        found = [e for e in found if e.seq > (after or 0) and e.time >= (since or 0.0)]
        return found[-limit:] if limit > 0 else found

    def _usage_key(self, day: int, group: str = "") -> str:
        return f"{self.prefix}usage/{day:0{_DAY_DIGITS}d}/{group}"

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        too_old = day_of(time.time()) - USAGE_KEPT_DAYS
        days: dict[int, list[UsageRow]] = defaultdict(list)
        for row in batch.rows:
            if row.day >= too_old:  # etcd refuses to write a key it deletes in one go
                days[row.day].append(row)
        for day, rows in sorted(days.items()):
            self._add_day(self._usage_key(day, group), batch, rows,
                          self._usage_key(too_old))

    def _add_day(self, key: str, batch: UsageBatch, rows: list[UsageRow], old: str) -> None:
        """Read the day, add the rows unless this write was added before, and write it
        back if no other write came in between; drop the days before ``old``."""
        while True:
            raw, revision = self.client.get_value(key)
            try:
                bucket = _decode_bucket(raw) if raw else _Bucket()
            except msgspec.DecodeError as exc:  # written anew: the day's usage is lost
                log.error("group store in etcd: the usage %s cannot be read, so it starts "
                          "again from this write: %s", key, exc)
                bucket = _Bucket()
            if bucket.writes.get(batch.writer, 0) >= batch.seq:
                return  # a retry of a write that was applied
            for row in rows:
                bucket.seconds[row.config] = bucket.seconds.get(row.config, 0.0) + row.seconds
                if row.instance is not None:
                    bucket.instances[row.config] = msgspec.Raw(row.instance)
            bucket.writes[batch.writer] = batch.seq
            ops = [put(key, msgspec.json.encode(bucket)),
                   _delete_range(f"{self.prefix}usage/", old)]
            if self.client.txn(ops, [unchanged(key, revision)]):
                return

    def usage(self, group: str | None, since_day: int = 0) -> list[UsageRecord]:
        where = f"{self.prefix}usage/"
        return _summed(self.client.get_between(self._usage_key(max(since_day, 0)),
                                               prefix_end(where), where), group)


def _summed(buckets: dict[str, bytes], group: str | None) -> list[UsageRecord]:
    """Buckets (``<day>/<group>`` to value) summed by group and config."""
    sums: dict[tuple[str, str], list[Any]] = {}
    for key, raw in sorted(buckets.items()):
        day_text, _, gid = key.partition("/")
        if group is not None and gid != group:
            continue
        try:
            bucket, day = _decode_bucket(raw), int(day_text)
        except (msgspec.DecodeError, ValueError) as exc:  # the other days still count
            log.error("group store in etcd: the usage %s cannot be read, left out: %s", key, exc)
            continue
        for config, seconds in bucket.seconds.items():
            entry = sums.setdefault((gid, config), [0.0, day, day, None])
            entry[0] += seconds
            entry[2] = day
            instance = bucket.instances.get(config)
            entry[3] = bytes(instance) if instance is not None else entry[3]
    return [usage_record(gid, config, *entry) for (gid, config), entry in sorted(sums.items())]


def _delete_range(start: str, end: str) -> dict[str, Any]:
    """Delete every key from ``start`` up to, not including, ``end``: one operation."""
    return {"request_delete_range": {"key": b64(start), "range_end": b64(end)}}
