"""The SQLite group store: durable, WAL, and safe to reopen after a kill."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infrakit.store.base import InFlight
from infrakit.store.sqlite import SQLiteStore


def _db() -> Path:
    return Path(tempfile.mkdtemp(prefix="ik", dir="/tmp")) / "groups.db"


def test_groups_and_inflight_survive_reopening() -> None:
    path = _db()
    store = SQLiteStore(path)
    store.save_group("g", b'{"ID":"g"}')
    store.save_group("g", b'{"ID":"g","Properties":1}')
    op = InFlight(key="k", group="g", op="provision", started=1.0, deadline=2.0)
    store.record(op)
    assert store.reserve_sequences("g", 1) == 1
    store.close()
    again = SQLiteStore(path)
    assert again.load_groups() == {"g": b'{"ID":"g","Properties":1}'}
    assert again.inflight("g") == [op]
    assert again.reserve_sequences("g", 3) == 2  # 2, 3 and 4
    assert again.reserve_sequences("g", 1) == 5
    again.delete_group("g")
    assert again.load_groups() == {} and again.inflight("g") == []
    assert again.reserve_sequences("g", 1) == 0  # no group, no sequence


def test_wal_mode_and_busy_timeout() -> None:
    path = _db()
    SQLiteStore(path).save_group("g", b"{}")
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


WRITER = """
import sys
from pathlib import Path
from infrakit.store.sqlite import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    store.save_group(f"g{i % 50}", b'{"n": %d, "pad": "%s"}' % (i, b"x" * 4000))
    if i == 20:
        print("writing", flush=True)
"""


def test_a_writer_killed_mid_write_leaves_a_readable_store() -> None:
    path = _db()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"writing"
        time.sleep(random.uniform(0, 0.05))  # a random point in the stream of writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        groups = SQLiteStore(path).load_groups()
        assert groups, "nothing was written before the kill"
        for raw in groups.values():
            assert raw.startswith(b'{"n": ') and raw.endswith(b'"}') and len(raw) > 4000


def test_previous_spec_and_pause_are_kept() -> None:
    store = SQLiteStore(_db())
    store.save_group("g", b"v1")
    assert store.previous_spec("g") is None
    store.save_group("g", b"v2")
    store.save_group("g", b"v2")  # the same spec again keeps the previous one
    assert store.previous_spec("g") == b"v1"
    assert not store.paused("g")
    store.set_paused("g", True)
    assert store.paused("g")


def test_inflight_reads_are_served_from_memory_but_see_other_writers() -> None:
    path = _db()
    mine, other = SQLiteStore(path), SQLiteStore(path)
    try:
        mine.save_group("g", b"{}")
        assert mine.inflight("g") == []  # loads the group's records into memory
        op = InFlight(key="a", group="g", op="provision", started=1.0, deadline=2.0)
        mine.record(op)
        op.instance = "changed after recording"  # the caller's object is not the stored one
        assert [o.instance for o in mine.inflight("g")] == [None]
        other.record(InFlight(key="b", group="g", op="destroy", instance="i-1", started=1.0,
                              deadline=2.0))
        assert sorted(o.key for o in mine.inflight("g")) == ["a", "b"]
        other.forget("a")
        assert [o.key for o in mine.inflight("g")] == ["b"]
        mine.forget("b")
        assert mine.inflight("g") == [] and other.inflight("g") == []
        mine.record(op)
        mine.delete_group("g")
        assert mine.inflight("g") == [] and other.inflight("g") == []
    finally:
        mine.close()
        other.close()
