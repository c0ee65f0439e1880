"""Following our groups from the command line: the reference's ``infrakit event tail`` and
``infrakit metadata ls/cat`` against our group plugin and manager, and our own
``group ls -w``, ``group describe -w`` and ``group events --follow``, all real processes."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, Plugin, Processes, StartPlugin
from tests.helpers import PY, rpc, stop_process, wait_until
from tests.stacks import reference_binary, start_reference_group

DEADLINE = 30.0
"""Seconds a change may take to show: a bound, generous for a busy machine (each wait ends
as soon as the change shows)."""
def _spec(gid: str, size: int) -> dict[str, object]:
    return {"ID": gid, "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {"Note": gid}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Tags": {"tier": "web"}}}}}


def _members(sock: Path, gid: str) -> list[str]:
    desc = rpc(sock, "Group.DescribeGroup", {"ID": gid})["result"]["Description"]
    return sorted(m["ID"] for m in desc["Instances"] or [])


class Stack:
    """Our plugins, a group plugin (or a manager) among them, in the test's home."""

    def __init__(self, cli: Cli, home: Path, group: Plugin) -> None:
        self.cli, self.home, self.group = cli, home, group

    def commit(self, gid: str, size: int) -> None:
        spec = self.home / f"{gid}.json"
        spec.write_text(json.dumps(_spec(gid, size)))
        done = self.cli("group", "commit", str(spec))
        assert done.returncode == 0, done.stderr
        def converged() -> bool:
            desc = rpc(self.group.path, "Group.DescribeGroup", {"ID": gid})["result"]
            return bool(desc["Description"]["Converged"]) and \
                len(desc["Description"]["Instances"] or []) == size

        wait_until(converged, DEADLINE, what=f"{gid} to converge with {size} members")

    def subscribed(self, topic: str) -> None:
        """Wait until the group plugin has a stream open on ``topic`` (said in its log)."""
        wait_until(lambda: f"event stream opened on /{topic}" in self.group.output(), DEADLINE,
                   what=f"a subscription to {topic}")


@pytest.fixture(params=["group", "manager"])
def stack(request: pytest.FixtureRequest, start_plugin: StartPlugin, cli: Cli, home: Path,
          monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    group = start_plugin(request.param, "group", "--log", "5")
    stack = Stack(cli, home, group)
    stack.commit("cattle", 2)
    return stack


def _says(log: Path, text: str) -> bool:
    return text in log.read_text()


@pytest.fixture
def spawned(procs: Processes, home: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Commands a test runs in the background, reading their output; stopped at the end."""
    running: list[subprocess.Popen[str]] = []
    yield running
    for proc in running:
        stop_process(proc)


class Running:
    """A command running in the background; what it prints, as it comes."""

    def __init__(self, spawned: list[subprocess.Popen[str]], args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
        spawned.append(self.proc)
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=lines.extend, args=(stream,), daemon=True)
                         for stream, lines in ((self.proc.stdout, self._out),
                                               (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()

    @property
    def out(self) -> str:
        return "".join(self._out)

    @property
    def err(self) -> str:
        return "".join(self._err)

    def interrupt(self) -> int:
        """Ctrl-C; its exit status, once its output is all read."""
        self.proc.send_signal(signal.SIGINT)
        try:
            status = self.proc.wait(30)  # generous: the machine may be busy
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after Ctrl-C:\n{self.err[-3000:]}"
                                 ) from None
        for reader in self._readers:
            reader.join(10)
        return status


# -- the reference's CLI ---------------------------------------------------------------------

def test_the_reference_event_tail_prints_our_events_as_they_happen(
        stack: Stack, spawned: list[subprocess.Popen[str]]) -> None:
    ik = reference_binary("infrakit")
    tail = Running(spawned, [str(ik), "event", "tail", "--url", "str://{{ jsonEncode . }}",
                             "group/group/cattle/"])
    stack.subscribed("group/cattle/")
    stack.commit("cattle", 3)
    wait_until(lambda: '"Topic": "group/group/cattle/provisioned"' in tail.out, DEADLINE,
               what="the provision on the reference's event tail")
    text = tail.out
    assert '"Type": "committed"' in text
    assert '"Reason": "Adding 1 instances to increase the group size to 3"' in text
    new = sorted(set(_members(stack.group.path, "cattle")))
    assert any(f'"ID": "{member}"' in text for member in new)


def test_the_reference_metadata_reads_our_state(stack: Stack) -> None:
    ik = str(reference_binary("infrakit"))

    def run(*args: str) -> str:
        done = subprocess.run([ik, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "group" in run("metadata", "ls").split()
    assert run("metadata", "ls", "group/specs").split() == ["cattle"]
    listing = run("metadata", "ls", "-a", "group")
    assert "group/specs/cattle/Properties/Allocation/Size" in listing
    assert "group/groups/cattle/Instances/[1]/ID" in listing
    members = _members(stack.group.path, "cattle")
    assert run("metadata", "cat", "group/specs/cattle/Properties/Allocation/Size",
               "group/groups/cattle/Instances/[0]/Tags/infrakit.group",
               "group/status/cattle/Converged").split() == ["2", "cattle", "true"]
    assert run("metadata", "cat", "group/groups/cattle/Instances/[0]/ID").strip() in members
    assert "group/group/cattle/provisioned" in run("event", "ls", "-al", "group")


# -- our watch ---------------------------------------------------------------------------------

def _ours(*args: str) -> list[str]:
    """Our CLI, tracing its calls (Ctrl-C works in it even when the suite was started in
    the background: tests/conftest.py restores SIGINT for every process the tests start)."""
    return [PY, "-m", "infrakit", "--log", "5", *args]


def _calls(err: str, method: str) -> int:
    """How many times the command called ``method`` (its --log 5 trace)."""
    return sum(f'"method":"{method}"' in line for line in err.splitlines()
               if line.startswith("-> "))


def test_describe_watch_redraws_on_events_not_on_a_poll(
        stack: Stack, spawned: list[subprocess.Popen[str]], cli: Cli) -> None:
    watch = Running(spawned, _ours("group", "describe", "cattle", "-w", "--refresh", "60"))
    stack.subscribed("group/cattle/")

    def last() -> str:
        return watch.out.rsplit("\n\n", 1)[-1]

    stack.commit("cattle", 3)
    wait_until(lambda: ", 3 members" in last(), DEADLINE, what="the watch to show 3 members")
    victim = _members(stack.group.path, "cattle")[0]
    done = cli("instance", "--name", "instance-file", "destroy", victim)
    assert done.returncode == 0, done.stderr
    # the group replaces it; the watch shows the member gone without being asked
    wait_until(lambda: victim not in last() and "3 members" in last(), DEADLINE,
               what=f"the watch to drop {victim}")
    assert watch.interrupt() == 0, watch.err
    # one draw at the start and one per burst of events: not one every fraction of a second
    assert 2 <= _calls(watch.err, "Group.DescribeStatus") <= 8, watch.err


def test_ls_watch_shows_a_new_group_and_says_when_the_stream_drops(
        stack: Stack, spawned: list[subprocess.Popen[str]], start_plugin: StartPlugin,
        request: pytest.FixtureRequest) -> None:
    watch = Running(spawned, _ours("group", "ls", "-w", "--refresh", "60"))
    stack.subscribed("group/")
    stack.commit("sheep", 1)
    wait_until(lambda: "sheep" in watch.out, DEADLINE, what="the watch to show sheep")
    stop_process(stack.group.proc)
    kind = request.node.callspec.params["stack"]
    stack.group = start_plugin(kind, "group", "--log", "5")
    stack.subscribed("group/")
    wait_until(lambda: "the event stream is back" in watch.err, DEADLINE, what="the stream back")
    assert watch.interrupt() == 0, watch.err
    assert "the event stream was lost" in watch.err, watch.err


def test_events_follow_uses_the_stream(stack: Stack,
                                       spawned: list[subprocess.Popen[str]]) -> None:
    follow = Running(spawned, _ours("group", "events", "cattle", "--follow"))
    stack.subscribed("group/cattle/")
    stack.commit("cattle", 3)
    wait_until(lambda: "Adding 1 instances" in follow.out, DEADLINE,
               what="the commit on events --follow")
    wait_until(lambda: follow.out.count("provisioned") == 3, DEADLINE,
               what="the third member on events --follow")
    assert follow.interrupt() == 0, follow.err
    # polling every 0.5 s would be far more
    assert _calls(follow.err, "Group.Events") <= 6, follow.err


def test_watch_falls_back_to_polling_a_plugin_without_events(
        spawned: list[subprocess.Popen[str]], procs: Processes, plugins_dir: Path,
        home: Path, start_plugin: StartPlugin, cli: Cli) -> None:
    """The reference's group plugin publishes no events (its stream knows no topic): the
    watch says so, and polls."""
    reference_binary("infrakit")
    start_reference_group(procs, start_plugin, home, plugins_dir)
    spec = home / "cattle.json"
    spec.write_text(json.dumps(_spec("cattle", 1)))
    assert cli("group", "commit", str(spec)).returncode == 0
    watch = Running(spawned, _ours("group", "describe", "cattle", "-w"))
    wait_until(lambda: "1 members" in watch.out, DEADLINE, what="the first draw")
    spec.write_text(json.dumps(_spec("cattle", 2)))
    assert cli("group", "commit", str(spec)).returncode == 0
    wait_until(lambda: "2 members" in watch.out, DEADLINE, what="the watch to show 2")
    assert watch.interrupt() == 0, watch.err
    assert "the plugin publishes no events on group/cattle/ (invalid topic: group/cattle/); " \
        "refreshing every 2s" in watch.err
    # its tables: what it can tell, and why the rest is not there
    listed = cli("group", "ls")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "SIZE", "READY", "UP-TO-DATE", "AGE", "STATUS"]
    assert lines[1].strip() == "cattle"
    assert "does not serve Group.Summaries" in lines[2]
    assert json.loads(cli("group", "ls", "-o", "json").stdout) == [{"ID": "cattle"}]
    described = cli("group", "describe", "cattle").stdout
    assert "converged: " in described and "does not serve Group.DescribeStatus" in described


def test_on_a_terminal_the_watch_redraws_in_place(stack: Stack) -> None:
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(_ours("group", "describe", "cattle", "-w", "--refresh", "60"),
                            stdout=follower, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    os.close(follower)
    seen = bytearray()

    def screen() -> str:
        import select

        while select.select([leader], [], [], 0)[0]:
            try:
                seen.extend(os.read(leader, 65536))
            except OSError:  # the terminal is gone with the command
                break
        return seen.decode(errors="replace")

    try:
        wait_until(lambda: "infrakit group describe cattle" in screen(), DEADLINE,
                   what="the first draw")
        stack.subscribed("group/cattle/")
        stack.commit("cattle", 3)
        wait_until(lambda: ", 3 members" in screen().rsplit("\033[2J", 1)[-1], DEADLINE,
                   what="a redraw with 3 members")
        assert screen().count("\033[H\033[2J") >= 2  # drawn again from the top
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
        os.close(leader)


def test_managers_on_etcd_serve_state_from_any_and_events_from_the_leader(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path, etcd_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower reads the specs from etcd and the members through the leader; the events
    are published where they happen, by the leader."""
    import time

    from infrakit.rpc.client import RPCClient
    from infrakit.rpc.events import Subscription
    from infrakit.spi.event import Event

    monkeypatch.setenv("INFRAKIT_ETCD_PREFIX", f"/t{time.monotonic_ns()}/")
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    opts = ["--store", "etcd", "--etcd-endpoints", etcd_url, "--lease-ttl", "2"]
    socks = {}
    for name in ("group-a", "group-b"):  # a leads: it starts first
        log = home / "test-logs" / f"{name}.log"
        proc = procs.spawn([PY, "-m", "infrakit", "manager", "--name", name, *opts], log)
        socks[name] = procs.wait_ready(name, home / "plugins" / name, proc, log).path
        if name == "group-a":
            wait_until(functools.partial(_says, log, "leading"), 15, what="a to lead")
    leader, follower = socks["group-a"], socks["group-b"]
    with RPCClient(leader) as client:
        sub = Subscription(client, "group/")
        spec = home / "web.json"
        spec.write_text(json.dumps(_spec("web", 2)))
        done = cli("group", "--name", "group-b", "commit", str(spec))  # through the follower
        assert done.returncode == 0, done.stderr

        def provisioned() -> bool:
            got = sub.get(0.2)
            return isinstance(got, Event) and got.topic == "group/web/provisioned"

        wait_until(provisioned, 15, what="the leader's stream to say a member was made")
        sub.close()
    wait_until(lambda: len(_members(leader, "web")) == 2, 15, what="two members")
    assert rpc(follower, "Metadata.Get", {"Path": "specs/web/Properties/Allocation/Size"}
               )["result"] == {"Value": 2}
    assert rpc(follower, "Metadata.List", {"Path": "groups/web/Instances"})["result"] == \
        {"Nodes": ["[0]", "[1]"]}
    assert rpc(follower, "Event.List", {"Topic": "group"})["result"] == {"Nodes": []}
    assert rpc(leader, "Event.List", {"Topic": "group"})["result"] == {"Nodes": ["web"]}
