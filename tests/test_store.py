"""The group stores held to one contract: SQLite (WAL, safe after a kill) and etcd."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infrakit.plugins.group.storage import (
    GroupStore,
    InFlight,
    UsageBatch,
    UsageRow,
    day_name,
    day_of,
)
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.errors import CallFailed, PluginError
from infrakit.spi.group import EVENTS_KEPT, USAGE_KEPT_DAYS, GroupEvent, GroupSpec, UsageRecord
from infrakit.store.etcd import EtcdStore
from infrakit.store.etcd_client import EtcdClient, b64
from infrakit.store.sqlite import SQLiteStore
from tests.conftest import Cli, StartPlugin
from tests.etcd_engine import etcd_problem, private_etcd_cluster
from tests.helpers import require_engine, stop_process, wait_until

Opener = Callable[[], GroupStore]


@pytest.fixture(params=["sqlite", "etcd"])
def opener(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens stores on one and the same data: a SQLite file, or a prefix of one etcd."""
    opened: list[SQLiteStore | EtcdStore] = []
    if request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "groups.db"

        def open_store() -> GroupStore:
            opened.append(SQLiteStore(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("etcd_url")
        prefix = f"/test/{time.monotonic_ns()}/"

        def open_store() -> GroupStore:
            opened.append(EtcdStore(EtcdClient([url]), prefix=prefix))
            return opened[-1]
    yield open_store
    for store in opened:
        store.close()


def test_groups_and_inflight_survive_reopening(opener: Opener) -> None:
    store = opener()
    store.save_group("g", b'{"ID":"g"}')
    store.save_group("g", b'{"ID":"g","Properties":1}')
    op = InFlight(key="k", group="g", op="provision", started=1.0, deadline=2.0)
    store.record(op)
    assert store.reserve_sequences("g", 1) == 1
    again = opener()
    assert again.load_groups() == {"g": b'{"ID":"g","Properties":1}'}
    assert again.inflight("g") == [op]
    assert again.reserve_sequences("g", 3) == 2  # 2, 3 and 4
    assert again.reserve_sequences("g", 1) == 5
    again.delete_group("g")
    assert again.load_groups() == {} and again.inflight("g") == []
    assert again.reserve_sequences("g", 1) == 0  # no group, no sequence


def test_many_records_at_once_and_by_group(opener: Opener) -> None:
    store = opener()
    for gid in ("a", "b"):
        store.save_group(gid, b"{}")
    ops = [InFlight(key=f"{gid}{n}", group=gid, op="provision", started=1.0, deadline=2.0)
           for gid in ("a", "b") for n in range(150)]  # more than one etcd transaction
    store.record(*ops)
    assert sorted(o.key for o in store.inflight("a")) == sorted(f"a{n}" for n in range(150))
    store.forget(*(f"a{n}" for n in range(0, 150, 2)))
    assert len(store.inflight("a")) == 75 and len(store.inflight("b")) == 150
    store.delete_group("b")
    assert store.inflight("b") == [] and len(opener().inflight("a")) == 75
    assert store.load_groups() == {"a": b"{}"}


def test_events_are_numbered_bounded_read_since_and_deleted_with_the_group(
        opener: Opener) -> None:
    store = opener()
    for gid in ("a", "b"):
        store.save_group(gid, b"{}")
    store.append_events("a", [GroupEvent(time=float(n), group="a", member=f"m{n}",
                                         kind="provisioned", reason="scale-out",
                                         details={"n": n}) for n in range(1, 151)])
    store.append_events("b", [GroupEvent(time=5.0, group="b", kind="committed")])
    got = opener().events("a")
    assert [e.seq for e in got] == list(range(1, 151)) and got[0].details == {"n": 1}
    assert [e.seq for e in store.events("a", after=148)] == [149, 150]
    assert [e.seq for e in store.events("a", since=100.0)] == list(range(100, 151))
    assert [e.seq for e in store.events("a", limit=3)] == [148, 149, 150]
    assert [(e.seq, e.kind) for e in store.events("b")] == [(1, "committed")]
    # beyond the bound, the oldest go: in one write and over many
    store.append_events("a", [GroupEvent(time=200.0, group="a", kind="destroyed")] * 900)
    store.append_events("a", [GroupEvent(time=300.0, group="a", kind="destroyed")] * 60)
    kept = store.events("a")
    assert len(kept) == EVENTS_KEPT and kept[0].seq == 111 and kept[-1].seq == 1110
    store.delete_group("a")
    assert store.events("a") == [] and len(store.events("b")) == 1


def test_wal_mode_and_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "groups.db"
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


def test_a_writer_killed_mid_write_leaves_a_readable_store(tmp_path: Path) -> None:
    path = tmp_path / "groups.db"
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


def test_previous_spec_and_pause_are_kept(opener: Opener) -> None:
    store = opener()
    store.save_group("g", b"v1")
    assert store.previous_spec("g") is None
    store.save_group("g", b"v2")
    store.save_group("g", b"v2")  # the same spec again keeps the previous one
    assert store.previous_spec("g") == b"v1"
    assert not store.paused("g")
    store.set_paused("g", True)
    assert store.paused("g") and opener().paused("g")
    store.set_paused("g", False)
    assert not opener().paused("g")


def test_when_a_group_was_first_committed_is_kept_until_it_is_deleted(opener: Opener) -> None:
    store = opener()
    assert store.created("g") is None
    before = time.time()
    store.save_group("g", b"v1")
    first = store.created("g")
    assert first is not None and before <= first <= time.time()
    store.save_group("g", b"v2")  # a later commit is not the group's birth
    assert opener().created("g") == first
    store.delete_group("g")
    assert store.created("g") is None
    store.save_group("g", b"v3")  # committed anew: a new group
    again = store.created("g")
    assert again is not None and again >= first


def test_a_store_made_before_commit_times_were_kept_opens_and_keeps_them_from_then_on(
        tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "groups.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE groups (id TEXT PRIMARY KEY, spec BLOB NOT NULL, previous BLOB, "
                "paused INTEGER NOT NULL DEFAULT 0, sequence INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO groups (id, spec) VALUES ('old', ?)", (b"v1",))
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert store.load_groups() == {"old": b"v1"} and store.created("old") is None
    store.save_group("new", b"v1")
    assert store.created("new") is not None
    store.close()


def test_inflight_records_are_seen_by_every_store_on_the_same_data(opener: Opener) -> None:
    """SQLite serves them from memory, and must still see what another connection wrote."""
    mine, other = opener(), opener()
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


def test_a_fenced_etcd_store_writes_nothing_once_its_term_is_over(etcd_url: str) -> None:
    prefix = f"/fence/{time.monotonic_ns()}/"
    client = EtcdClient([etcd_url])
    store = EtcdStore(client, prefix=prefix)
    try:
        client.call("/kv/put", {"key": b64(f"{prefix}leader"), "value": b64("me")})
        term = client.created_revision(f"{prefix}leader")
        client.fence_on(f"{prefix}leader", term)
        store.save_group("g", b"{}")  # while the term lasts
        client.call("/kv/deleterange", {"key": b64(f"{prefix}leader")})  # another leads
        op = InFlight(key="k", group="g", op="provision", started=1.0, deadline=2.0)
        for write in (lambda: store.record(op), lambda: store.save_group("g", b"[]"),
                      lambda: store.reserve_sequences("g", 1)):
            with pytest.raises(PluginError, match="no longer leads"):
                write()
        assert store.inflight("g") == [] and store.load_groups() == {"g": b"{}"}
    finally:
        store.close()


def test_the_etcd_store_survives_a_member_and_recovers_its_quorum() -> None:
    require_engine(etcd_problem())
    with private_etcd_cluster(3) as cluster:
        store = EtcdStore(EtcdClient(cluster.urls, timeout=2))
        try:
            store.save_group("g", b"{}")
            cluster.stop(0)  # the member the store talks to: it moves to the next one
            op = InFlight(key="k", group="g", op="provision", started=1.0, deadline=2.0)
            store.record(op)
            assert store.inflight("g") == [op]
            cluster.stop(1)  # no quorum: nothing can be written, and it says so
            with pytest.raises(PluginError, match="etcd"):
                store.save_group("h", b"{}")
            cluster.start(1, state="existing")  # quorum is back: so are writes
            cluster.wait_healthy(1)
            deadline = time.monotonic() + 20
            while True:
                try:
                    store.save_group("h", b"{}")
                    break
                except PluginError:
                    assert time.monotonic() < deadline, "no write after quorum came back"
                    time.sleep(0.2)
            assert set(store.load_groups()) == {"g", "h"}
        finally:
            store.close()


# -- damaged data: named, and as little lost as can be --------------------------------------


def test_a_damaged_database_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "groups.db"
    SQLiteStore(path).close()
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)  # its header
    with pytest.raises(PluginError) as refused:
        SQLiteStore(path)
    assert str(path) in str(refused.value) and "not a database" in str(refused.value)


def test_a_damaged_event_is_left_out_and_the_others_are_told(tmp_path: Path) -> None:
    path = tmp_path / "groups.db"
    store = SQLiteStore(path)
    try:
        store.save_group("g", b'{"ID":"g"}')
        store.append_events("g", [GroupEvent(time=float(n), group="g", kind="committed")
                                  for n in (1, 2, 3)])
        with sqlite3.connect(path) as db:
            db.execute("UPDATE events SET record = substr(record, 1, 9) WHERE seq = 2")
        assert [e.seq for e in store.events("g")] == [1, 3]
    finally:
        store.close()


def test_a_damaged_inflight_record_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "groups.db"
    store = SQLiteStore(path)
    try:
        store.save_group("g", b'{"ID":"g"}')
        store.record(InFlight(key="k1", group="g", op="provision", started=1.0, deadline=2.0))
        with sqlite3.connect(path) as db:
            db.execute("UPDATE inflight SET record = substr(record, 1, 9)")
        with pytest.raises(PluginError) as refused:
            store.inflight("g")
        assert str(path) in str(refused.value) and "'k1'" in str(refused.value)
    finally:
        store.close()


def test_one_damaged_group_spec_stops_no_other_group(start_plugin: StartPlugin,
                                                     home: Path, cli: Cli) -> None:
    """A spec cut short in groups.db: the other groups resume; the damaged one is named,
    with the store's path, in the log and in what describing it answers."""
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    db = home / "group" / "group" / "groups.db"
    with RPCClient(group.path, timeout=30) as conn:
        for gid in ("a", "b"):
            GroupClient(conn).commit_group(GroupSpec(id=gid, properties={
                "Allocation": {"Size": 1}, "Instance": {"Plugin": "instance-file"},
                "Flavor": {"Plugin": "flavor-vanilla"}}), False)
    stop_process(group.proc)
    with sqlite3.connect(db) as conn_db:
        conn_db.execute("UPDATE groups SET spec = substr(spec, 1, 10) WHERE id = 'a'")
    group = start_plugin("group")
    assert f"group a: its spec stored in {db}" in group.output()
    with RPCClient(group.path, timeout=30) as conn:
        client = GroupClient(conn)
        wait_until(lambda: client.describe_group("b").converged, 20, what="group b")
        with pytest.raises(CallFailed) as refused:
            client.describe_group("a")
        assert str(db) in refused.value.reason and "truncated" in refused.value.reason
        client.destroy_group("b")
    done = cli("group", "describe", "a")
    assert done.returncode == 1 and str(db) in done.stderr


def test_a_follower_lists_every_group_whose_spec_can_be_read() -> None:
    """A manager following on etcd answers InspectGroups from the store: one damaged spec
    hides no other group."""
    import asyncio

    from infrakit.manager.elected import ElectedGroup
    from infrakit.manager.leader_info import LeaderInfo

    class Store:
        def load_groups(self) -> dict[str, bytes]:
            return {"a": b'{"ID": "a", "Prop', "b": b'{"ID": "b"}'}

    class Election:
        ttl = 5

    follower = ElectedGroup(Store(), Election(), 1.0,  # type: ignore[arg-type]
                            LeaderInfo.me("etcd:test"), lambda url: None)
    assert [s.id for s in asyncio.run(follower.inspect_groups())] == ["b"]


def test_a_damaged_inflight_record_in_etcd_is_named_in_the_error(etcd_url: str) -> None:
    from infrakit.store.etcd_client import put

    store = EtcdStore(EtcdClient([etcd_url]), prefix=f"/test/{time.monotonic_ns()}/")
    try:
        store.save_group("g", b'{"ID":"g"}')
        store.client.txn([put(f"{store.prefix}inflight/k1", b'{"key": "k1", "gro')])
        with pytest.raises(PluginError) as refused:
            store.inflight("g")
        assert f"{store.prefix}inflight/" in str(refused.value)
        assert "'k1'" in str(refused.value)
    finally:
        store.close()


def test_a_damaged_event_in_etcd_is_left_out_and_the_others_are_told(etcd_url: str) -> None:
    from infrakit.store.etcd_client import put

    store = EtcdStore(EtcdClient([etcd_url]), prefix=f"/test/{time.monotonic_ns()}/")
    try:
        store.save_group("g", b'{"ID":"g"}')
        store.append_events("g", [GroupEvent(time=float(n), group="g", kind="committed")
                                  for n in (1, 2, 3)])
        store.client.txn([put(store._event_key("g", 2), b'{"seq": 2, "ti')])
        assert [e.seq for e in store.events("g")] == [1, 3]
    finally:
        store.close()


CLOUD = b'{"Plugin":"cloud","Properties":{"Size":"m"}}'


def _batch(writer: str, seq: int, *rows: tuple[int, str, float, bytes | None]) -> UsageBatch:
    return UsageBatch(writer=writer, seq=seq, rows=[
        UsageRow(day=day, config=config, seconds=seconds, instance=instance)
        for day, config, seconds, instance in rows])


def test_usage_is_summed_by_group_and_config_added_once_per_write_and_outlives_its_group(
        opener: Opener) -> None:
    store = opener()
    today = day_of(time.time())
    first = _batch("w1", 1, (today - 1, "c1", 10.0, CLOUD), (today, "c1", 5.0, None),
                   (today, "c2", 1.0, None))
    store.add_usage("g", first)
    store.add_usage("g", first)  # a retry of a write that was applied: added once
    store.add_usage("g", _batch("w1", 2, (today, "c1", 2.0, None)))
    store.add_usage("g", _batch("w2", 1, (today, "c1", 0.5, None)))  # another writer
    store.add_usage("h", _batch("w3", 1, (today, "c1", 4.0, CLOUD)))
    again = opener()
    assert again.usage("g") == [
        UsageRecord(group="g", config="c1", plugin="cloud", properties={"Size": "m"},
                    seconds=17.5, first=day_name(today - 1), last=day_name(today)),
        UsageRecord(group="g", config="c2", seconds=1.0, first=day_name(today),
                    last=day_name(today))]
    assert [r.seconds for r in again.usage("g", since_day=today)] == [7.5, 1.0]
    assert [(r.group, r.config) for r in again.usage(None)] == [
        ("g", "c1"), ("g", "c2"), ("h", "c1")]
    again.save_group("g", b"{}")
    again.delete_group("g")
    assert [r.seconds for r in again.usage("g")] == [17.5, 1.0]  # kept for chargeback


def test_usage_older_than_the_days_kept_is_dropped_for_every_group(opener: Opener) -> None:
    store = opener()
    today = day_of(time.time())
    store.add_usage("old", _batch("w1", 1, (today - USAGE_KEPT_DAYS - 1, "c", 1.0, None),
                                  (today - USAGE_KEPT_DAYS, "c", 2.0, None)))
    store.add_usage("new", _batch("w2", 1, (today, "c", 3.0, None)))
    assert [(r.group, r.seconds, r.first) for r in store.usage(None)] == [
        ("new", 3.0, day_name(today)), ("old", 2.0, day_name(today - USAGE_KEPT_DAYS))]
