"""The tables a user reads, run as ``python -m infrakit`` against real plugins: ``group ls``
(its columns and statuses, from one call), ``group describe`` (members health first, in
natural order; ``-o wide`` with where each answers), ages and ISO times, and ``-o`` on
every read verb, ``-q`` included. The status rule itself is a pure function, checked here
case by case."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrakit.cli.output import age, iso, readable
from infrakit.plugins.group.summary import STATUSES, summarize
from infrakit.spi import facts
from infrakit.spi.order import member_order
from tests.conftest import Cli, Plugin, StartPlugin, StartScript
from tests.helpers import wait_until
from tests.test_cli import ok, table
from tests.test_group_health import JUDGE

AGE = re.compile(r"^\d+(s|m\d*s?|h\d*m?|d\d*h?)$")


# -- the status rule ------------------------------------------------------------------------

#: Each status with the facts that make it hold alone.
ALONE: dict[str, dict[str, Any]] = {
    "destroying": {"destroying": True},
    "update halted": {"halted": "3 members of the new config failed"},
    "failing": {"error": "instance plugin 'x' is not reachable"},
    "breaker open": {"breaker_open": True},
    "backing off": {"backoff": "next launch in 40s"},
    "paused": {"paused": True, "outdated": 2},
    "updating": {"outdated": 2},
    "converging": {},
}


@pytest.mark.parametrize("status", STATUSES)
def test_each_status_holds_on_its_facts(status: str) -> None:
    if status == "converged":
        assert summarize(observed=True, converged=True) == ("converged", "")
        return
    said, reason = summarize(observed=True, converged=False, **ALONE[status])
    assert said == status
    assert reason  # every status but converged says why


@pytest.mark.parametrize("higher", range(len(STATUSES) - 2))
def test_a_status_wins_over_every_later_one(higher: int) -> None:
    """The facts of a status and of every status after it: the first is shown."""
    merged: dict[str, Any] = {}
    for status in STATUSES[higher:-2]:  # converging and converged have no facts of their own
        merged = {**ALONE[status], **merged}
    assert summarize(observed=True, converged=False, **merged)[0] == STATUSES[higher]


def test_a_group_not_looked_at_yet_is_converging_and_a_paused_one_with_nothing_to_do_is_not_paused(
        ) -> None:
    assert summarize(observed=False, converged=False) == ("converging", "not looked at yet")
    assert summarize(observed=True, converged=True, paused=True) == ("converged", "")


def test_ages_iso_times_facts_and_member_order() -> None:
    assert [age(s) for s in (None, -2, 0, 59, 60, 330, 7380, 86400 * 3 + 7200, 86400 * 12)] \
        == ["-", "0s", "0s", "59s", "1m", "5m30s", "2h3m", "3d2h", "12d"]
    assert iso(1795961634.107) == "2026-11-29T14:13:54.107Z"
    assert readable({"Started": 1795961634.107, "StopGrace": 2, "Nested": [{"LaunchTime":
                     1795961634}], "Count": 1795961634}) == {
        "Started": "2026-11-29T14:13:54.107Z", "StopGrace": 2,
        "Nested": [{"LaunchTime": "2026-11-29T14:13:54.000Z"}], "Count": 1795961634}
    ec2 = {"PrivateIpAddress": "10.0.0.5", "PublicIpAddress": "3.3.3.3"}
    assert facts.address(ec2) == "3.3.3.3" and facts.address({"PublicIPs": [],
                                                             "PrivateIPs": ["10.1.1.1"]}) \
        == "10.1.1.1"
    assert facts.ports({"Ports": {"ssh": 2222, "http": 8080}}) == "http:8080,ssh:2222"
    assert facts.ports({"Ports": [80, 443]}) == "80,443" and facts.pid({"PID": True}) == ""
    assert [facts.address(None), facts.ports("x"), facts.pid({"PID": 7})] == ["", "", "7"]
    members = [("healthy", "m-10"), ("healthy", "m-2"), ("starting", "m-3"),
               ("unknown", "m-1"), ("unhealthy", "m-11"), ("failed", "m-4")]
    assert [m for _, m in sorted(members, key=lambda m: member_order(*m))] == \
        ["m-4", "m-11", "m-1", "m-3", "m-2", "m-10"]


# -- through the CLI ------------------------------------------------------------------------


class Judged:
    """The file instance plugin, a flavor that reads the members' health from a file, and
    a fast-polling group plugin."""

    def __init__(self, home: Path, cli: Cli, instance: Plugin) -> None:
        self.home, self.cli, self.instance = home, cli, instance
        self.verdicts({})

    def verdicts(self, verdicts: dict[str, str]) -> None:
        (self.home / "verdicts.json").write_text(json.dumps(verdicts))

    def commit(self, gid: str, size: int, note: str = "v1", **extra: Any) -> None:
        spec = {"ID": gid, "Properties": {
            "Allocation": {"Size": size},
            "Instance": {"Plugin": "instance-file", "Properties": {"Note": note}},
            "Flavor": {"Plugin": "flavor-judge", "Properties": {}},
            "HealthGrace": 60, **extra}}
        (self.home / f"{gid}.json").write_text(json.dumps(spec))
        ok(self.cli("group", "commit", f"{gid}.json"))

    def ls(self, *args: str) -> dict[str, list[str]]:
        """``group ls``'s rows by group ID, checked against its header."""
        headers, rows = table(ok(self.cli("group", "ls", *args)).stdout)
        assert headers[:6] == ["ID", "SIZE", "READY", "UP-TO-DATE", "AGE", "STATUS"]
        return {row[0]: row for row in rows}

    def status_is(self, gid: str, status: str) -> bool:
        return self.ls().get(gid, [""] * 6)[5] == status


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch, home: Path, cli: Cli, start_plugin: StartPlugin,
           start_script: StartScript) -> Judged:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.1")
    (home / "verdicts.json").write_text("{}")
    instance = start_plugin("instance-file")
    start_script(JUDGE, "flavor-judge")
    start_plugin("group")
    return Judged(home, cli, instance)


def test_group_ls_shows_each_groups_counts_age_and_status(judged: Judged, cli: Cli) -> None:
    judged.commit("web", 3)
    judged.commit("db", 2)
    wait_until(lambda: judged.status_is("web", "converged")
               and judged.status_is("db", "converged"), 15, what="both groups to converge")
    rows = judged.ls()
    assert list(rows) == ["db", "web"]
    assert rows["web"][:4] == ["web", "3", "3/3", "3"] and AGE.match(rows["web"][4])
    assert rows["db"][1:4] == ["2", "2/2", "2"]

    listed = json.loads(ok(cli("group", "ls", "-o", "json")).stdout)
    web = next(g for g in listed if g["ID"] == "web")
    assert {k: web[k] for k in ("Size", "Members", "Ready", "UpToDate", "Status", "Reason")} \
        == {"Size": 3, "Members": 3, "Ready": 3, "UpToDate": 3, "Status": "converged",
            "Reason": ""}
    created = datetime.datetime.fromisoformat(web["Created"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(0) <= now - created < datetime.timedelta(minutes=1)
    assert yaml.safe_load(ok(cli("group", "ls", "-o", "yaml")).stdout)[1]["ID"] == "web"
    assert json.loads(ok(cli("group", "ls", "-q", "-o", "json")).stdout) == ["db", "web"]
    assert ok(cli("group", "ls", "-q")).stdout.split() == ["db", "web"]
    wide = judged.ls("-o", "wide")["web"]
    assert wide[6:] == ["3", "-"]  # MEMBERS, REASON

    # a member unhealthy (within its grace): READY says so, the group is not converged
    judged.verdicts({"instance-1": "unhealthy"})
    wait_until(lambda: judged.ls()["web"][2] == "2/3", 10, what="READY 2/3")


def test_group_ls_follows_a_paused_update_then_the_update_then_the_breaker(
        judged: Judged) -> None:
    judged.commit("web", 3, MaxUnhealthy=1)
    wait_until(lambda: judged.status_is("web", "converged"), 15, what="the group")
    ok(judged.cli("group", "pause-update", "web"))
    judged.commit("web", 3, note="v2", MaxUnhealthy=1)
    wait_until(lambda: judged.status_is("web", "paused"), 10, what="a paused update")
    row = judged.ls("-o", "wide")["web"]
    assert row[3] == "0" and row[7] == "3 members still to update"  # UP-TO-DATE, REASON
    ok(judged.cli("group", "resume-update", "web"))
    wait_until(lambda: judged.ls()["web"][2:4] == ["3/3", "3"]
               and judged.status_is("web", "converged"), 20, what="the update to end")
    judged.verdicts({"*": "unhealthy"})
    wait_until(lambda: judged.status_is("web", "breaker open"), 10, what="the breaker")
    assert judged.ls("-o", "wide")["web"][7] == \
        "too many members are unhealthy to replace any"


def test_group_ls_says_failing_with_the_reason_when_the_instance_plugin_is_gone(
        judged: Judged) -> None:
    judged.commit("web", 2)
    wait_until(lambda: judged.status_is("web", "converged"), 15, what="the group")
    judged.instance.proc.terminate()
    judged.instance.proc.wait(10)
    wait_until(lambda: judged.status_is("web", "failing"), 15, what="failing passes")
    assert "instance-file" in judged.ls("-o", "wide")["web"][7]


def test_group_describe_lists_members_health_first_in_natural_order(
        judged: Judged, cli: Cli) -> None:
    judged.commit("web", 11)
    wait_until(lambda: judged.status_is("web", "converged"), 20, what="11 members")
    judged.verdicts({"instance-7": "unhealthy", "instance-3": "error"})
    expected = ["instance-7", "instance-3", "instance-1", "instance-2", "instance-4",
                "instance-5", "instance-6", "instance-8", "instance-9", "instance-10",
                "instance-11"]

    def listed() -> list[str]:
        return ok(cli("group", "describe", "web", "-q")).stdout.split()

    wait_until(lambda: listed() == expected, 10, what="the sick members first")
    headers, rows = table(ok(cli("group", "describe", "web")).stdout)
    assert headers == ["ID", "LOGICAL", "HEALTH", "AGE", "CONFIG", "RESTARTS"]
    members = [r for r in rows if r[0].startswith("instance-")]
    assert [r[0] for r in members] == expected
    assert [r[2] for r in members[:3]] == ["unhealthy", "unknown", "healthy"]
    assert all(AGE.match(r[3]) and r[4] == "current" for r in members)
    assert json.loads(ok(cli("group", "describe", "web", "-q", "-o", "json")).stdout) \
        == expected
    assert yaml.safe_load(ok(cli("group", "describe", "web", "-q", "-o", "yaml")).stdout) \
        == expected
    # JSON without -q: the reference's answer, as its scripts read it
    described = json.loads(ok(cli("group", "describe", "web", "-o", "json")).stdout)
    assert set(described) == {"Instances", "Converged"}
    verbose = ok(cli("group", "describe", "web", "-v")).stdout
    assert verbose.index("instance-7") < verbose.index("instance-10")
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", verbose)  # events' times
    wide_headers, wide_rows = table(ok(cli("group", "describe", "web", "-o", "wide")).stdout)
    assert wide_headers[-4:] == ["ADDRESS", "PORTS", "PID", "TAGS"]
    # the file plugin describes no address, ports nor process
    assert wide_rows[0][6:9] == ["-", "-", "-"] and "infrakit.group=web" in wide_rows[0][9]


def test_inspect_and_events_take_every_format(judged: Judged, cli: Cli) -> None:
    judged.commit("web", 1)
    wait_until(lambda: judged.status_is("web", "converged"), 15, what="the group")
    assert table(ok(cli("group", "inspect", "web", "-o", "table")).stdout) == (
        ["ID", "ALLOCATION", "INSTANCE", "FLAVOR"],
        [["web", "Size: 1", "instance-file", "flavor-judge"]])
    assert yaml.safe_load(ok(cli("group", "inspect", "web")).stdout)["ID"] == "web"
    headers, rows = table(ok(cli("group", "events", "web")).stdout)
    assert headers == ["AGE", "MEMBER", "KIND", "REASON"] and AGE.match(rows[0][0])
    headers, rows = table(ok(cli("group", "events", "web", "-o", "wide")).stdout)
    assert headers[-1] == "TIME" and rows[0][-1].endswith("Z")
    first = json.loads(ok(cli("group", "events", "web", "-o", "json")).stdout)[0]
    assert first["Kind"] == "committed" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["Time"])
    for fmt in ("table", "wide"):
        assert not ok(cli("group", "usage", "-o", fmt)).stdout.startswith("{")


def test_wide_shows_where_process_members_answer(home: Path, cli: Cli,
                                                 start_plugin: StartPlugin) -> None:
    for kind in ("instance-process", "flavor-vanilla", "group"):
        start_plugin(kind)
    spec = {"ID": "web", "Properties": {
        "Allocation": {"Size": 2},
        "Instance": {"Plugin": "instance-process",
                     "Properties": {"Command": ["sleep", "600"], "Ports": ["http"]}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}
    (home / "web.json").write_text(json.dumps(spec))
    ok(cli("group", "commit", "web.json", "--wait", "--wait-timeout", "30"))
    try:
        headers, rows = table(ok(cli("group", "describe", "web", "-o", "wide")).stdout)
        members = [dict(zip(headers, r, strict=True)) for r in rows if r[0].startswith("proc")]
        assert [m["ID"] for m in members] == ["proc-1", "proc-2"]
        for m in members:
            assert m["ADDRESS"] == "127.0.0.1" and re.fullmatch(r"http:\d+", m["PORTS"])
            assert int(m["PID"]) > 1
        inst = ok(cli("instance", "--name", "instance-process", "describe", "-o", "wide"))
        headers, rows = table(inst.stdout)
        assert headers[-3:] == ["ADDRESS", "PORTS", "PID"] and rows[0][-3] == "127.0.0.1"
        shown = ok(cli("instance", "--name", "instance-process", "describe", "--properties"))
        assert re.search(r'"Started":"\d{4}-\d\d-\d\dT[\d:.]+Z"', shown.stdout)
        raw = json.loads(ok(cli("instance", "--name", "instance-process", "describe",
                                "--properties", "-o", "json")).stdout)
        assert isinstance(raw[0]["Properties"]["Started"], float)  # the plugin's own data
        assert json.loads(ok(cli("instance", "--name", "instance-process", "describe", "-q",
                                 "-o", "json")).stdout) == ["proc-1", "proc-2"]
    finally:
        ok(cli("group", "destroy", "web"))


def test_every_read_verb_takes_every_format(home: Path, cli: Cli,
                                            start_plugin: StartPlugin) -> None:
    for kind in ("instance-file", "flavor-vanilla"):
        start_plugin(kind)
    (home / "props.json").write_text("{}")
    (home / "spec.json").write_text(json.dumps({"Properties": {}, "Tags": {"a": "b"}}))
    reads = [
        ("version",),
        ("plugin", "ls"),
        ("instance", "--name", "instance-file", "describe"),
        ("flavor", "--name", "flavor-vanilla", "prepare", "props.json", "spec.json"),
        ("flavor", "--name", "flavor-vanilla", "healthy", "props.json", "--id", "x"),
    ]
    for args in reads:
        for fmt in ("table", "wide", "json", "yaml"):
            done = ok(cli(*args, "-o", fmt))
            if fmt == "json":
                json.loads(done.stdout)
            elif fmt == "yaml":
                yaml.safe_load(done.stdout)
            else:  # a table: not a document
                assert not done.stdout.lstrip().startswith(("{", "[")), (args, fmt)
    headers, _ = table(ok(cli("plugin", "ls", "-o", "wide")).stdout)
    assert headers == ["INTERFACE", "LISTEN", "NAME", "STATE", "PID", "SUPERVISOR"]
    assert json.loads(ok(cli("plugin", "ls", "-q", "-o", "json")).stdout) == \
        ["flavor-vanilla", "instance-file"]
    prepared = table(ok(cli("flavor", "--name", "flavor-vanilla", "prepare", "props.json",
                            "spec.json", "-o", "table")).stdout)
    assert prepared[0] == ["LOGICAL", "TAGS", "ATTACHMENTS", "INIT"]
