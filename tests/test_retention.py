"""The files of ended and destroyed instances of the real instance-process plugin: the last
``$INFRAKIT_KEEP_ENDED`` of each group are kept, for at most
``$INFRAKIT_KEEP_ENDED_SECONDS``, so that ``infrakit instance logs ID --previous`` can tell
why a member died; the others are removed, and asking for them says so."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit.spi.types import Spec
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, wait_until
from tests.test_process_plugin import NAME, Proc, process_plugin

Done = subprocess.CompletedProcess[str]
DIES = "echo why: $INFRAKIT_INSTANCE_ID failed; exit 3"


def ok(done: Done) -> Done:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def provision(cli: Cli, home: Path, group: str, command: str = DIES) -> str:
    """An instance of ``group`` made with ``infrakit instance provision``."""
    spec = home / "spec.json"
    spec.write_text(json.dumps({"Tags": {"infrakit.group": group},
                                "Properties": {"Command": command}}))
    return ok(cli("instance", "--name", NAME, "provision", str(spec))).stdout.strip()


def ended(proc: Proc, group: str) -> list[str]:
    return [e.id for e in proc.client.describe_ended({"infrakit.group": group})]


def wait_ended(proc: Proc, group: str, iid: str) -> None:
    wait_until(lambda: iid in ended(proc, group), 10, what=f"{iid} to end")


def logs(cli: Cli, iid: str) -> Done:
    return cli("instance", "--name", NAME, "logs", "--previous", iid)


def pruned(cli: Cli, iid: str) -> bool:
    done = logs(cli, iid)
    return done.returncode == 1 and "its files were removed after retention" in done.stderr


@pytest.fixture
def proc(start_plugin: StartPlugin, home: Path, procs: Processes) -> Iterator[Proc]:
    with process_plugin(start_plugin, home, procs) as p:
        yield p


@pytest.fixture
def keep_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_KEEP_ENDED", "2")


@pytest.mark.usefixtures("keep_two")
def test_the_last_few_of_each_group_keep_their_files_across_restarts(
        proc: Proc, cli: Cli, home: Path) -> None:
    web = [provision(cli, home, "web") for _ in range(4)]
    db = provision(cli, home, "db")
    for iid in web:  # one at a time, so that they end in this order
        wait_ended(proc, "web", iid)
    wait_until(lambda: ended(proc, "db") == [db], 10, what=f"{db} to end")
    # every ending is still reported, for the group to learn of it ...
    assert ended(proc, "web") == web
    # ... but only the last two of web keep their files, and db its own
    for iid in (*web[2:], db):
        assert ok(logs(cli, iid)).stdout == f"why: {iid} failed\n"
        assert (proc.state / iid).is_dir()
    for iid in web[:2]:
        assert not (proc.state / iid).exists()
        done = logs(cli, iid)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert (f"'{iid}' ended or was destroyed, and its files were removed after retention "
                "(the files of the last 2 per group that ended, and of as many destroyed, "
                "are kept, for at most 604800s "
                "(INFRAKIT_KEEP_ENDED, INFRAKIT_KEEP_ENDED_SECONDS)): its log is no longer "
                "kept") in done.stderr
    proc.restart()
    # a restarted plugin still serves what it kept, reports how those ended ...
    assert ended(proc, "web") == web[2:] and ended(proc, "db") == [db]
    assert ok(logs(cli, web[3])).stdout == f"why: {web[3]} failed\n"
    # ... and goes on removing the oldest when another member of the group ends
    fifth = provision(cli, home, "web")
    wait_ended(proc, "web", fifth)
    assert pruned(cli, web[2]) and not (proc.state / web[2]).exists()
    assert ok(logs(cli, web[3])).stdout and ok(logs(cli, db)).stdout


def destroyed(proc: Proc, cli: Cli, home: Path) -> str:
    """A member of web destroyed by ``infrakit instance destroy`` once it has said why."""
    hung = provision(cli, home, "web", "echo stuck: $INFRAKIT_INSTANCE_ID; sleep 600")
    wait_until(lambda: "stuck" in proc.client.logs(hung, "", None, False).data, 10,
               what="its output")
    ok(cli("instance", "--name", NAME, "destroy", hung))
    return hung


@pytest.mark.usefixtures("keep_two")
def test_destroyed_members_keep_their_logs_too_apart_from_the_crashed(
        proc: Proc, cli: Cli, home: Path) -> None:
    hung = destroyed(proc, cli, home)
    assert ok(logs(cli, hung)).stdout == f"stuck: {hung}\n"
    assert ended(proc, "web") == []  # a destroy is no ending of the member's own
    crashed = [provision(cli, home, "web") for _ in range(2)]
    for iid in crashed:
        wait_ended(proc, "web", iid)
    assert ok(logs(cli, hung)).stdout  # crashes do not push the destroyed out ...
    more = [destroyed(proc, cli, home) for _ in range(2)]
    assert pruned(cli, hung) and not (proc.state / hung).exists()
    for iid in crashed:  # ... nor destroys, as a rolling update makes, the crashed
        assert ok(logs(cli, iid)).stdout == f"why: {iid} failed\n"
    assert all(ok(logs(cli, iid)).stdout for iid in more)


def test_files_older_than_the_age_limit_go_however_few(
        monkeypatch: pytest.MonkeyPatch, proc: Proc, cli: Cli, home: Path) -> None:
    monkeypatch.setenv("INFRAKIT_KEEP_ENDED_SECONDS", "1")
    proc.restart()  # with the setting
    iid = provision(cli, home, "web")
    wait_ended(proc, "web", iid)
    assert (proc.state / iid).is_dir()
    wait_until(lambda: pruned(cli, iid), 10, what="its files to go after 1s")
    assert not (proc.state / iid).exists()
    assert ended(proc, "web") == [iid]  # its ending is still reported


def test_work_dirs_no_record_names_are_taken_in_and_pruned(
        keep_two: None, start_plugin: StartPlugin, home: Path) -> None:
    """Directories left behind before the files had a retention: taken in as ended when
    they were last changed, in no group."""
    state = home / "instance-process" / NAME
    state.mkdir(parents=True, mode=0o700)
    now = time.time()
    for n in range(1, 6):
        work = state / f"proc-{n}"
        work.mkdir()
        (work / f"proc-{n}.log").write_text(f"old {n}\n")
        os.utime(work, (now - 100 + n, now - 100 + n))
    (state / "proc-9").mkdir()  # its record was damaged and is set aside: left alone
    (state / "proc-9.json.corrupt-20261129T120000").write_text("{")
    victim = home / "victim"  # a record the plugin never wrote, long past keeping
    victim.mkdir()
    (state / "proc-10.kept").write_text(json.dumps(
        {"ID": "proc-10", "Over": 1, "WorkDir": str(victim), "Log": str(victim / "x")}))
    start_plugin(NAME)
    assert sorted(p.name for p in state.iterdir() if p.is_dir()) == \
        ["proc-4", "proc-5", "proc-9"]
    assert victim.is_dir()


def test_keep_zero_removes_at_once_and_a_bad_value_stops_the_start(
        monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin, cli: Cli,
        home: Path) -> None:
    bad = subprocess.run([PY, "-m", "infrakit", "plugin", "run", NAME],
                         env={**os.environ, "INFRAKIT_KEEP_ENDED": "-1"},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "INFRAKIT_KEEP_ENDED: '-1' is under the minimum of 0" in bad.stderr
    monkeypatch.setenv("INFRAKIT_KEEP_ENDED", "0")
    plugin = start_plugin(NAME)
    from infrakit.rpc.client import RPCClient
    from infrakit.rpc.typed import InstanceClient

    with RPCClient(plugin.path, timeout=30) as rpc:
        client = InstanceClient(rpc)
        iid = client.provision(Spec(properties={"Command": DIES}))
        wait_until(lambda: any(e.id == iid for e in client.describe_ended({})), 10,
                   what=f"{iid} to end")
        [end] = client.describe_ended({})
        assert end.output == [f"why: {iid} failed"]  # what it said is still told
    assert pruned(cli, iid)
    assert not (home / "instance-process" / NAME / iid).exists()


def test_members_dying_of_their_destroy_are_never_reported_as_ended(
        proc: Proc, cli: Cli, home: Path) -> None:
    """Between the process's death on SIGTERM and the end of Destroy, a describe must not
    take it for one that ended by itself (a crash, for the group, and kept as one)."""
    slow = "trap 'sleep 0.2; exit 0' TERM; while :; do sleep 0.05; done"
    members = [provision(cli, home, "web", slow) for _ in range(8)]
    destroyer = subprocess.Popen([PY, "-m", "infrakit", "instance", "--name", NAME, "destroy",
                                  *members], cwd=home, stdout=subprocess.DEVNULL)
    seen: set[str] = set()
    while destroyer.poll() is None:
        proc.client.describe_instances({}, False)
        seen |= set(ended(proc, "web"))
    assert destroyer.returncode == 0
    assert seen == set() and ended(proc, "web") == []
    for iid in members[-5:]:  # the last 5 kept, as destroyed ones
        ok(logs(cli, iid))
    assert all(pruned(cli, iid) for iid in members[:-5])
