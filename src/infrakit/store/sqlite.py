"""The group store on one machine: SQLite in WAL mode, one file under INFRAKIT_HOME."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import msgspec.structs

from infrakit.plugins.group.storage import InFlight, UsageBatch, day_of, usage_record
from infrakit.rpc.paths import PluginPathError, make_private_dir
from infrakit.spi.errors import PluginError
from infrakit.spi.group import EVENTS_KEPT, USAGE_KEPT_DAYS, GroupEvent, UsageRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    previous BLOB,
    paused INTEGER NOT NULL DEFAULT 0,
    destroying INTEGER NOT NULL DEFAULT 0,
    sequence INTEGER NOT NULL DEFAULT 0,
    created REAL
);
CREATE TABLE IF NOT EXISTS inflight (
    key TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inflight_grp ON inflight (grp);
CREATE TABLE IF NOT EXISTS events (
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (grp, seq)
);
CREATE TABLE IF NOT EXISTS usage (
    grp TEXT NOT NULL,
    day INTEGER NOT NULL,
    config TEXT NOT NULL,
    seconds REAL NOT NULL,
    instance BLOB,
    PRIMARY KEY (grp, day, config)
);
CREATE INDEX IF NOT EXISTS usage_day ON usage (day);
CREATE TABLE IF NOT EXISTS usage_writes (
    writer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    day INTEGER NOT NULL
);
"""

_decode = msgspec.json.Decoder(InFlight).decode
_decode_event = msgspec.json.Decoder(GroupEvent).decode
log = logging.getLogger(__name__)


class SQLiteStore:
    """A :class:`~infrakit.plugins.group.storage.GroupStore` in one SQLite file.

    WAL mode with ``synchronous=FULL``, so that a committed write survives ``kill -9`` and a
    power cut, and a busy timeout, so that a second reader waits instead of failing.
    """

    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        self.path = path
        try:  # whoever may write there could swap the database under it
            make_private_dir(path.parent, "group store directory")
        except PluginPathError as exc:
            raise PluginError(str(exc)) from None
        with self._named():
            self._db = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False,
                                       isolation_level=None)
        self._lock = threading.Lock()
        with self._lock, self._named():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(groups)")}
            if "destroying" not in columns:  # a store made before groups could be
                self._db.execute("ALTER TABLE groups ADD COLUMN destroying INTEGER NOT NULL "
                                 "DEFAULT 0")
            if "created" not in columns:  # its groups' first commits were not kept
                self._db.execute("ALTER TABLE groups ADD COLUMN created REAL")
        self._mirror: dict[str, dict[str, InFlight]] = {}
        """The in-flight table, read on every pass, kept in memory: what this connection
        committed is applied to it; a commit by another connection (``data_version``
        changes) drops it, and it is read again."""
        self._version = -1

    def __str__(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """Every error of the database names its file: ``file is not a database`` alone
        does not say which."""
        try:
            yield
        except sqlite3.Error as exc:
            raise PluginError(f"group store {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load_groups(self) -> dict[str, bytes]:
        """Every group whose spec can be read; one that cannot is named in the log and
        left out, and the others load."""
        with self._lock, self._named():
            ids = [gid for (gid,) in self._db.execute("SELECT id FROM groups ORDER BY id")]
        groups = {}
        for gid in ids:
            try:
                with self._lock:
                    row = self._db.execute("SELECT spec FROM groups WHERE id = ?",
                                           (gid,)).fetchone()
            except sqlite3.Error as exc:
                log.error("group store %s: the spec of group %s cannot be read, so it is not "
                          "resumed (the other groups are): %s", self.path, gid, exc)
                continue
            if row is not None:
                groups[gid] = bytes(row[0])
        return groups

    def save_group(self, group: str, spec: bytes) -> None:
        with self._lock, self._named():
            self._db.execute(
                "INSERT INTO groups (id, spec, created) VALUES (?, ?, ?) ON CONFLICT (id) DO "
                "UPDATE SET previous = CASE WHEN spec = excluded.spec THEN previous ELSE spec "
                "END, spec = excluded.spec", (group, spec, time.time()))

    def created(self, group: str) -> float | None:
        with self._lock, self._named():
            row = self._db.execute("SELECT created FROM groups WHERE id = ?",
                                   (group,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def previous_spec(self, group: str) -> bytes | None:
        with self._lock, self._named():
            row = self._db.execute("SELECT previous FROM groups WHERE id = ?",
                                   (group,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def set_paused(self, group: str, paused: bool) -> None:
        with self._lock, self._named():
            self._db.execute("UPDATE groups SET paused = ? WHERE id = ?", (int(paused), group))

    def paused(self, group: str) -> bool:
        with self._lock, self._named():
            row = self._db.execute("SELECT paused FROM groups WHERE id = ?", (group,)).fetchone()
        return bool(row and row[0])

    def set_destroying(self, group: str) -> None:
        with self._lock, self._named():
            self._db.execute("UPDATE groups SET destroying = 1 WHERE id = ?", (group,))

    def destroying(self, group: str) -> bool:
        with self._lock, self._named():
            row = self._db.execute("SELECT destroying FROM groups WHERE id = ?",
                                   (group,)).fetchone()
        return bool(row and row[0])

    def delete_group(self, group: str) -> None:
        with self._lock, self._named():
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM groups WHERE id = ?", (group,))
                self._db.execute("DELETE FROM inflight WHERE grp = ?", (group,))
                self._db.execute("DELETE FROM events WHERE grp = ?", (group,))
            self._mirror.pop(group, None)

    def inflight(self, group: str) -> list[InFlight]:
        with self._lock, self._named():
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            if version != self._version:
                self._mirror.clear()
                self._version = version
            ops = self._mirror.get(group)
            if ops is None:
                rows = self._db.execute("SELECT key, record FROM inflight WHERE grp = ?",
                                        (group,))
                ops = self._mirror[group] = {op.key: op for op in
                                             (self._decoded(k, r) for k, r in rows)}
            return list(ops.values())

    def _decoded(self, key: str, record: bytes) -> InFlight:
        """An in-flight record, or an error naming it: the group acts on nothing while one
        of its records cannot be read, since acting without it could make a member twice."""
        try:
            return _decode(record)
        except msgspec.DecodeError as exc:
            raise PluginError(f"group store {self.path}: the in-flight record {key!r} cannot "
                              f"be read: {exc}") from None

    def record(self, *ops: InFlight) -> None:
        copies = [msgspec.structs.replace(op) for op in ops]  # the caller's may change
        with self._lock, self._named():
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO inflight (key, grp, record) VALUES (?, ?, ?)",
                    [(op.key, op.group, msgspec.json.encode(op)) for op in copies])
            for op in copies:
                mirrored = self._mirror.get(op.group)
                if mirrored is not None:
                    mirrored[op.key] = op

    def forget(self, *keys: str) -> None:
        with self._lock, self._named():
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM inflight WHERE key = ?",
                                     [(k,) for k in keys])
            for mirrored in self._mirror.values():
                for key in keys:
                    mirrored.pop(key, None)

    def reserve_sequences(self, group: str, count: int) -> int:
        with self._lock, self._named():
            row = self._db.execute("UPDATE groups SET sequence = sequence + ? WHERE id = ? "
                                   "RETURNING sequence", (count, group)).fetchone()
        return int(row[0]) - count + 1 if row else 0

    def append_events(self, group: str, events: list[GroupEvent]) -> None:
        if not events:
            return
        with self._lock, self._named(), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE "
                                       "grp = ?", (group,)).fetchone()
            rows = []
            for n, event in enumerate(events, last + 1):
                event = msgspec.structs.replace(event, seq=n, group=group)
                rows.append((group, n, event.time, msgspec.json.encode(event)))
            self._db.executemany("INSERT INTO events (grp, seq, time, record) "
                                 "VALUES (?, ?, ?, ?)", rows)
            self._db.execute("DELETE FROM events WHERE grp = ? AND seq <= ?",
                             (group, rows[-1][1] - EVENTS_KEPT))

    def events(self, group: str, since: float | None = None, after: int | None = None,
               limit: int = 0) -> list[GroupEvent]:
        with self._lock, self._named():
            rows = self._db.execute(
                "SELECT seq, record FROM events WHERE grp = ? AND time >= ? AND seq > ? "
                "ORDER BY seq DESC LIMIT ?",
                (group, since or 0.0, after or 0, limit if limit > 0 else -1)).fetchall()
        events = []
        for seq, record in reversed(rows):
            try:
                events.append(_decode_event(record))
            except msgspec.DecodeError as exc:  # history: the others are still told
                log.error("group store %s: event %d of group %s cannot be read, left out: %s",
                          self.path, seq, group, exc)
        return events

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        """One transaction, with the writer's last write (kept as long as the days it
        wrote to), so that a retry adds nothing twice."""
        if not batch.rows:
            return
        with self._lock, self._named(), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            done = self._db.execute("SELECT seq FROM usage_writes WHERE writer = ?",
                                    (batch.writer,)).fetchone()
            if done is not None and done[0] >= batch.seq:
                return
            self._db.execute("INSERT OR REPLACE INTO usage_writes (writer, seq, day) "
                             "VALUES (?, ?, ?)",
                             (batch.writer, batch.seq, max(r.day for r in batch.rows)))
            self._db.executemany(
                "INSERT INTO usage (grp, day, config, seconds, instance) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (grp, day, config) DO UPDATE SET "
                "seconds = seconds + excluded.seconds, "
                "instance = COALESCE(excluded.instance, instance)",
                [(group, r.day, r.config, r.seconds, r.instance) for r in batch.rows])
            too_old = day_of(time.time()) - USAGE_KEPT_DAYS
            self._db.execute("DELETE FROM usage WHERE day < ?", (too_old,))
            self._db.execute("DELETE FROM usage_writes WHERE day < ?", (too_old,))

    def usage(self, group: str | None, since_day: int = 0) -> list[UsageRecord]:
        where = "day >= ?" + (" AND grp = ?" if group is not None else "")
        with self._lock, self._named():
            rows = self._db.execute(
                "SELECT grp, config, SUM(seconds), MIN(day), MAX(day), MAX(instance) FROM usage "
                f"WHERE {where} GROUP BY grp, config ORDER BY grp, config",
                (since_day, group) if group is not None else (since_day,)).fetchall()
        return [usage_record(*row) for row in rows]
