"""What a group plugin's SQLite store holds on disk: the file and its write-ahead log, the
bytes of each table (with its indexes), and the events kept per group, so that a
benchmark can show that the history stays bounded however long the group runs."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StoreSize:
    file: int
    """Bytes of the database file."""
    wal: int
    """Bytes of its write-ahead log (SQLite folds it back into the file at checkpoints)."""
    tables: dict[str, int] = field(default_factory=dict)
    """Bytes of the pages of each table, its indexes included."""
    events: dict[str, int] = field(default_factory=dict)
    """Events kept, per group."""

    def lines(self) -> list[str]:
        tables = ", ".join(f"{name} {size / 1024:.0f} KiB"
                           for name, size in sorted(self.tables.items()))
        kept = ", ".join(f"{g}: {n}" for g, n in sorted(self.events.items())) or "none"
        return [f"file {self.file / 1024:.0f} KiB, write-ahead log {self.wal / 1024:.0f} KiB",
                f"tables: {tables}", f"events kept per group: {kept}"]


def store_size(path: Path) -> StoreSize:
    """Read through a connection of its own, which sees what the plugin committed, the
    pages still in the write-ahead log included."""
    wal = path.with_name(path.name + "-wal")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        indexes = dict(db.execute("SELECT name, tbl_name FROM sqlite_schema "
                                  "WHERE type = 'index'").fetchall())
        tables: dict[str, int] = {}
        for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = indexes.get(name, name)
            tables[table] = tables.get(table, 0) + size
        events = dict(db.execute("SELECT grp, COUNT(*) FROM events GROUP BY grp").fetchall())
    finally:
        db.close()
    return StoreSize(file=path.stat().st_size, wal=wal.stat().st_size if wal.exists() else 0,
                     tables=tables, events=events)
