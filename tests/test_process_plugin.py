"""The instance-process plugin on its real socket: real process groups that outlive the
plugin, known by pid and start time, stopped with SIGTERM then SIGKILL; and a group of
them healed by the group plugin."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.atomicfile import write_atomic
from infrakit.plugins.instance import cgroups, process
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import EndedInstance, GroupSpec
from infrakit.spi.errors import CallFailed
from infrakit.spi.types import Description, Spec
from tests import leaks
from tests.conftest import Cli, Plugin, Processes, StartPlugin
from tests.helpers import require_engine, rpc, stop_process, wait_until

NAME = "instance-process"
HTTP = f"{sys.executable} -m http.server --bind 127.0.0.1 $PORT_HTTP"


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def in_session(sid: int) -> list[int]:
    """Living processes of a session (an instance and everything it started)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


class Proc:
    """A running instance-process plugin, its client, and its state directory."""

    def __init__(self, start_plugin: StartPlugin, home: Path) -> None:
        self._start = start_plugin
        self.state = home / "instance-process" / NAME
        self.plugin: Plugin = start_plugin(NAME)
        self.rpc = RPCClient(self.plugin.path, timeout=30)
        self.client = InstanceClient(self.rpc)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.rpc.close()
        self.plugin.proc.send_signal(sig)
        self.plugin.proc.wait(10)
        self.plugin = self._start(NAME)
        self.rpc = RPCClient(self.plugin.path, timeout=30)
        self.client = InstanceClient(self.rpc)

    def provision(self, init: str = "", **props: Any) -> str:
        return self.client.provision(Spec(properties=props, init=init, tags={"t": "1"}))

    def describe(self, properties: bool = True) -> dict[str, Description]:
        return {d.id: d for d in self.client.describe_instances({}, properties)}

    def pid(self, iid: str) -> int:
        return int(self.describe()[iid].properties["PID"])


@pytest.fixture
def proc(start_plugin: StartPlugin, home: Path, procs: Processes) -> Iterator[Proc]:
    with process_plugin(start_plugin, home, procs) as p:
        yield p


@contextlib.contextmanager
def process_plugin(start_plugin: StartPlugin, home: Path, procs: Processes
                   ) -> Iterator[Proc]:
    """A running instance-process plugin; at the end, it and its instances stopped."""
    p = Proc(start_plugin, home)
    try:
        yield p
    finally:
        p.rpc.close()
        # the instances outlive the plugin by design: end them with the test. First stop
        # every plugin of the test (a group plugin would replace the members killed), then
        # kill every instance of this home, by its environment: a record may be gone
        # (a test that fakes a reused pid makes the plugin drop it) or have no pid yet
        procs.stop_all()
        mine = f"INFRAKIT_HOME={home}"
        leaks.kill(leaks.instances_with(mine))
        wait_until(lambda: not leaks.instances_with(mine), 5, what="the instances to die")
        for record in p.state.glob("proc-*.json"):
            with contextlib.suppress(ValueError):  # a test may have damaged it
                cgroups.remove(json.loads(record.read_text()).get("Cgroups", []))


def test_an_instance_runs_init_then_command_in_its_own_dir_and_environment(
        proc: Proc) -> None:
    init = 'echo "$INFRAKIT_INSTANCE_ID|$INFRAKIT_LOGICAL_ID|$INFRAKIT_TAGS|$GREETING" > env'
    iid = proc.client.provision(Spec(
        properties={"Command": ["sleep", "600"], "Env": {"GREETING": "hi"},
                    "Ports": ["http"]},
        init=init, logical_id="db-1", tags={"role": "db"}))
    desc = proc.describe()[iid]
    assert desc.logical_id == "db-1" and desc.tags == {"role": "db"}
    facts = desc.properties
    assert set(facts) == {"PID", "Started", "Log", "WorkDir", "Address", "Ports"}
    assert facts["WorkDir"] == str(proc.state / iid) and facts["Log"].endswith(f"{iid}.log")
    assert facts["Address"] == "127.0.0.1"
    assert 1024 <= facts["Ports"]["http"] < 65536
    wait_until(lambda: (proc.state / iid / "env").exists(), 5, what="the init script")
    assert (proc.state / iid / "env").read_text().strip() == f'{iid}|db-1|{{"role": "db"}}|hi'
    assert Path(f"/proc/{facts['PID']}/cmdline").read_bytes().split(b"\0")[:2] == \
        [b"sleep", b"600"]  # the command replaced the shell: its pid is the instance's
    assert proc.client.describe_instances({"role": "db"}, False)[0].properties is not None


def test_instances_started_at_once_get_ports_of_their_own(proc: Proc) -> None:
    """Each port is free when chosen, but the instance binds it only later: two instances
    started at once must still not be handed the same one."""
    spec = {"Properties": {"Command": ["sleep", "600"], "Ports": ["a", "b"]}}
    answer = rpc(proc.plugin.path, "Instance.ProvisionEach", {"Specs": [spec] * 40},
                 timeout=60)
    made = [o["ID"] for o in answer["result"]["Results"]]
    ports = [p for d in proc.describe().values() for p in d.properties["Ports"].values()]
    assert len(made) == 40 and len(ports) == 80 and len(set(ports)) == 80


def test_instances_outlive_the_plugin_and_are_reported_again(proc: Proc) -> None:
    iid = proc.provision(Command="sleep 600")
    pid = proc.pid(iid)
    proc.restart(signal.SIGKILL)
    assert running(pid)
    assert proc.pid(iid) == pid
    proc.restart(signal.SIGTERM)  # a clean stop leaves them running too
    assert proc.pid(iid) == pid


def test_a_reused_pid_is_not_taken_for_the_instance(proc: Proc) -> None:
    iid = proc.provision(Command="sleep 600")
    record = proc.state / f"{iid}.json"
    proc.rpc.close()
    stop_process(proc.plugin.proc)
    data = json.loads(record.read_text())
    data["StartTicks"] += 1  # as if another process now had this pid
    record.write_text(json.dumps(data))
    proc.restart()
    assert iid not in proc.describe()


def test_a_process_started_but_never_recorded_is_killed_at_the_next_start(
        proc: Proc) -> None:
    """As if the plugin died between starting an instance and recording its pid: the
    record (written first) has no pid, and Provision never answered."""
    iid = proc.provision(Command="sleep 600")
    record = proc.state / f"{iid}.json"
    proc.rpc.close()
    stop_process(proc.plugin.proc)
    data = json.loads(record.read_text())
    pid, data["PID"], data["StartTicks"] = data["PID"], 0, 0
    record.write_text(json.dumps(data))
    proc.restart()
    assert proc.describe() == {} and not record.exists()
    wait_until(lambda: not in_session(pid), 5, what="the unrecorded process to be killed")


def test_recovery_never_touches_another_plugin_s_instance_of_the_same_id(
        proc: Proc, start_plugin: StartPlugin) -> None:
    other = start_plugin("instance-process", "other")
    with RPCClient(other.path, timeout=30) as conn:
        theirs = InstanceClient(conn).provision(Spec(properties={"Command": "sleep 600"}))
        their_pid = InstanceClient(conn).describe_instances({}, True)[0].properties["PID"]
    iid = proc.provision(Command="sleep 600")
    assert iid == theirs  # IDs are unique per plugin only
    record = proc.state / f"{iid}.json"
    proc.rpc.close()
    stop_process(proc.plugin.proc)
    data = json.loads(record.read_text())
    pid, data["PID"], data["StartTicks"] = data["PID"], 0, 0
    record.write_text(json.dumps(data))
    proc.restart()
    wait_until(lambda: not in_session(pid), 5, what="the unrecorded process to be killed")
    assert in_session(their_pid), "another plugin's instance was killed"


def _damage(proc: Proc, iid: str) -> bytes:
    """Stop the plugin and cut the record of ``iid`` short, as a full disk or a copy cut
    short would; returns what is left of it."""
    record = proc.state / f"{iid}.json"
    proc.rpc.close()
    stop_process(proc.plugin.proc)
    torn = record.read_bytes()[:25]
    record.write_bytes(torn)
    return torn


def _set_aside(proc: Proc, iid: str, torn: bytes) -> None:
    """The damaged record is kept beside the others, under a name no record has, and the
    log names it."""
    [aside] = proc.state.glob(f"{iid}.json.corrupt-*")
    assert aside.read_bytes() == torn
    assert str(proc.state / f"{iid}.json") in proc.plugin.output()
    assert aside.name in proc.plugin.output()


def test_a_damaged_record_is_set_aside_and_its_running_instance_kept(proc: Proc) -> None:
    """The record is rebuilt from what /proc says of the process that carries the
    instance's working directory in its environment: still described, still destroyed."""
    iid = proc.client.provision(Spec(properties={"Command": "sleep 600", "Ports": ["http"]},
                                     tags={"t": "1"}, logical_id="db-1"))
    before = proc.describe()[iid]
    torn = _damage(proc, iid)
    proc.restart()
    _set_aside(proc, iid, torn)
    after = proc.describe()[iid]
    assert (after.tags, after.logical_id) == (before.tags, before.logical_id)
    facts, was = after.properties, before.properties
    assert [facts[k] for k in ("PID", "WorkDir", "Log", "Ports")] == \
        [was[k] for k in ("PID", "WorkDir", "Log", "Ports")]
    assert abs(facts["Started"] - was["Started"]) < 2
    proc.restart()  # the rebuilt record is a record like any other
    assert proc.describe()[iid].properties["PID"] == was["PID"]
    proc.client.destroy(iid)
    assert not in_session(was["PID"]) and proc.describe() == {}


def test_a_damaged_record_of_a_dead_instance_leaves_no_orphan(proc: Proc) -> None:
    """Its shell is gone but a child it left runs on in the session: killed."""
    iid = proc.provision("sleep 600 &\nsleep 601")
    pid = proc.pid(iid)
    wait_until(lambda: len(in_session(pid)) >= 2, 5, what="the shell and its child")
    torn = _damage(proc, iid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not running(pid), 5, what="the shell to die")
    proc.restart()
    _set_aside(proc, iid, torn)
    assert proc.describe() == {}
    wait_until(lambda: not in_session(pid), 5, what="the orphaned child to be killed")


def test_a_group_keeps_its_member_whose_record_was_damaged(
        monkeypatch: pytest.MonkeyPatch, proc: Proc, start_plugin: StartPlugin) -> None:
    """No duplicate is started, and destroying the group stops the member."""
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    spec = GroupSpec(id="db", properties={
        "Allocation": {"Size": 1}, "Instance": {"Plugin": NAME, "Properties": {
            "Command": "sleep 600", "StopGrace": 1}},
        "Flavor": {"Plugin": "flavor-vanilla"}})
    with RPCClient(group.path, timeout=30) as conn:
        client = GroupClient(conn)
        client.commit_group(spec, False)
        wait_until(lambda: client.describe_group("db").converged, 20, what="the member")
        [(iid, desc)] = proc.describe().items()
        _damage(proc, iid)
        proc.restart()
        deadline = time.monotonic() + 1.5  # several passes of the group
        while time.monotonic() < deadline:
            assert list(proc.describe()) == [iid], "a duplicate was started"
            time.sleep(0.1)
        client.destroy_group("db")
    assert proc.describe() == {}
    assert not in_session(desc.properties["PID"])


def test_a_damaged_record_that_cannot_be_moved_aside_is_left_as_it_is(
        monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Nothing is written over it, even to record anew the instance that still runs."""
    plugin = process.ProcessInstancePlugin(home / "in-process")
    record = plugin.directory / "proc-1.json"
    record.write_bytes(b'{"ID": "proc-1", "PI')
    work = plugin.directory / "proc-1"
    work.mkdir()
    instance = subprocess.Popen(["sleep", "600"], start_new_session=True, env={
        **os.environ, "INFRAKIT_INSTANCE_ID": "proc-1", "INFRAKIT_INSTANCE_DIR": str(work)})

    def refuse(*_: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    try:
        monkeypatch.setattr(os, "rename", refuse)
        again = process.ProcessInstancePlugin(plugin.directory)
        assert record.read_bytes() == b'{"ID": "proc-1", "PI'
        assert again.describe_instances({}, False) == []
        assert again.provision(Spec(properties={"Command": "true"})) != "proc-1"
    finally:
        stop_process(instance, signal.SIGKILL)


def test_ids_are_not_reused_when_the_counter_is_lost(proc: Proc, home: Path) -> None:
    """``.next-id`` lost (a restore from an old backup, a cleanup by hand): the next ID
    comes after every one the plugin's files still name: an ended instance's working
    directory, a record moved aside, a log in the LogDir of a recorded instance."""
    logs = home / "logs-of-instances"

    def number(iid: str) -> int:
        return int(iid.split("-")[1])

    def next_after_losing_the_counter() -> int:
        proc.rpc.close()
        stop_process(proc.plugin.proc)
        (proc.state / ".next-id").unlink()
        proc.restart()
        return number(proc.provision(Command="sleep 600"))

    ended = proc.provision("exit 0")  # its working directory and log stay for a while
    wait_until(lambda: ended not in proc.describe(), 5, what="the instance to end")
    assert next_after_losing_the_counter() > number(ended)

    proc.provision(Command="sleep 600", LogDir=str(logs))
    cleaned = proc.provision("exit 0", LogDir=str(logs))
    wait_until(lambda: cleaned not in proc.describe(), 5, what="the instance to end")
    shutil.rmtree(proc.state / cleaned)  # cleaned up by hand: only its log is left
    assert next_after_losing_the_counter() > number(cleaned)

    torn = proc.provision(Command="sleep 600")
    pid = proc.pid(torn)
    _damage(proc, torn)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not running(pid), 5, what="the instance to die")
    proc.restart()  # sets its record aside: that file is all that names it now
    shutil.rmtree(proc.state / torn)
    assert next_after_losing_the_counter() > number(torn)


def test_a_killed_instance_is_no_longer_described_and_its_leftovers_die(proc: Proc) -> None:
    iid = proc.provision("sleep 600 &\nsleep 601")  # a child in the background, then the shell
    pid = proc.pid(iid)
    wait_until(lambda: len(in_session(pid)) >= 2, 5, what="the shell and its children")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: iid not in proc.describe(), 5, what="the dead instance to go")
    wait_until(lambda: not in_session(pid), 5, what="the orphaned child to be killed")
    assert not (proc.state / f"{iid}.json").exists()
    assert (proc.state / iid / f"{iid}.log").exists()  # kept for a post-mortem


def test_destroy_terms_the_whole_group_then_kills_after_the_grace(proc: Proc) -> None:
    polite = proc.provision("sleep 600 &\nsleep 601")
    stubborn = proc.provision("trap '' TERM\nsleep 602 &\nexec sleep 603", StopGrace=0.5)
    pids = {iid: proc.pid(iid) for iid in (polite, stubborn)}
    wait_until(lambda: all(len(in_session(p)) >= 2 for p in pids.values()), 5,
               what="every process to start")
    start = time.monotonic()
    proc.client.destroy(polite)
    assert time.monotonic() - start < 0.5 and not in_session(pids[polite])
    start = time.monotonic()
    proc.client.destroy(stubborn)
    assert 0.5 <= time.monotonic() - start < 3 and not in_session(pids[stubborn])
    assert proc.describe() == {}
    assert (proc.state / polite).is_dir()  # kept for a post-mortem: see test_retention


def _label_refused(proc: Proc, iid: str) -> str:
    with pytest.raises(CallFailed) as err:
        proc.client.label(iid, {"a": "b"})
    return err.value.reason


def test_destroy_of_an_instance_already_destroyed_succeeds(proc: Proc) -> None:
    iid = proc.provision(Command="sleep 600")
    pid = proc.pid(iid)
    proc.client.destroy(iid)
    proc.client.destroy(iid)  # a retried destroy
    assert not in_session(pid) and proc.describe() == {}
    assert f"{iid} was already gone" in proc.plugin.output()
    reason = _label_refused(proc, iid)
    assert repr(iid) in reason and "gone" in reason and "cannot label" in reason


def test_destroy_of_an_instance_killed_behind_the_plugins_back_succeeds(proc: Proc) -> None:
    unseen, seen, keep = (proc.provision(Command="sleep 600") for _ in range(3))
    pids = {iid: proc.pid(iid) for iid in (unseen, seen)}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(running(p) for p in pids.values()), 5, what="both to die")
    # killed and not described since: what is gone cannot be labelled
    reason = _label_refused(proc, unseen)
    assert repr(unseen) in reason and "ended" in reason and "cannot label" in reason
    proc.client.destroy(unseen)
    assert unseen not in proc.describe() and (proc.state / unseen).is_dir()  # kept a while
    # killed, seen to end, and then the plugin restarted: it no longer remembers the end
    wait_until(lambda: seen not in proc.describe(), 5, what=f"{seen} to be seen gone")
    proc.restart()
    proc.client.destroy(seen)
    proc.client.destroy(unseen)
    assert f"{seen} was already gone" in proc.plugin.output()
    assert f"{unseen} was already gone" in proc.plugin.output()
    assert list(proc.describe()) == [keep]
    proc.client.destroy(keep)


@pytest.mark.parametrize(("props", "message"), [
    ({"Command": ["no-such-program-here"]}, "Properties.Command: 'no-such-program-here' is not "
                                            "an executable program on PATH"),
    ({"Command": "/nonexistent/run --x"}, "Properties.Command: '/nonexistent/run' is not an "
                                          "executable program"),
    ({"Command": "sleep 1", "LogDir": "/etc/passwd/logs"},
     "Properties.LogDir: cannot create '/etc/passwd/logs': '/etc/passwd' is not a directory"),
    ({"Command": "sleep 1", "LogDir": "../logs"},
     "Properties.LogDir: '../logs' must be an absolute path"),
    ({"Command": "sleep 1", "Ports": ["a b"]}, "Properties.Ports: 'a b' is not a port name"),
    ({"Command": "sleep 1", "Ports": ["\u00e9"]}, "Properties.Ports: '\u00e9' is not a port name"),
    ({"Command": "sleep 1", "Env": {"A=B": "1"}}, "Properties.Env: 'A=B' is not a variable name"),
    ({"Command": "sleep 1", "Env": {"A.B": "1"}}, "Properties.Env: 'A.B' is not a variable name"),
    ({"Command": "sleep 1", "Env": {"": "1"}}, "Properties.Env: '' is not a variable name"),
    ({"Command": "sleep 1", "Env": {"1A": "1"}}, "Properties.Env: '1A' is not a variable name"),
    ({"Command": "sleep 1", "Env": {"A\u0000": "1"}}, "Properties.Env: 'A\\x00' is not a variable"),
    ({"Command": "sleep 1", "Env": {"A": "x\u0000y"}},
     "Properties.Env: the value of 'A' holds a NUL byte"),
    ({"Command": "sleep 1\u0000"}, "Properties.Command: holds a NUL byte"),
    ({"Command": "sleep 1; \u0000"}, "Properties.Command: holds a NUL byte"),
    ({"Command": ["sleep", "1\u0000"]}, "Properties.Command: holds a NUL byte"),
    ({"Command": "sleep 1", "LogDir": "/tmp/a\u0000b"}, "Properties.LogDir: holds a NUL byte"),
    ({"Comand": "sleep 1"}, "Comand"),
    ({}, "nothing to run"),
])
def test_bad_properties_are_refused_and_nothing_runs(proc: Proc, props: dict[str, Any],
                                                    message: str) -> None:
    if props:
        with pytest.raises(CallFailed) as validated:
            proc.client.validate(props)
        assert message in validated.value.reason
    with pytest.raises(CallFailed) as provisioned:
        proc.client.provision(Spec(properties=props))
    assert message in provisioned.value.reason
    assert proc.describe() == {} and not list(proc.state.glob("proc-*"))


@pytest.mark.parametrize(("spec", "message"), [
    (Spec(logical_id="db\u00001"), "LogicalID: 'db\\x001' holds a NUL byte"),
    (Spec(tags={"role": "db\u0000"}), "Tags: the value of 'role' holds a NUL byte"),
    (Spec(tags={"ro\u0000le": "db"}), "Tags: 'ro\\x00le' holds a NUL byte"),
])
def test_a_spec_the_process_cannot_be_given_is_refused_and_nothing_runs(
        proc: Proc, spec: Spec, message: str) -> None:
    spec = Spec(properties={"Command": ["sleep", "600"]}, logical_id=spec.logical_id,
                tags=spec.tags)
    for _ in range(3):
        with pytest.raises(CallFailed) as provisioned:
            proc.client.provision(spec)
        assert message in provisioned.value.reason
    assert proc.describe() == {} and not list(proc.state.glob("proc-*"))


@pytest.mark.parametrize("failure", [ValueError("spawn"), KeyboardInterrupt()],
                         ids=["ValueError", "KeyboardInterrupt"])
def test_whatever_fails_in_provision_leaves_nothing_behind(
        monkeypatch: pytest.MonkeyPatch, home: Path, failure: BaseException) -> None:
    plugin = process.ProcessInstancePlugin(home / "in-process")

    def fail(*_: Any, **__: Any) -> int:
        raise failure

    monkeypatch.setattr(os, "posix_spawn", fail)
    with pytest.raises(type(failure)):
        plugin.provision(Spec(properties={"Command": ["sleep", "600"], "Ports": ["a"]}))
    assert not list(plugin.directory.glob("proc-*")) and not len(plugin._ports)


def test_an_instance_started_but_not_recorded_is_stopped(monkeypatch: pytest.MonkeyPatch,
                                                         home: Path) -> None:
    """The pid cannot be written (a full disk, say): the process that started is killed,
    so that nothing runs that no record knows of."""
    plugin = process.ProcessInstancePlugin(home / "in-process")
    spawned: list[int] = []
    spawn = os.posix_spawn

    def spawn_and_note(*args: Any, **kwargs: Any) -> int:
        spawned.append(spawn(*args, **kwargs))
        return spawned[-1]

    def write_once(path: Path, data: bytes) -> None:
        if spawned:
            raise OSError(28, "No space left on device")
        write_atomic(path, data)

    monkeypatch.setattr(os, "posix_spawn", spawn_and_note)
    monkeypatch.setattr(process, "write_atomic", write_once)
    try:
        with pytest.raises(OSError):
            plugin.provision(Spec(properties={"Command": ["sleep", "600"],
                                              "LogDir": str(home / "logs")}))
        assert spawned and not running(spawned[0]) and not in_session(spawned[0])
        assert not list(plugin.directory.glob("proc-*")) and not list((home / "logs").iterdir())
    finally:
        for member in in_session(spawned[0]) if spawned else ():
            os.kill(member, signal.SIGKILL)


def test_validate_creates_no_log_dir_and_provision_does(proc: Proc, home: Path) -> None:
    logs = home / "logs-made-later" / "deep"
    proc.client.validate({"Command": "sleep 600", "LogDir": str(logs)})
    assert not logs.parent.exists()  # a validated (or refused) call changes nothing
    iid = proc.provision(Command="sleep 600", LogDir=str(logs))
    assert proc.describe()[iid].properties["Log"] == str(logs / f"{iid}.log")


def test_a_log_planted_as_a_link_is_not_written_through(proc: Proc, home: Path) -> None:
    """A link where the next instance's log goes: the instance is refused, the file it
    leads to is neither truncated nor appended to, and the link stays for a look."""
    logs = home / "logs-of-instances"
    victim = home / "victim"
    victim.write_text("precious\n")
    first = proc.provision(Command="sleep 600", LogDir=str(logs))
    planted = logs / f"proc-{int(first.split('-')[1]) + 1}.log"
    planted.symlink_to(victim)
    with pytest.raises(CallFailed) as refused:
        proc.provision(Command="echo leaked", LogDir=str(logs))
    assert str(planted) in refused.value.reason
    assert victim.read_text() == "precious\n" and planted.is_symlink()
    assert list(proc.describe()) == [first]


@pytest.mark.parametrize("how", ["owner", "mode"])
def test_a_log_dir_someone_else_controls_is_refused(proc: Proc, home: Path, how: str) -> None:
    if how == "owner" and os.geteuid() != 0:
        pytest.skip("staging another user's directory takes root (os.chown)")
    logs = home / "logs-of-instances"
    logs.mkdir(mode=0o700)
    if how == "owner":
        os.chown(logs, 65534, 65534)
    else:
        os.chmod(logs, 0o777)
    props = {"Command": "sleep 600", "LogDir": str(logs)}
    with pytest.raises(CallFailed) as validated:
        proc.client.validate(props)
    with pytest.raises(CallFailed) as provisioned:
        proc.client.provision(Spec(properties=props))
    mode = f"{stat.S_IMODE(logs.stat().st_mode):o}"
    for refused in (validated, provisioned):
        assert f"Properties.LogDir: {str(logs)!r}" in refused.value.reason
        assert f"owner uid {logs.stat().st_uid}, mode {mode}" in refused.value.reason
    assert proc.describe() == {} and not list(logs.iterdir())


def test_destroy_of_an_unknown_id_names_it(proc: Proc) -> None:
    for bad in ("proc-999", "../proc-1", "instance-1"):
        with pytest.raises(CallFailed) as err:
            proc.client.destroy(bad)
        assert f"no instance {bad!r}" in err.value.reason


def test_a_limit_where_cgroups_are_missing_is_refused(
        monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin, home: Path) -> None:
    monkeypatch.setenv("INFRAKIT_CGROUP_ROOT", str(home / "no-cgroups"))
    p = Proc(start_plugin, home)
    try:
        with pytest.raises(CallFailed) as err:
            p.client.provision(Spec(properties={"Command": "sleep 1",
                                                "Limits": {"MemoryMB": 64}}))
        assert "Properties.Limits: cgroups are not available here" in err.value.reason
        assert "memory limit cannot be enforced" in err.value.reason
        assert p.describe() == {}
    finally:
        p.rpc.close()


def _cgroups_usable() -> bool:
    root = Path("/sys/fs/cgroup")
    v1 = all(os.access(root / c, os.W_OK) for c in ("memory", "pids", "cpu"))
    v2 = (root / "cgroup.controllers").exists() and os.access(root, os.W_OK)
    return v1 or v2


def test_limits_put_the_instance_in_its_cgroups(proc: Proc) -> None:
    require_engine(None if _cgroups_usable() else "no writable cgroups here")
    iid = proc.provision(Command="sleep 600", Limits={"MemoryMB": 64, "Pids": 20, "CPUs": 0.5})
    pid = proc.pid(iid)

    def joined() -> list[str] | None:
        """The instance's cgroups, once it has joined all of them: its first acts, one
        hierarchy after another, before anything of its own runs."""
        lines = [line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                 if f"/{NAME}-" in line and line.endswith(f"/{iid}")]
        controllers = {line.split(":")[1] for line in lines}
        return lines if "" in controllers or {"memory", "pids", "cpu"} <= controllers \
            else None

    groups = wait_until(joined, 5, what="the instance to join its cgroups") or []
    v1 = {line.split(":")[1]: line.split(":")[2] for line in groups}
    if "memory" in v1:
        limit = Path("/sys/fs/cgroup/memory", v1["memory"].lstrip("/"), "memory.limit_in_bytes")
        assert limit.read_text().strip() == str(64 * 1024 * 1024)
        assert {"memory", "pids", "cpu"} <= set(v1)
    proc.client.destroy(iid)
    for controller, path in v1.items():
        assert not Path("/sys/fs/cgroup", controller or "", path.lstrip("/")).exists()


def test_a_group_of_processes_heals_a_killed_member_and_leaves_nothing_behind(
        monkeypatch: pytest.MonkeyPatch, proc: Proc, start_plugin: StartPlugin) -> None:
    poll = 0.2
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", str(poll))
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    spec = GroupSpec(id="web", properties={
        "Allocation": {"Size": 3},
        "Instance": {"Plugin": NAME, "Properties": {"Command": HTTP, "Ports": ["http"],
                                                    "StopGrace": 2}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {
            "Health": {"TCP": "127.0.0.1:{{ .Properties.Ports.http }}", "Timeout": 1}}},
        "StartupGrace": 5, "HealthGrace": 1})
    with RPCClient(group.path, timeout=30) as conn:
        client = GroupClient(conn)
        client.commit_group(spec, False)
        wait_until(lambda: client.describe_group("web").converged, 20, what="3 healthy members")
        before = proc.describe()
        victim = sorted(before)[0]
        victim_pid = int(before[victim].properties["PID"])
        os.kill(victim_pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: victim not in proc.describe() and len(proc.describe()) == 3, 10,
                   interval=0.02, what="a replacement")
        # the next pass after the kill learns how it ended; it died young (within
        # StartupGrace + HealthGrace), so the first backoff step (1 s) comes first
        assert time.monotonic() - killed <= 1 + 2 * poll + 0.5
        wait_until(lambda: client.describe_group("web").converged, 20, what="healthy again")
        [heir] = [m for m in client.describe_status("web").members if m.restarts]
        assert heir.restarts == 1
        assert heir.last_exit.startswith(f"{victim} killed by signal 9 (SIGKILL) after ")
        assert "(died young); last output: Serving HTTP on 127.0.0.1" in heir.last_exit
        pids = [int(d.properties["PID"]) for d in proc.describe().values()]
        client.destroy_group("web")
    assert proc.describe() == {}
    assert not any(in_session(pid) for pid in pids)


def test_a_shell_line_command_runs_whole_and_its_end_is_reported(proc: Proc) -> None:
    iid = proc.provision(Command="echo a; echo b > out; exit 2")

    def ended() -> list[EndedInstance]:
        return [e for e in proc.client.describe_ended({"t": "1"}) if e.id == iid]

    wait_until(lambda: bool(ended()), 5, what="the instance's end to be reported")
    [end] = ended()
    assert (end.reason, end.exit_status, end.crashed) == ("exited with status 2", 2, True)
    assert end.output == ["a"] and end.started <= end.ended
    assert (proc.state / iid / "out").read_text() == "b\n"  # the whole line ran
    assert proc.client.describe_ended({"t": "other"}) == []
    assert iid not in proc.describe()
    proc.client.destroy(iid)  # no longer reported as ended; its files kept a while
    assert (proc.state / iid / "out").exists() and not ended()


def test_an_instance_killed_by_a_signal_says_which(proc: Proc) -> None:
    iid = proc.provision(Command="sleep 600")
    os.kill(proc.pid(iid), signal.SIGKILL)
    wait_until(lambda: any(e.id == iid for e in proc.client.describe_ended({})), 5,
               what="the instance's end to be reported")
    [end] = [e for e in proc.client.describe_ended({}) if e.id == iid]
    assert end.reason == "killed by signal 9 (SIGKILL)" and end.exit_status is None


# -- Instance.Logs --------------------------------------------------------------------------


def _read_until(proc: Proc, iid: str, offset: str, wanted: str,
                deadline: float = 10.0) -> tuple[str, str]:
    """Poll the log from ``offset`` (as ``logs -f`` does) until ``wanted`` shows; returns
    the text read and the cursor after it."""
    text = ""
    end = time.monotonic() + deadline
    while wanted not in text:
        assert time.monotonic() < end, f"{wanted!r} never came; read {text!r}"
        chunk = proc.client.logs(iid, offset, None, False)
        text, offset = text + chunk.data, chunk.offset
        if not chunk.data:
            time.sleep(0.05)
    return text, offset


def test_logs_read_a_member_s_output_and_follow_it_with_the_cursor(proc: Proc) -> None:
    iid = proc.provision(Command="for i in 1 2 3; do echo line $i; done; echo err >&2; "
                                 "read x < go; echo after; sleep 600", init="mkfifo go")
    text, offset = _read_until(proc, iid, "", "err\n")
    assert text == "line 1\nline 2\nline 3\nerr\n"
    assert proc.client.logs(iid, "", 2, False).data == "line 3\nerr\n"
    assert proc.client.logs(iid, "", 0, False).data == ""
    again = proc.client.logs(iid, offset, None, False)
    assert again.data == "" and again.offset == offset and not again.ended
    (proc.state / iid / "go").write_text("\n")
    more, _ = _read_until(proc, iid, offset, "after\n")
    assert more == "after\n"  # only what came after the cursor


def test_an_ended_member_s_log_is_still_read_and_says_it_ended(proc: Proc) -> None:
    iid = proc.provision(Command="echo bye; exit 4")
    wait_until(lambda: proc.client.logs(iid, "", None, False).ended, 10,
               what="the instance to end")
    for previous in (False, True):
        last = proc.client.logs(iid, "", None, previous)
        assert last.data == "bye\n" and last.ended
    assert proc.client.logs(iid, last.offset, None, True) == \
        type(last)(data="", offset=last.offset, ended=True)
    proc.client.destroy(iid)  # its files stay a while yet: see test_retention
    assert proc.client.logs(iid, "", None, True).data == "bye\n"


def test_a_log_replaced_by_a_link_is_not_read_through(proc: Proc, home: Path) -> None:
    """Logs does not hand out what a link put in the log's place leads to."""
    victim = home / "victim"
    victim.write_text("secret\n")
    iid = proc.provision(Command="echo bye; exit 4")
    wait_until(lambda: proc.client.logs(iid, "", None, False).ended, 10,
               what="the instance to end")
    log = proc.state / iid / f"{iid}.log"
    log.unlink()
    log.symlink_to(victim)
    with pytest.raises(CallFailed, match="symbolic link"):
        proc.client.logs(iid, "", None, False)


def test_logs_refuse_an_unknown_id_a_bad_cursor_and_previous_of_a_running_one(
        proc: Proc) -> None:
    iid = proc.provision(Command="sleep 600")
    with pytest.raises(CallFailed, match="has made none by that ID"):
        proc.client.logs("proc-999", "", None, False)
    with pytest.raises(CallFailed, match="not an ID of this plugin"):
        proc.client.logs("web-1", "", None, False)
    with pytest.raises(CallFailed, match="not a cursor"):
        proc.client.logs(iid, "x", None, False)
    with pytest.raises(CallFailed, match=f"Previous: instance '{iid}' has not ended"):
        proc.client.logs(iid, "", None, True)


def test_a_log_is_read_a_bounded_piece_at_a_time_never_half_a_character(tmp_path: Path
                                                                        ) -> None:
    from infrakit.plugins.instance import logfile

    log = tmp_path / "x.log"
    log.write_bytes("aaaa\nbbbb\ncc\u00e9\u00e9\u00e9\n".encode())  # 19 bytes
    first = logfile.read(log, "", None, ended=True, limit=12)
    assert first == type(first)(data="cc\u00e9\u00e9\u00e9\n", offset="19", ended=True)
    cut = logfile.read(log, "3", None, ended=True, limit=12)
    assert cut == type(cut)(data="a\nbbbb\ncc\u00e9", offset="14", ended=False)
    rest = logfile.read(log, cut.offset, None, ended=True, limit=12)
    assert rest.data == "\u00e9\u00e9\n" and rest.ended
    assert logfile.read(log, "", 2, ended=False).data == "bbbb\ncc\u00e9\u00e9\u00e9\n"
    assert logfile.read(log, "", 9, ended=False).data == "aaaa\nbbbb\ncc\u00e9\u00e9\u00e9\n"
    assert logfile.read(tmp_path / "none.log", "", None, ended=True).ended


def test_the_logs_command_prints_follows_until_the_end_and_names_what_failed(
        proc: Proc, cli: Cli, instance_file: Path) -> None:
    logs = ("instance", "--name", NAME, "logs")
    iid = proc.provision(Command="echo one; echo two; read x < go; echo three",
                         init="mkfifo go")
    wait_until(lambda: "two" in proc.client.logs(iid, "", None, False).data, 10,
               what="the instance's output")
    done = cli(*logs, iid)
    assert (done.returncode, done.stdout) == (0, "one\ntwo\n"), done.stderr
    assert cli(*logs, iid, "--tail", "1").stdout == "two\n"
    refused = cli(*logs, iid, "--previous")
    assert refused.returncode == 1 and "has not ended" in refused.stderr
    assert f"'{NAME}'" in refused.stderr and iid in refused.stderr
    # -f prints what comes, and ends when the instance does
    (proc.state / iid / "go").write_text("\n")
    followed = cli(*logs, iid, "-f", timeout=30)
    assert (followed.returncode, followed.stdout) == (0, "one\ntwo\nthree\n"), followed.stderr
    assert cli(*logs, iid, "--previous").stdout == "one\ntwo\nthree\n"
    unknown = cli(*logs, "proc-999")
    assert unknown.returncode == 1
    assert f"Instance plugin '{NAME}': logs of proc-999: " in unknown.stderr
    none = cli("instance", "--name", "instance-file", "logs", "instance-1")
    assert none.returncode == 1
    assert "Instance plugin 'instance-file' has no logs (it does not serve Instance.Logs)" \
        in none.stderr


def test_logs_follow_stops_quietly_on_ctrl_c(proc: Proc, home: Path) -> None:
    import subprocess

    iid = proc.provision(Command="echo up; sleep 600")
    follower = subprocess.Popen(
        [sys.executable, "-m", "infrakit", "instance", "--name", NAME, "logs", "-f", iid],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=home)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "up\n"  # it follows by now
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
        assert follower.returncode == 130 and "Traceback" not in err, err
    finally:
        stop_process(follower)
