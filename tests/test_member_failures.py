"""When members fail: failed launches, crash loops, failed rollouts, a flavor that does not
answer, and destroys that always end. Real plugin processes over real sockets: the
``instance-process`` plugin, ``flavor-vanilla`` with its probes, and the group plugin,
polling fast."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import GroupAPI, InstanceAPI
from infrakit.spi.group import GroupEvent, GroupStatus
from tests.conftest import Cli, Plugin, StartPlugin
from tests.helpers import wait_until

POLL = 0.2
HTTP = f"{sys.executable} -m http.server --bind 127.0.0.1 $PORT_HTTP"
PROBE = "http://127.0.0.1:{{ .Properties.Ports.http }}"


class Stack:
    """The three plugins, clients to the group and the instance plugin, and what a test
    needs to watch the members."""

    def __init__(self, start_plugin: StartPlugin, home: Path) -> None:
        self.start_plugin = start_plugin
        self.state = home / "instance-process" / "instance-process"
        self.instance_plugin = start_plugin("instance-process")
        self.flavor = start_plugin("flavor-vanilla")
        self.group_plugin = start_plugin("group")
        self._rpcs: dict[int, RPCClient] = {}

    def _rpc(self, plugin: Plugin) -> RPCClient:
        """One connection per plugin process: a restarted plugin gets a new one."""
        rpc = self._rpcs.get(plugin.proc.pid)
        if rpc is None:
            rpc = self._rpcs[plugin.proc.pid] = RPCClient(plugin.path, timeout=30)
        return rpc

    def group(self) -> GroupAPI:
        return GroupClient(self._rpc(self.group_plugin))

    def instances(self) -> InstanceAPI:
        return InstanceClient(self._rpc(self.instance_plugin))

    def commit(self, size: int = 3, command: str = "sleep 600", health: Any = None,
               **extra: Any) -> str:
        props: dict[str, Any] = {
            "Allocation": {"Size": size},
            "Instance": {"Plugin": "instance-process",
                         "Properties": {"Command": command, "Ports": ["http"], "StopGrace": 1}},
            "Flavor": {"Plugin": "flavor-vanilla",
                       "Properties": {"Health": health} if health else {}},
            **extra}
        return self.group().commit_group(GroupSpec(id="web", properties=props), False)

    def status(self) -> GroupStatus:
        return self.group().describe_status("web")

    def alive(self) -> set[str]:
        return {d.id for d in self.instances().describe_instances({"infrakit.group": "web"},
                                                                   False)}

    def launched(self) -> int:
        """Instances made so far: IDs are numbered and never reused."""
        ids = self.alive() | {e.id for e in self.instances().describe_ended({})}
        return max((int(i.removeprefix("proc-")) for i in ids), default=0)

    def close(self) -> None:
        for rpc in self._rpcs.values():
            rpc.close()
        self.group_plugin.proc.terminate()  # first, so that it replaces nothing killed below
        self.group_plugin.proc.wait(30)
        # members outlive their plugin by design: end them with the test
        for record in self.state.glob("proc-*.json"):
            pid = json.loads(record.read_text())["PID"]
            if pid > 1:
                with_session_killed(pid)


def with_session_killed(sid: int) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(raw[raw.rindex(b")") + 2:].split()[3]) == sid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin,
          home: Path) -> Iterator[Stack]:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", str(POLL))
    monkeypatch.setenv("INFRAKIT_CALL_TIMEOUT", "3")
    s = Stack(start_plugin, home)
    try:
        yield s
    finally:
        s.close()


def test_a_command_that_exits_at_once_fails_its_launch_and_backs_off(stack: Stack,
                                                                     cli: Cli) -> None:
    stack.commit(3, "echo starting; exit 2")

    def known() -> GroupStatus | None:
        status = stack.status()  # known as failed, not waited for until a deadline
        return status if "failed launch" in status.backoff and not status.in_flight else None

    # (ProvisionDeadline is 600 s: 10 s tells a known failure from a deadline)
    status = wait_until(known, 10, what="the failed launches to be known")
    assert status is not None
    assert "exited with status 2" in status.backoff
    assert "last output: starting" in status.backoff
    assert "backoff: next launch in" in cli("group", "describe", "-v", "web").stdout
    time.sleep(4)  # at 1 s, 2 s and 4 s of backoff: three more rounds at most
    assert stack.launched() <= 12, "launched without backing off"
    done = cli("group", "destroy", "web")
    assert done.returncode == 0, done.stderr
    assert stack.alive() == set()


def test_a_member_that_dies_young_leaves_its_exit_to_its_heir_and_delays_grow(
        stack: Stack) -> None:
    stack.commit(1, "sleep 0.3; echo bye; exit 3", HealthGrace=30)
    launches: dict[str, float] = {}

    def heir_of_two() -> bool:
        for iid in stack.alive():
            launches.setdefault(iid, time.monotonic())
        return any(m.restarts >= 3 for m in stack.status().members)

    wait_until(heir_of_two, 15, interval=0.05, what="a member after three ends")
    [heir] = [m for m in stack.status().members if m.restarts >= 3]
    assert "exited with status 3 after 0." in heir.last_exit
    assert "(died young); last output: bye" in heir.last_exit
    assert heir.last_output == ["bye"]
    starts = sorted(launches.values())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[-1] > gaps[0] + 0.5, f"the delays did not grow: {gaps}"


def test_a_rolling_update_whose_new_command_fails_halts_and_old_members_serve(
        stack: Stack) -> None:
    stack.commit(3)
    wait_until(lambda: stack.status().converged, 10, what="3 members")
    old = stack.alive()
    first_new = stack.launched() + 1
    stack.commit(3, "sleep --no-such-flag", UpdateFailureLimit=3)
    peak = 0

    def halted() -> bool:
        nonlocal peak
        peak = max(peak, len(stack.alive()))
        return bool(stack.status().update_halted)

    wait_until(halted, 15, interval=0.05, what="the update to halt")
    status = stack.status()
    assert status.update_halted.startswith("3 members of the new config failed (last: ")
    assert "exited with status 1" in status.update_halted
    assert old <= stack.alive(), "old members were destroyed by a failing update"
    assert peak <= 4, "more than Size + MaxSurge members alive"
    time.sleep(1)
    assert stack.launched() - first_new + 1 <= 4, "the update went on launching"


def test_old_members_keep_the_health_check_they_were_made_with(stack: Stack) -> None:
    stack.commit(2, HTTP, {"HTTP": PROBE + "/"}, HealthGrace=1)
    wait_until(lambda: stack.status().converged, 15, what="2 healthy members")
    old = stack.alive()
    stack.commit(2, HTTP, {"HTTP": PROBE + "/healthz"}, HealthGrace=1, UpdateFailureLimit=2)
    judged: list[GroupStatus] = []

    def halted() -> bool:
        judged.append(stack.status())
        return bool(judged[-1].update_halted)

    wait_until(halted, 20, interval=0.1, what="the update to halt")
    for status in judged:
        assert all(m.health == "healthy" for m in status.members if m.id in old)
        assert not status.breaker_open
    assert "HTTP 404" in judged[-1].update_halted
    assert old <= stack.alive()


def test_a_flavor_that_does_not_answer_makes_health_unknown_with_the_reason(
        stack: Stack) -> None:
    stack.commit(2, HTTP, {"TCP": "127.0.0.1:{{ .Properties.Ports.http }}"})
    wait_until(lambda: stack.status().converged, 15, what="2 healthy members")
    members = stack.alive()
    stack.flavor.proc.kill()
    stack.flavor.proc.wait(5)

    def unknown() -> bool:
        status = stack.status()
        return bool(status.members) and all(m.health == "unknown" for m in status.members)

    wait_until(unknown, 5, what="the health to be unknown")
    status = stack.status()
    assert status.health_unknown.startswith("flavor plugin 'flavor-vanilla' unreachable since ")
    assert "not reachable" in status.members[0].reason
    assert status.converged  # the counts and specs are right; the health is unknown
    assert stack.alive() == members
    stack.flavor = stack.start_plugin("flavor-vanilla")
    wait_until(lambda: all(m.health == "healthy" for m in stack.status().members), 5,
               what="the health to come back")
    assert stack.status().health_unknown == ""


def test_a_young_member_is_starting_with_the_probe_s_reason(stack: Stack) -> None:
    stack.commit(1, f"sleep 3; exec {HTTP}", {"TCP": "127.0.0.1:{{ .Properties.Ports.http }}"},
                 HealthGrace=30)
    wait_until(lambda: bool(stack.status().members), 5, what="a member")
    time.sleep(2 * POLL)
    [member] = stack.status().members
    assert member.health == "starting"
    assert member.reason.endswith(": connection refused")


def test_a_destroy_whose_caller_gives_up_ends_and_nothing_comes_back(stack: Stack,
                                                                     cli: Cli) -> None:
    stack.commit(2)
    wait_until(lambda: stack.status().converged, 10, what="2 members")
    os.kill(stack.flavor.proc.pid, signal.SIGSTOP)
    try:
        gave_up = cli("group", "--timeout", "1", "destroy", "web")
        assert gave_up.returncode == 1
    finally:
        os.kill(stack.flavor.proc.pid, signal.SIGCONT)
    wait_until(lambda: stack.group().inspect_groups() == [], 15, what="the destroy to end")
    assert stack.alive() == set()
    time.sleep(5 * POLL)
    assert stack.alive() == set(), "a destroyed group provisioned again"
    again = cli("group", "destroy", "web")
    assert "'web' is not being watched" in again.stderr


def test_a_destroy_with_the_instance_plugin_down_is_finished_by_a_second_run(
        stack: Stack, cli: Cli, start_plugin: StartPlugin) -> None:
    stack.commit(2)
    wait_until(lambda: stack.status().converged, 10, what="2 members")
    members = stack.alive()
    stack.instance_plugin.proc.terminate()
    stack.instance_plugin.proc.wait(10)
    failed = cli("group", "destroy", "web")
    assert failed.returncode == 1
    assert "the group provisions no more; run 'infrakit group destroy web' again" in failed.stderr
    stack.group_plugin.proc.terminate()  # being destroyed survives a restart
    stack.group_plugin.proc.wait(10)
    stack.instance_plugin = start_plugin("instance-process")
    stack.group_plugin = start_plugin("group")
    time.sleep(5 * POLL)
    assert stack.alive() == members, "a group being destroyed provisioned"
    assert stack.status().destroying
    done = cli("group", "destroy", "web")
    assert done.returncode == 0, done.stderr
    assert stack.alive() == set()


def test_a_hung_flavor_is_named_before_the_cli_gives_up(stack: Stack, cli: Cli) -> None:
    stack.commit(2)
    wait_until(lambda: stack.status().converged, 10, what="2 members")
    os.kill(stack.flavor.proc.pid, signal.SIGSTOP)
    try:
        resized = cli("group", "set-size", "web", "3")
    finally:
        os.kill(stack.flavor.proc.pid, signal.SIGCONT)
    assert resized.returncode == 1
    assert "Flavor plugin 'flavor-vanilla' is not reachable" in resized.stderr


def test_after_a_restart_old_members_keep_their_check_too(stack: Stack) -> None:
    stack.commit(2, HTTP, {"HTTP": PROBE + "/"}, HealthGrace=1)
    wait_until(lambda: stack.status().converged, 15, what="2 healthy members")
    old = stack.alive()
    stack.commit(2, HTTP, {"HTTP": PROBE + "/healthz"}, HealthGrace=1, UpdateFailureLimit=1)
    wait_until(lambda: bool(stack.status().update_halted), 20, what="the update to halt")
    stack.group_plugin.proc.terminate()
    stack.group_plugin.proc.wait(10)
    stack.group_plugin = stack.start_plugin("group")
    deadline = time.monotonic() + 2.5  # past StartupGrace + HealthGrace
    while time.monotonic() < deadline:
        assert all(m.health in ("healthy", "starting") for m in stack.status().members
                   if m.id in old)
        time.sleep(POLL)
    assert all(m.health == "healthy" for m in stack.status().members if m.id in old)


def test_a_killed_member_leaves_a_died_event_then_its_heir_a_provisioned_one(
        stack: Stack, cli: Cli) -> None:
    stack.commit(2)
    wait_until(lambda: stack.status().converged, 10, what="2 members")
    victim = sorted(stack.alive())[0]
    pid = json.loads((stack.state / f"{victim}.json").read_text())["PID"]
    assert pid > 1
    os.kill(pid, signal.SIGKILL)

    def died() -> list[GroupEvent]:
        """The death, once the heir's provision follows it."""
        events = stack.group().events("web", None, None, 0)
        deaths = [e for e in events if e.kind == "member died"]
        heirs = [e for e in events if deaths and e.seq > deaths[0].seq
                 and e.kind == "provisioned"]
        return deaths if heirs else []

    wait_until(died, 10, what="the death and the heir's provision to be events")
    [death] = died()
    assert death.member == victim and "killed by signal 9 (SIGKILL)" in death.reason
    assert death.details and death.details["exit"].startswith("killed by signal 9")
    shown = cli("group", "events", "web")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("AGE") and "member died" in shown.stdout
    me = pwd.getpwuid(os.geteuid()).pw_name  # committed on the socket: the local user
    assert victim in shown.stdout and f"Managing 2 instances (commit by local:{me})" in \
        shown.stdout
    data = json.loads(cli("group", "events", "web", "-o", "json", "--since", "10m").stdout)
    assert [e["Kind"] for e in data][:1] == ["committed"]
    assert cli("group", "events", "web", "--since", "2999-01-01T00:00:00").stdout.strip() \
        == "AGE  MEMBER  KIND  REASON"
    assert "last events:" in cli("group", "describe", "-v", "web").stdout
    _follow_sees_a_destroy(stack)


def _follow_sees_a_destroy(stack: Stack) -> None:
    """``group events --follow`` prints a new event as it comes, and ends at Ctrl-C."""
    follow = subprocess.Popen([sys.executable, "-m", "infrakit", "group", "events", "web",
                               "--follow"], stdout=subprocess.PIPE, bufsize=0)
    try:
        assert follow.stdout is not None
        fd = follow.stdout.fileno()

        def read_until(*words: str) -> str:
            seen, deadline = "", time.monotonic() + 10
            while not all(w in seen for w in words):
                assert time.monotonic() < deadline, f"--follow printed no {words}: {seen!r}"
                if select.select([fd], [], [], 0.5)[0]:
                    seen += os.read(fd, 65536).decode()
            return seen

        read_until("AGE", "member died")  # the history is printed first
        target = sorted(stack.alive())[0]
        stack.group().destroy_instances("web", [target], False)
        assert "AGE" not in read_until(target, "by request")
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
