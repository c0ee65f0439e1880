"""Usage and chargeback end to end: real ``group``, ``instance-file`` and ``flavor-vanilla``
processes over real sockets, ``Group.Usage`` through the typed client and
``infrakit group usage`` through the CLI, the group store read from its file."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit.plugins.group.storage import UsageBatch, UsageRow, day_name, day_of
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.errors import Unsupported
from infrakit.store.sqlite import SQLiteStore
from tests.conftest import Cli, Processes, StartPlugin, StartScript
from tests.helpers import stop_process, wait_until
from tests.test_group_plugin import (
    GID,
    POLL,
    SHA_V1,
    Stack,
    commit,
    converge,
    ok,
    props,
    start_together,
)
from tests.test_manager_etcd import TTL, leader_finder, logged, spawner

SIZE = 3
SLACK = 2.0
"""Member-seconds a measure may be off by, per member, at this poll on a busy machine: a
pass counts up to the time it starts, which trails the moment the test asks by up to a
poll interval and a pass."""


@pytest.fixture
def group_stack(monkeypatch: pytest.MonkeyPatch, procs: Processes,
                plugins_dir: Path) -> Iterator[Stack]:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    instance, flavor, group = start_together(procs, plugins_dir, "instance-file",
                                             "flavor-vanilla", "group")
    s = Stack(group, instance, flavor.path)
    yield s
    stop_process(s.group.proc)


def store_path(home: Path) -> Path:
    """Where ``plugin run group:group`` keeps its store."""
    return home / "group" / "group" / "groups.db"


def used(group: Path, gid: str = GID) -> float:
    """Member-seconds of ``gid`` as the group plugin answers (what it wrote and what it
    counted since)."""
    with RPCClient(group) as conn:
        return sum(r.seconds for r in GroupClient(conn).usage(gid, None))


def stored(home: Path, gid: str = GID) -> float:
    store = SQLiteStore(store_path(home))
    try:
        return sum(r.seconds for r in store.usage(gid))
    finally:
        store.close()


def window(group: Path, seconds: float) -> tuple[float, float]:
    """The usage counted over ``seconds`` of wall time, and the time it took."""
    start, before = time.monotonic(), used(group)
    wait_until(lambda: time.monotonic() - start >= seconds, seconds + 5, interval=0.05)
    return used(group) - before, time.monotonic() - start


def test_usage_grows_with_members_and_time_and_a_restart_counts_nothing_twice(
        group_stack: Stack, start_plugin: StartPlugin, home: Path) -> None:
    s = group_stack
    commit(s.group.path, GID, props(SIZE))
    converge(s, SIZE)
    grown, took = window(s.group.path, 3.0)
    assert abs(grown - SIZE * took) <= SIZE * SLACK, (grown, took)

    # a stop writes what was counted; the restarted plugin goes on from there, without the
    # time it was down
    before = used(s.group.path)
    stop_process(s.group.proc)
    written = stored(home)
    assert before <= written <= before + SIZE * SLACK
    down = time.monotonic()
    time.sleep(1.0)  # down for a second: not counted
    s.group = start_plugin("group")
    wait_until(lambda: used(s.group.path) > written, 10, what="usage counted again")
    later = used(s.group.path)
    assert written < later <= written + SIZE * (time.monotonic() - down - 1.0) + SIZE * SLACK

    # kill -9: what was not yet written is lost, nothing is counted twice
    before = used(s.group.path)
    s.group.proc.send_signal(signal.SIGKILL)
    s.group.proc.wait(10)
    written = stored(home)
    assert written <= before
    restarted = time.monotonic()
    s.group = start_plugin("group")
    wait_until(lambda: used(s.group.path) > written, 10, what="usage counted again")
    assert used(s.group.path) <= written + SIZE * (time.monotonic() - restarted) + \
        SIZE * SLACK


OLD_INSTANCE = b'{"Plugin":"instance-file","Properties":{"Note":"old"}}'


def plant(home: Path, group: str, days_ago: int, seconds: float, instance: bytes | None,
          config: str = "oldconfig") -> None:
    """Usage of an earlier day, written into the group plugin's store beside it."""
    store = SQLiteStore(store_path(home))
    try:
        store.add_usage(group, UsageBatch(writer=f"test-{group}-{days_ago}", seq=1, rows=[
            UsageRow(day=day_of(time.time()) - days_ago, config=config, seconds=seconds,
                     instance=instance)]))
    finally:
        store.close()


PRICES = f"""\
currency: EUR
prices:
  - plugin: instance-file
    properties: {{Note: old}}
    per_hour: 2
  - plugin: instance-file
    config: {SHA_V1}
    per_hour: 0.5
  - plugin: instance-file
    per_hour: 100
"""


def usage_json(cli: Cli, *args: str) -> dict[str, object]:
    done = ok(cli("group", "usage", *args, "-o", "json"))
    data: dict[str, object] = json.loads(done.stdout)
    return data


def lines_of(data: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    lines = data["Usage"]
    assert isinstance(lines, list)
    return {(line["Group"], line["Config"]): line for line in lines}


def test_since_filters_by_day_prices_give_the_cost_and_destroyed_groups_keep_their_usage(
        group_stack: Stack, cli: Cli, home: Path) -> None:
    s = group_stack
    commit(s.group.path, GID, props(SIZE))
    converge(s, SIZE)
    plant(home, "gone", 3, 7200.0, OLD_INSTANCE)  # a group destroyed days ago
    plant(home, "elsewhere", 1, 1800.0, b'{"Plugin":"instance-other","Properties":null}')
    wait_until(lambda: used(s.group.path) > 1.0, 10, what="usage counted")

    everything = lines_of(usage_json(cli))
    assert set(everything) == {("cattle", SHA_V1), ("gone", "oldconfig"),
                               ("elsewhere", "oldconfig")}
    assert everything[("gone", "oldconfig")]["MemberHours"] == 2.0
    today, three_days_ago = day_name(day_of(time.time())), day_name(day_of(time.time()) - 3)
    assert everything[("cattle", SHA_V1)]["First"] == today
    assert everything[("gone", "oldconfig")]["First"] == three_days_ago

    # today's UTC day only (not "1h", which is yesterday in the first hour of a UTC day)
    assert set(lines_of(usage_json(cli, "--since", today))) == {("cattle", SHA_V1)}
    since = usage_json(cli, "--since", three_days_ago)
    assert since["Since"] == three_days_ago and len(lines_of(since)) == 3
    assert set(lines_of(usage_json(cli, "gone"))) == {("gone", "oldconfig")}

    (home / "prices.yml").write_text(PRICES)
    priced = usage_json(cli, "--prices", "prices.yml")
    lines = lines_of(priced)
    gone, cattle = lines[("gone", "oldconfig")], lines[("cattle", SHA_V1)]
    assert (gone["PerHour"], gone["Cost"]) == (2.0, 4.0)  # the first price that matches
    assert cattle["PerHour"] == 0.5 and cattle["Cost"] == pytest.approx(
        0.5 * float(str(cattle["MemberHours"])))
    assert lines[("elsewhere", "oldconfig")]["Cost"] is None  # no price for its plugin
    assert priced["Currency"] == "EUR" and priced["UnpricedMemberHours"] == 0.5
    assert priced["Cost"] == pytest.approx(4.0 + float(str(cattle["Cost"])))

    table = ok(cli("group", "usage", "--prices", "prices.yml")).stdout
    assert "GROUP" in table and "PER HOUR" in table and "cost " in table
    assert "EUR; 0.50 member-hours match no price in prices.yml" in table

    ok(cli("group", "destroy", GID))
    kept = lines_of(usage_json(cli, GID))[("cattle", SHA_V1)]
    assert float(str(kept["MemberHours"])) > 0  # kept when its group is gone


@pytest.mark.parametrize(("text", "said"), [
    ("prices: [{plugin: a, per_hour: 1}, {plugin: b, per_hour: 2}, {plugin: c, per_hour: -1}]",
     "prices.yml: prices[2].per_hour: must be a number ≥ 0"),
    ("prices: [{plugin: a, per_hour: '0.1'}]",
     "prices.yml: prices[0].per_hour: must be a number ≥ 0"),
    ("prices: [{plugin: a, per_hour: .nan}]",
     "prices.yml: prices[0].per_hour: must be a number ≥ 0"),
    ("prices: [{plugin: a, per_hour: true}]",
     "prices.yml: prices[0].per_hour: must be a number ≥ 0"),
    ("prices: [{plugin: a}]", "prices.yml: prices[0].per_hour: missing"),
    ("prices: [{per_hour: 1}]", "prices.yml: prices[0].plugin: missing"),
    ("prices: [{plugin: a, per_hour: 1, price: 2}]",
     "prices.yml: prices[0].price: unknown field (known: config, per_hour, plugin, "
     "properties)"),
    ("prices: [{plugin: a, per_hour: 1, properties: [m5]}]",
     "prices.yml: prices[0].properties: must be a mapping"),
    ("prices: [{plugin: a, per_hour: 1, config: 7}]", "prices.yml: prices[0].config: must be"),
    ("prices: []", "prices.yml: prices: must be a list of at least one price"),
    ("currency: EUR", "prices.yml: prices: missing"),
    ("prices: [{plugin: a, per_hour: 1}]\ncurrency: [EUR]",
     "prices.yml: currency: must be a string"),
    ("- plugin: a", "prices.yml: must be a mapping with 'prices'"),
    ("prices: {a: 1", "prices.yml, line 1, column 14: not valid YAML"),
])
def test_a_bad_price_table_is_refused_naming_the_field_before_anything_is_asked(
        cli: Cli, home: Path, text: str, said: str) -> None:
    (home / "prices.yml").write_text(text)
    # no group plugin runs: the table is refused before any call
    done = cli("group", "--name", "nosuch", "usage", "--prices", "prices.yml")
    assert done.returncode != 0 and done.stdout == ""
    assert said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "nosuch" not in done.stderr


NO_USAGE_GROUP = '''
import sys
from pathlib import Path
from infrakit.rpc.server import serve


class Groups:
    def inspect_groups(self):
        return []


serve("older", group=Groups(), directory=Path(sys.argv[1]))
'''


def test_a_group_plugin_that_keeps_no_usage_says_so(cli: Cli, start_script: StartScript) -> None:
    older = start_script(NO_USAGE_GROUP, "older")
    with RPCClient(older.path) as conn, pytest.raises(Unsupported):
        GroupClient(conn).usage("", None)
    done = cli("group", "--name", "older", "usage")
    assert done.returncode == 1
    assert done.stderr.strip() == ("Error: Group plugin 'older' keeps no usage (it does not "
                                   "serve Group.Usage)")


def test_a_change_of_leader_on_etcd_counts_nothing_twice(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path, etcd_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader is frozen past its lease: its successor counts from its own first pass,
    and what the frozen one counted meanwhile is never written when it wakes (its term is
    over: the store's fence refuses it)."""
    monkeypatch.setenv("INFRAKIT_ETCD_PREFIX", f"/t{time.monotonic_ns()}/")
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    opts = ["--store", "etcd", "--etcd-endpoints", etcd_url, "--lease-ttl", str(TTL)]
    manager, leader_pid = spawner(procs, home, opts), leader_finder(cli, opts)
    a = manager("group-a")
    wait_until(lambda: leader_pid() == a.pid, 15, what="a to lead")
    b = manager("group-b")
    follower = home / "plugins" / "group-b"
    commit(follower, GID, props(SIZE))  # forwarded to a
    wait_until(lambda: used(follower) > SIZE, 20, what="a to count usage")  # forwarded too
    start, counted = time.monotonic(), used(follower)

    a.send_signal(signal.SIGSTOP)
    wait_until(lambda: leader_pid() == b.pid, 15, what="b to lead")
    wait_until(lambda: used(follower) > counted, 20, what="b to count usage")
    a.send_signal(signal.SIGCONT)
    wait_until(lambda: logged(home, "group-a", "lost leadership"), 10,
               what="a to see that its term is over")
    b.send_signal(signal.SIGTERM)  # b writes what it counted as it resigns
    assert b.wait(10) == 0
    wait_until(lambda: leader_pid() == a.pid, 15, what="a to lead again")
    leader = home / "plugins" / "group-a"
    wait_until(lambda: used(leader) > 0, 10, what="a to answer usage")
    assert used(leader) <= counted + SIZE * (time.monotonic() - start) + SIZE * SLACK
    a.send_signal(signal.SIGTERM)
    assert a.wait(10) == 0
