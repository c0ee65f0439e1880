"""The built-in group plugin end to end: real ``group``, ``instance-file`` and
``flavor-vanilla`` processes over real sockets, driven through the typed client, raw
JSON-RPC and the CLI.

Every wait polls with a deadline. The group plugin polls every ``POLL`` seconds.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infrakit.plugins.group.confighash import config_hash
from infrakit.plugins.group.storage import InFlight
from infrakit.rpc.client import RPCClient
from infrakit.rpc.jsonrpc import APPLICATION_ERROR
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import Description, GroupDescription, GroupSpec, Spec
from infrakit.spi.errors import CallFailed
from infrakit.store.sqlite import SQLiteStore
from tests.conftest import Cli, Plugin, Processes, StartPlugin, StartScript
from tests.helpers import PY, error_of, rpc, stop_process, wait_until

POLL = "0.2"
GID = "cattle"
GROUP_TAG = "infrakit.group"
CONFIG_TAG = "infrakit.config_sha"
NOTE_V1 = "Instance properties version 1.0"
NOTE_V2 = "Instance properties version 2.0"
SHA_V1 = "6drwciyinzycumf3x2pkfcc6wzmg2wna"
FLAVOR_PROPS: dict[str, Any] = {"Init": ["echo hello"],
                                "Tags": {"tier": "web", "project": "infrakit"}}
FLAVOR_TAGS = {"tier": "web", "project": "infrakit"}
CONVERGE = 20.0  # seconds: a deadline, never a sleep

Done = subprocess.CompletedProcess[str]


def props(size: int = 3, *, note: str = NOTE_V1, logical_ids: list[str] | None = None,
          instance: str = "instance-file") -> dict[str, Any]:
    """The group properties of the wire samples, with the given allocation and note."""
    alloc: dict[str, Any] = {"LogicalIDs": logical_ids} if logical_ids else {"Size": size}
    return {
        "Allocation": alloc,
        "Instance": {"Plugin": instance, "Properties": {"Note": note}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": FLAVOR_PROPS},
    }


def sha_of(note: str, instance: str = "instance-file") -> str:
    return config_hash({"Plugin": instance, "Properties": {"Note": note}},
                       {"Plugin": "flavor-vanilla", "Properties": FLAVOR_PROPS})


# -- talking to the plugins (a fresh connection per call: plugins restart in some tests) ---


def commit(group: Path, gid: str, properties: Any, pretend: bool = False) -> str:
    with RPCClient(group) as conn:
        return GroupClient(conn).commit_group(GroupSpec(id=gid, properties=properties), pretend)


def describe(group: Path, gid: str) -> GroupDescription:
    with RPCClient(group) as conn:
        return GroupClient(conn).describe_group(gid)


def inspect_groups(group: Path) -> list[GroupSpec]:
    with RPCClient(group) as conn:
        return GroupClient(conn).inspect_groups()


def members(instance: Path, gid: str = GID, type_name: str = "") -> list[Description]:
    """What the instance plugin itself says the group's members are."""
    with RPCClient(instance) as conn:
        return InstanceClient(conn, type_name).describe_instances({GROUP_TAG: gid}, False)


def ids(descs: list[Description]) -> set[str]:
    return {d.id for d in descs}


def destroy_instance(instance: Path, iid: str) -> None:
    with RPCClient(instance) as conn:
        InstanceClient(conn).destroy(iid)


def ok(done: Done) -> Done:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\n" \
                                 f"stderr: {done.stderr}"
    return done


@dataclass
class Stack:
    group: Plugin
    instance_plugin: Plugin
    flavor: Path

    @property
    def instance(self) -> Path:
        return self.instance_plugin.path


def start_together(procs: Processes, plugins_dir: Path, *kinds: str) -> list[Plugin]:
    """``start_plugin`` for several built-in kinds at once: spawn all, then wait for each."""
    spawned = []
    for kind in kinds:
        log = procs.home / "test-logs" / f"{kind}.log"
        spawned.append((kind, log, procs.spawn(
            [PY, "-m", "infrakit", "plugin", "run", f"{kind}:{kind}"], log)))
    return [procs.wait_ready(kind, plugins_dir / kind, proc, log)
            for kind, log, proc in spawned]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, procs: Processes,
          plugins_dir: Path) -> Iterator[Stack]:
    """instance-file, flavor-vanilla and a fast-polling group plugin, all named by kind."""
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    instance, flavor, group = start_together(procs, plugins_dir, "instance-file",
                                             "flavor-vanilla", "group")
    s = Stack(group, instance, flavor.path)
    yield s
    # the group plugin goes first, while the plugins it calls still answer (the processes
    # fixture would stop them in start order)
    stop_process(s.group.proc)


@dataclass
class Watch:
    """Samples of the instance plugin's count of a group's members, taken while waiting."""

    counts: list[int] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


def converge(stack: Stack, size: int, gid: str = GID, *, sha: str = SHA_V1,
             watch: Watch | None = None,
             extra: Callable[[list[Description]], bool] | None = None,
             timeout: float = CONVERGE) -> list[Description]:
    """Wait until the group says Converged with exactly ``size`` members that all carry
    ``sha``, and the instance plugin agrees; returns the members. Every describe along the
    way is checked: Converged is never claimed with the wrong members."""

    def done() -> list[Description] | None:
        desc = describe(stack.group.path, gid)
        truth = members(stack.instance, gid)
        if watch is not None:
            watch.counts.append(len(truth))
        got = desc.instances or []
        if desc.converged:
            # the reference claims convergence while a new group is still being created
            assert len(got) == size, f"Converged with {len(got)} members, want {size}: {got}"
            assert all((m.tags or {}).get(CONFIG_TAG) == sha for m in got), got
        right = (desc.converged and len(truth) == size and ids(truth) == ids(got)
                 and all((m.tags or {}).get(CONFIG_TAG) == sha for m in truth))
        if right and extra is not None:
            right = extra(truth)
        return truth if right else None

    found: list[Description] | None = wait_until(
        done, timeout, interval=0.02, what=f"group {gid} to converge to {size} members with {sha}")
    assert found is not None
    return found


def assert_member_tags(ms: list[Description], gid: str, sha: str) -> None:
    for m in ms:
        assert m.tags == {GROUP_TAG: gid, CONFIG_TAG: sha, **FLAVOR_TAGS}, m


# -- 1. commit, describe, validation ---------------------------------------------------------


def test_commit_converges_to_exactly_the_size_with_the_group_tags(stack: Stack,
                                                                  cli: Cli) -> None:
    assert sha_of(NOTE_V1) == SHA_V1  # the hash helper of these tests is the reference's
    assert commit(stack.group.path, GID, props(3)) == "Managing 3 instances"
    # right after the commit of a fresh group: members are missing, so not converged
    first = describe(stack.group.path, GID)
    if len(first.instances or []) < 3:
        assert first.converged is False, first
    got = converge(stack, 3)
    assert len(ids(got)) == 3
    assert_member_tags(got, GID, SHA_V1)
    # re-commit of the same spec changes nothing
    assert commit(stack.group.path, GID, props(3)) == "Noop"
    assert ids(converge(stack, 3)) == ids(got)

    # the same state through the CLI
    out = ok(cli("group", "describe", GID)).stdout
    assert "converged: yes, 3 members" in out
    assert sorted(ok(cli("group", "describe", "-q", GID)).stdout.split()) == sorted(ids(got))
    listed = json.loads(ok(cli("group", "ls", "-o", "json")).stdout)
    assert [g["ID"] for g in listed] == [GID]
    shown = json.loads(ok(cli("group", "inspect", GID, "-o", "json")).stdout)
    assert shown == {"ID": GID, "Properties": props(3)}

    # polls later the group has settled: it does not keep provisioning or replacing
    settle(stack, "other", 1)
    assert ids(members(stack.instance)) == ids(got)


def test_pretend_commit_of_a_new_group_changes_nothing(stack: Stack) -> None:
    assert commit(stack.group.path, "ghost", props(2), pretend=True) == "Managing 2 instances"
    assert inspect_groups(stack.group.path) == []
    with pytest.raises(CallFailed) as err:
        describe(stack.group.path, "ghost")
    assert err.value.reason == "Group 'ghost' is not being watched"
    # let a real group converge (several polls) and look again: no ghost was created
    commit(stack.group.path, GID, props(1))
    converge(stack, 1)
    assert members(stack.instance, "ghost") == []
    assert [g.id for g in inspect_groups(stack.group.path)] == [GID]
    with RPCClient(stack.instance) as conn:
        assert len(InstanceClient(conn).describe_instances({}, False)) == 1


def test_validation_messages_of_the_reference_and_nothing_stored(stack: Stack) -> None:
    sock = stack.group.path
    # no groups: the reference answers null, not []
    assert rpc(sock, "Group.InspectGroups", {}, rid=3) == \
        {"jsonrpc": "2.0", "result": {"Groups": None}, "id": 3}

    def commit_error(params: Any) -> str:
        err = error_of(sock, "Group.CommitGroup", params)
        assert err["code"] == APPLICATION_ERROR, err
        assert err["data"] is None, err
        message: str = err["message"]
        return message

    assert commit_error({}) == "Group ID must not be blank"
    no_alloc = props(3)
    del no_alloc["Allocation"]
    assert commit_error({"Spec": {"ID": GID, "Properties": no_alloc}, "Pretend": False}) == \
        "Allocation must not be blank"
    both = props(3)
    both["Allocation"] = {"Size": 3, "LogicalIDs": ["a", "b", "c"]}
    assert commit_error({"Spec": {"ID": GID, "Properties": both}, "Pretend": False}) == \
        "Only one Allocation method may be used"
    bad_flavor = props(3)
    bad_flavor["Flavor"] = {"Plugin": "flavor-vanilla", "Properties": {"Init": 3}}
    message = commit_error({"Spec": {"ID": GID, "Properties": bad_flavor}, "Pretend": False})
    assert "flavor-vanilla" in message and "Init" in message, message

    # none of the refused commits was stored or is being watched
    assert rpc(sock, "Group.InspectGroups", {}, rid=4)["result"] == {"Groups": None}
    err = error_of(sock, "Group.DescribeGroup", {"ID": GID})
    assert err["message"] == f"Group '{GID}' is not being watched"
    err = error_of(sock, "Group.DescribeGroup", {"ID": "nope"}, rid=9)
    assert err == {"code": APPLICATION_ERROR, "message": "Group 'nope' is not being watched",
                   "data": None}
    assert members(stack.instance) == []


# -- 2. healing ------------------------------------------------------------------------------


def test_a_member_destroyed_behind_its_back_is_replaced(stack: Stack) -> None:
    commit(stack.group.path, GID, props(3))
    before = ids(converge(stack, 3))
    victim = sorted(before)[0]
    destroy_instance(stack.instance, victim)
    after = ids(converge(stack, 3, extra=lambda ms: victim not in ids(ms)))
    assert len(after) == 3
    assert after - before and before - after == {victim}, (before, after)
    assert_member_tags(members(stack.instance), GID, SHA_V1)


# -- 3. scaling ------------------------------------------------------------------------------


def test_set_size_scales_out_and_in(stack: Stack, cli: Cli) -> None:
    commit(stack.group.path, GID, props(3))
    three = ids(converge(stack, 3))

    out = ok(cli("group", "set-size", GID, "5")).stdout.strip()
    assert out == "Adding 2 instances to increase the group size to 5"
    watch = Watch()
    five = ids(converge(stack, 5, watch=watch))
    assert three <= five  # scaling out keeps every member
    assert watch.peak <= 5, watch.counts

    out = ok(cli("group", "set-size", GID, "2")).stdout.strip()
    assert out == "Terminating 3 instances to reduce the group size to 2"
    watch = Watch()
    two = ids(converge(stack, 2, watch=watch))
    assert two <= five  # scaling in provisions nothing
    assert watch.peak <= 5, watch.counts
    assert inspect_groups(stack.group.path)[0].properties["Allocation"]["Size"] == 2


# -- 4. rolling update -----------------------------------------------------------------------


def test_rolling_update_replaces_every_member_with_at_most_one_extra(stack: Stack) -> None:
    commit(stack.group.path, GID, props(3))
    old = ids(converge(stack, 3))
    sha_v2 = sha_of(NOTE_V2)
    assert sha_v2 != SHA_V1

    details = commit(stack.group.path, GID, props(3, note=NOTE_V2))
    assert details.startswith("Performing a rolling update on"), details
    assert details == "Performing a rolling update on 3 instances"
    watch = Watch()
    new = converge(stack, 3, sha=sha_v2, watch=watch)
    assert not old & ids(new), (old, new)
    assert_member_tags(new, GID, sha_v2)
    assert watch.peak <= 3 + 1, watch.counts
    # it surges (a new member first, then an old one goes): never fewer than the size
    assert min(watch.counts) >= 3, watch.counts


# -- 5. quorum group -------------------------------------------------------------------------


def by_logical_id(ms: list[Description]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for m in ms:
        out.setdefault(m.logical_id, []).append(m.id)
    return out


def one_each(*lids: str) -> Callable[[list[Description]], bool]:
    def check(ms: list[Description]) -> bool:
        return sorted((lid or "", len(v)) for lid, v in by_logical_id(ms).items()) == \
            [(lid, 1) for lid in sorted(lids)]
    return check


def test_quorum_group_one_instance_per_logical_id(stack: Stack) -> None:
    commit(stack.group.path, GID, props(logical_ids=["a", "b", "c"]))
    got = converge(stack, 3, extra=one_each("a", "b", "c"))
    assert_member_tags(got, GID, SHA_V1)
    original = {lid: v[0] for lid, v in by_logical_id(got).items()}

    # a second "a", provisioned by hand with the group's own tags
    with RPCClient(stack.instance) as conn:
        intruder = InstanceClient(conn).provision(Spec(
            properties={"Note": NOTE_V1}, tags={GROUP_TAG: GID, CONFIG_TAG: SHA_V1,
                                                **FLAVOR_TAGS},
            init="echo hello", logical_id="a"))
    assert len(members(stack.instance)) == 4
    got = converge(stack, 3, extra=lambda ms: intruder not in ids(ms) and one_each(
        "a", "b", "c")(ms))
    # the established member of "a" is kept; nothing else was touched
    assert {lid: v[0] for lid, v in by_logical_id(got).items()} == original

    assert commit(stack.group.path, GID, props(logical_ids=["a", "b"])) == \
        "Terminating 1 instances to reduce the group size to 2"
    got = converge(stack, 2, extra=one_each("a", "b"))
    assert {lid: v[0] for lid, v in by_logical_id(got).items()} == \
        {"a": original["a"], "b": original["b"]}


# -- 6. durability ---------------------------------------------------------------------------


def test_specs_survive_kill_9_and_the_group_keeps_healing(stack: Stack,
                                                         start_plugin: StartPlugin) -> None:
    commit(stack.group.path, GID, props(3))
    before = ids(converge(stack, 3))
    committed = inspect_groups(stack.group.path)

    proc = stack.group.proc
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    stack.group = start_plugin("group")

    again = inspect_groups(stack.group.path)
    assert again == committed
    assert [(g.id, g.properties) for g in again] == [(GID, props(3))]
    # resumed without a re-commit, and without touching the healthy members
    assert ids(converge(stack, 3)) == before

    victim = sorted(before)[-1]
    destroy_instance(stack.instance, victim)
    after = ids(converge(stack, 3, extra=lambda ms: victim not in ids(ms)))
    assert before - after == {victim}


def test_a_destroy_recorded_by_a_process_that_died_is_carried_out_on_restart(
        stack: Stack, start_plugin: StartPlugin, home: Path) -> None:
    """The record says the member is going, so it no longer counts; left standing until
    the record expires (ProvisionDeadline), it would sit beside its replacement."""
    commit(stack.group.path, GID, {**props(3), "ProvisionDeadline": 600})
    before = ids(converge(stack, 3))
    stack.group.proc.send_signal(signal.SIGKILL)
    stack.group.proc.wait(10)
    victim = sorted(before)[0]
    store = SQLiteStore(home / "group" / "group" / "groups.db")
    now = time.time()
    store.record(InFlight(key=f"destroy:{GID}:{victim}", group=GID, op="destroy",
                          instance=victim, started=now, deadline=now + 600))
    store.close()
    sampler = Sampler(stack.instance)
    stack.group = start_plugin("group")
    after = ids(converge(stack, 3, extra=lambda ms: victim not in ids(ms)))
    assert sampler.stop() <= 4, "more than Size + MaxSurge members"
    assert before - after == {victim}


def test_the_group_plugin_keeps_answering_while_its_instance_plugin_is_down(
        stack: Stack, start_plugin: StartPlugin) -> None:
    commit(stack.group.path, GID, props(3))
    before = ids(converge(stack, 3))
    stop_process(stack.instance_plugin.proc)

    # DescribeGroup says promptly which plugin is missing
    started = time.monotonic()
    with pytest.raises(CallFailed) as err:
        describe(stack.group.path, GID)
    took = time.monotonic() - started
    assert "instance-file" in err.value.reason, err.value.reason
    assert took < 1.0, f"DescribeGroup took {took:.2f}s with the instance plugin down"

    # and every other call is answered promptly while the controller keeps failing
    slowest = 0.0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        started = time.monotonic()
        assert [g.id for g in inspect_groups(stack.group.path)] == [GID]
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.5, f"InspectGroups took {slowest:.2f}s with the instance plugin down"

    # the instance plugin comes back (its files kept): the same members, nothing replaced
    stack.instance_plugin = start_plugin("instance-file")
    assert ids(converge(stack, 3)) == before


# -- 7. a slow provider is never over-provisioned --------------------------------------------

SLOW_INSTANCE = """
import sys, threading, time
from pathlib import Path

from infrakit.plugins.instance.file import FileInstancePlugin
from infrakit.rpc.server import serve

HIDE = {hide!r}
DELAY = {delay!r}


class Slow:
    '''Hides each instance from DescribeInstances for HIDE seconds after it was made.'''

    def __init__(self, inner):
        self.inner = inner
        self.born = {{}}
        self.lock = threading.Lock()

    def validate(self, properties):
        self.inner.validate(properties)

    def provision(self, spec):
        time.sleep(DELAY)
        iid = self.inner.provision(spec)
        with self.lock:
            self.born[iid] = time.monotonic()
        return iid

    def label(self, instance, labels):
        self.inner.label(instance, labels)

    def destroy(self, instance):
        self.inner.destroy(instance)

    def describe_instances(self, tags, properties):
        now = time.monotonic()
        with self.lock:
            born = dict(self.born)
        return [d for d in self.inner.describe_instances(tags, properties)
                if now - born.get(d.id, float("-inf")) >= HIDE]


plugins = Path(sys.argv[1])
inner = FileInstancePlugin(plugins.parent / "instance-slow")
# type "truth" answers from the same files without the delay
serve("instance-slow", instance={{".": Slow(inner), "truth": inner}}, directory=plugins)
"""


def test_a_slow_provider_never_gets_more_instances_than_the_size(
        monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin,
        start_script: StartScript, home: Path) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    slow = start_script(SLOW_INSTANCE.format(hide=1.5, delay=0), "instance-slow").path
    start_plugin("flavor-vanilla")
    group_plugin = start_plugin("group")
    try:
        _slow_group_scenario(slow, group_plugin.path, home)
    finally:
        stop_process(group_plugin.proc)  # first, while the plugins it calls still answer


def _slow_group_scenario(slow: Path, group: Path, home: Path) -> None:
    files = home / "instance-slow"
    spec = props(4, instance="instance-slow")
    sha = sha_of(NOTE_V1, "instance-slow")

    def provisioned() -> int:
        truth = len(members(slow, GID, "truth"))
        on_disk = len(list(files.glob("instance-*.json")))
        counts.append(max(truth, on_disk))
        return max(truth, on_disk)

    counts: list[int] = []
    assert commit(group, GID, spec) == "Managing 4 instances"
    assert describe(group, GID).converged is False  # nothing is visible for 1.5 s yet

    def done() -> bool:
        made = provisioned()
        desc = describe(group, GID)
        if desc.converged:
            assert len(desc.instances or []) == 4, desc
        return desc.converged and made == 4 and len(members(slow)) == 4

    wait_until(done, CONVERGE, interval=0.02, what="the slow group to converge to 4")
    assert max(counts) <= 4, counts
    # and it stays at 4 once everything is visible
    for m in members(slow, GID, "truth"):
        assert m.tags == {GROUP_TAG: GID, CONFIG_TAG: sha, **FLAVOR_TAGS}
    wait_until(lambda: describe(group, GID).converged and provisioned() == 4, CONVERGE)
    assert max(counts) <= 4, counts


def test_destroy_group_while_provisions_are_in_flight_leaves_no_orphan(
        monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin,
        start_script: StartScript) -> None:
    """Provisions still running, and instances made but not described yet: DestroyGroup
    waits for the first to answer and destroys the second by their recorded IDs."""
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    slow = start_script(SLOW_INSTANCE.format(hide=30, delay=0.4), "instance-slow").path
    start_plugin("flavor-vanilla")
    group = start_plugin("group").path
    commit(group, GID, {**props(4, instance="instance-slow"), "MaxParallel": 2})
    wait_until(lambda: members(slow, GID, "truth"), 10, interval=0.02,
               what="the first instances to be made")
    with RPCClient(group) as conn:
        GroupClient(conn).destroy_group(GID)  # the second batch is in flight now
    time.sleep(0.5)  # longer than one provision: a late one would show
    assert members(slow, GID, "truth") == []
    assert members(slow, GID) == []


# -- 8. free and destroy ---------------------------------------------------------------------


def settle(stack: Stack, gid: str, size: int) -> None:
    """Commit a size to another group and wait until it converges: several polls pass."""
    commit(stack.group.path, gid, props(size))
    converge(stack, size, gid)


def listed(cli: Cli) -> list[str]:
    return [g["ID"] for g in json.loads(ok(cli("group", "ls", "-o", "json")).stdout)]


def test_free_stops_managing_and_leaves_the_members_alone(stack: Stack, cli: Cli,
                                                          start_plugin: StartPlugin) -> None:
    commit(stack.group.path, GID, props(3))
    before = ids(converge(stack, 3))
    assert ok(cli("group", "free", GID)).stdout.strip() == f"Freed {GID}"
    assert GID not in listed(cli)
    assert ids(members(stack.instance)) == before
    done = cli("group", "describe", GID)
    assert done.returncode == 1 and f"Group '{GID}' is not being watched" in done.stderr

    # no longer healed: a member destroyed now stays destroyed, polls later
    victim = sorted(before)[0]
    destroy_instance(stack.instance, victim)
    settle(stack, "other", 1)
    settle(stack, "other", 2)
    assert ids(members(stack.instance)) == before - {victim}
    assert listed(cli) == ["other"]

    # freeing is durable: a restarted group plugin does not resume the freed group
    stack.group.proc.send_signal(signal.SIGKILL)
    stack.group.proc.wait(10)
    stack.group = start_plugin("group")
    assert listed(cli) == ["other"]
    settle(stack, "other", 1)
    assert ids(members(stack.instance)) == before - {victim}


def test_destroy_removes_every_member_and_the_group(stack: Stack, cli: Cli) -> None:
    commit(stack.group.path, GID, props(3))
    converge(stack, 3)
    settle(stack, "other", 1)
    assert ok(cli("group", "destroy", GID)).stdout.strip() == f"destroyed {GID}"
    assert members(stack.instance) == []
    assert listed(cli) == ["other"]
    done = cli("group", "describe", GID)
    assert done.returncode == 1 and f"Group '{GID}' is not being watched" in done.stderr
    # nothing comes back polls later, and the other group was not touched
    settle(stack, "other", 2)
    assert members(stack.instance) == []


def _status(group: Path, gid: str = GID) -> Any:
    with RPCClient(group) as conn:
        return GroupClient(conn).describe_status(gid)


def test_a_paused_update_stays_paused_across_a_restart_then_resumes(
        stack: Stack, cli: Cli, start_plugin: StartPlugin) -> None:
    commit(stack.group.path, GID, props(3))
    before = ids(converge(stack, 3))
    assert "Paused" in ok(cli("group", "pause-update", GID)).stdout
    commit(stack.group.path, GID, props(3, note=NOTE_V2))
    wait_until(lambda: _status(stack.group.path).outdated == 3, CONVERGE,
               what="the paused update to be seen")
    stop_process(stack.group.proc)
    stack.group = start_plugin("group")
    status = wait_until(lambda: (s := _status(stack.group.path)).update_paused and s, CONVERGE,
                        what="the restarted plugin to report the pause")
    assert status.outdated == 3 and not status.converged
    assert ids(members(stack.instance)) == before  # nothing replaced while paused
    assert "Resumed" in ok(cli("group", "resume-update", GID)).stdout
    after = ids(converge(stack, 3, sha=sha_of(NOTE_V2)))
    assert not after & before


def test_cancel_update_rolls_back_to_the_previous_spec(stack: Stack, cli: Cli) -> None:
    commit(stack.group.path, GID, props(3))
    converge(stack, 3)
    commit(stack.group.path, GID, props(3, note=NOTE_V2))
    converge(stack, 3, sha=sha_of(NOTE_V2))
    assert "Rolled back to the previous spec" in ok(cli("group", "cancel-update", GID)).stdout
    converge(stack, 3, sha=SHA_V1)
    assert [g.properties for g in inspect_groups(stack.group.path)] == [props(3)]


def test_destroy_instances_shrinks_or_lets_the_group_replace_them(stack: Stack,
                                                                   cli: Cli) -> None:
    commit(stack.group.path, GID, props(4))
    first = sorted(ids(converge(stack, 4)))
    out = ok(cli("group", "destroy-instances", GID, first[0], "--shrink")).stdout
    assert "reducing the group size to 3" in out
    assert ids(converge(stack, 3)) == set(first[1:])
    ok(cli("group", "destroy-instances", GID, first[1], "--replace"))
    replaced = ids(converge(stack, 3, extra=lambda ms: first[1] not in ids(ms)))
    assert set(first[2:]) < replaced
    bad = cli("group", "destroy-instances", GID, "instance-999999")
    assert bad.returncode == 1 and "not members of group" in bad.stderr
    assert len(members(stack.instance)) == 3


def test_commit_wait_shows_progress_until_converged(stack: Stack, cli: Cli, home: Path) -> None:
    spec_file = home / "group.json"
    spec_file.write_text(json.dumps({"ID": GID, "Properties": props(4)}))
    done = ok(cli("group", "commit", "--wait", str(spec_file)))
    lines = done.stdout.splitlines()
    assert lines[0] == f"Committed {GID}: Managing 4 instances"
    assert lines[-1] == "converged: 4 members"
    assert any(line.startswith("4/4 ready") for line in lines)
    assert len(members(stack.instance)) == 4
    ok(cli("group", "pause-update", GID))  # a config change can no longer converge
    spec_file.write_text(json.dumps({"ID": GID, "Properties": props(4, note=NOTE_V2)}))
    late = cli("group", "commit", "--wait", "--wait-timeout", "1", str(spec_file))
    assert late.returncode == 3 and "Traceback" not in late.stderr  # a --wait that gave up
    assert "did not converge within 1s" in late.stderr
    assert "4 to update (update paused)" in late.stdout


class Sampler:
    """Counts the group's members in the instance plugin, in a thread, until stopped."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(members(self.instance)))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def test_kill_9_at_random_points_never_over_provisions(stack: Stack,
                                                        start_plugin: StartPlugin) -> None:
    rng = random.Random(7)
    spec = {**props(6), "ProvisionDeadline": 2, "MaxParallel": 2}
    sampler = Sampler(stack.instance)
    commit(stack.group.path, GID, spec)
    for _ in range(3):  # during provisioning
        time.sleep(rng.uniform(0, 0.15))
        stack.group.proc.send_signal(signal.SIGKILL)
        stack.group.proc.wait(10)
        stack.group = start_plugin("group")
    converge(stack, 6)
    assert sampler.stop() <= 6, "more members than the size during provisioning"

    sampler = Sampler(stack.instance)
    commit(stack.group.path, GID, {**spec, **props(6, note=NOTE_V2)})
    for _ in range(3):  # during the rolling update
        time.sleep(rng.uniform(0, 0.3))
        stack.group.proc.send_signal(signal.SIGKILL)
        stack.group.proc.wait(10)
        stack.group = start_plugin("group")
    converge(stack, 6, sha=sha_of(NOTE_V2))
    assert sampler.stop() <= 7, "more than Size + MaxSurge members during the update"


def test_members_with_a_large_init_are_provisioned_and_judged_in_calls_that_fit(
        stack: Stack) -> None:
    """16 members with an Init of 300 kB: one ProvisionEach of all of them would be over
    the 4 MiB a plugin accepts, and so would one HealthyEach of their descriptions (the
    file plugin describes a member with the spec it was made from)."""
    flavor = {"Init": ["echo " + "x" * 300_000]}
    properties = {**props(16), "Flavor": {"Plugin": "flavor-vanilla", "Properties": flavor}}
    commit(stack.group.path, GID, properties)
    sha = config_hash(properties["Instance"], properties["Flavor"])
    converge(stack, 16, sha=sha)
    status = _status(stack.group.path)
    assert [m.health for m in status.members] == ["healthy"] * 16, status
    assert status.errors == [] and status.health_unknown == ""


def test_a_commit_whose_members_could_never_fit_in_a_call_is_refused(
        stack: Stack, start_script: StartScript) -> None:
    """The spec fits, but the Init its flavor makes of it does not: every provision would
    be refused, forever, so the commit is."""
    start_script(INFLATING, "flavor-inflating")
    properties = {**props(2), "Flavor": {"Plugin": "flavor-inflating", "Properties": {
        "InitMiB": 5}}}
    with RPCClient(stack.group.path) as conn, pytest.raises(CallFailed) as refused:
        GroupClient(conn).commit_group(GroupSpec(id=GID, properties=properties), False)
    assert refused.value.reason == (
        "Init: as flavor 'flavor-inflating' prepares it, the spec of an instance is 5.0 MiB "
        "with its Init of 5 MiB, more than the 4 MiB a plugin accepts in one call; no member "
        "could be provisioned")
    assert inspect_groups(stack.group.path) == []
    assert members(stack.instance) == []


INFLATING = '''
import sys
from pathlib import Path
import msgspec.structs
from infrakit.rpc.server import serve
from infrakit.plugins.flavor.vanilla import VanillaFlavor

class Inflating(VanillaFlavor):
    """Makes an Init of Properties.InitMiB mebibytes."""

    def validate(self, properties, allocation):
        pass

    def prepare(self, properties, spec, allocation, index):
        return msgspec.structs.replace(spec, init="x" * (properties["InitMiB"] << 20))

serve("flavor-inflating", flavor=Inflating(), directory=Path(sys.argv[1]))
'''
