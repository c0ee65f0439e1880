"""The instance-docker plugin against a real, private Docker engine: the plugin runs as its
own process and is driven over its socket (in this process where a test lowers its limits);
containers are checked through the engine's API. How an ending is told is checked last,
without an engine.

Every wait polls with a deadline. The engine starts once per session; every test leaves it
without a container.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.images import scratch, tinyelf
from infrakit.plugins.instance import docker_ended
from infrakit.plugins.instance.docker import DockerInstancePlugin
from infrakit.plugins.instance.docker_ended import (
    EndedContainers,
    Listed,
    how_it_ended,
    output_lines,
    parse_time,
)
from infrakit.rpc.client import RPCClient
from infrakit.rpc.jsonrpc import APPLICATION_ERROR
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import Description, EndedInstance, GroupSpec, Spec
from infrakit.spi.calls import InstanceAPI
from infrakit.spi.errors import CallFailed
from tests.conftest import Plugin, StartPlugin
from tests.docker_engine import (
    IMAGE,
    PAUSE_IMAGE,
    Engine,
    engine_problem,
    load,
    private_engine,
)
from tests.helpers import i386_problem, require_engine, stop_process, wait_until

NAME = "instance-docker"
OWNER = "infrakit.plugin"
GROUP_TAG = "infrakit.group"
CONFIG_TAG = "infrakit.config_sha"
POLL = 0.2
DEADLINE = 20.0  # seconds: a deadline, never a sleep

#: A member that only needs to exist: the tiny pause, which exits 0 at once on SIGTERM;
#: loopback only.
MEMBER: dict[str, Any] = {
    "Image": PAUSE_IMAGE,
    "NetworkMode": "none",
    "Memory": "64m",
    "CPUs": 0.5,
    "PidsLimit": 32,
    "StopTimeout": 5,
}

#: A container with a shell (for Init, exec and output), that stops at once on SIGTERM.
CONTAINER: dict[str, Any] = {
    "Image": IMAGE,
    "Command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
    "NetworkMode": "none",
    "Memory": "64m",
    "CPUs": 0.5,
    "PidsLimit": 32,
    "StopTimeout": 5,
}

#: A container that prints a line on each of its streams and exits with status 3.
FAILING: dict[str, Any] = {**CONTAINER, "Command": [
    "sh", "-c", "echo starting; sleep 0.1; echo 'no config found' >&2; exit 3"]}


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    require_engine(engine_problem())
    with private_engine() as e:
        yield e


@pytest.fixture
def docker_engine(engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Engine]:
    """The private engine, named by ``DOCKER_HOST`` for the plugins this test starts."""
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    for var in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    yield engine
    engine.remove_all_containers()


@pytest.fixture
def plugin(docker_engine: Engine, start_plugin: StartPlugin) -> Plugin:
    return start_plugin(NAME)


def client(plugin: Plugin) -> InstanceAPI:
    return InstanceClient(RPCClient(plugin.path, timeout=30))


def ids(descs: list[Description]) -> set[str]:
    return {d.id for d in descs}


def containers(engine: Engine) -> list[dict[str, Any]]:
    """Every container on the engine, running or not."""
    return list(engine.api.containers(all=True))


def error(call: Any, *args: Any) -> str:
    with pytest.raises(CallFailed) as info:
        call(*args)
    assert info.value.code == APPLICATION_ERROR
    return info.value.reason


def kill(engine: Engine, instance: str) -> None:
    """``docker kill``, and wait until the engine says the container no longer runs (the
    engine answers the kill before the container has exited)."""
    engine.api.kill(instance)
    wait_until(lambda: not engine.api.inspect_container(instance)["State"]["Running"], 5.0,
               what=f"{instance} to exit")


def exited(engine: Engine, instance: str) -> bool:
    return bool(engine.api.inspect_container(instance)["State"]["Status"] == "exited")


def in_container(engine: Engine, instance: str, *cmd: str) -> str:
    run = engine.api.exec_create(instance, list(cmd))
    return str(engine.api.exec_start(run["Id"]).decode())


# -- one instance at a time ------------------------------------------------------------------


def test_provision_describe_destroy(plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    inst.validate(CONTAINER)
    web_props = {**CONTAINER, "Env": {"GREETING": "hello"},
                 "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}]}
    web = inst.provision(Spec(properties=web_props, tags={"tier": "web", "n": "1"},
                              init="echo prepared > /tmp/init", logical_id="web-1"))
    db = inst.provision(Spec(properties=MEMBER, tags={"tier": "db"}))
    assert web != db and web.startswith(f"{NAME}-")

    # tags are labels, and the plugin's own label marks the container
    [made] = docker_engine.api.containers(filters={"name": web})
    assert made["Labels"] == {"tier": "web", "n": "1", OWNER: NAME,
                              "infrakit.logical_id": "web-1"}
    assert made["HostConfig"]["NetworkMode"] == "none"
    limits = docker_engine.api.inspect_container(web)["HostConfig"]
    assert (limits["Memory"], limits["NanoCpus"], limits["PidsLimit"]) == (64 << 20, 5e8, 32)
    # Init ran first, then handed over to Command, which is the main process
    assert in_container(docker_engine, web, "cat", "/tmp/init") == "prepared\n"
    main = in_container(docker_engine, web, "cat", "/proc/1/cmdline").split("\0")
    assert main[:2] == ["sh", "-c"], main  # not the entry script's "/bin/sh"
    assert in_container(docker_engine, web, "sh", "-c", "echo $GREETING") == "hello\n"
    assert "/scratch" in in_container(docker_engine, web, "cat", "/proc/mounts")

    [desc] = inst.describe_instances({"tier": "web"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (web, "web-1", {"tier": "web", "n": "1"})
    assert ids(inst.describe_instances({}, False)) == {web, db}
    assert inst.describe_instances({"tier": "web", "n": "2"}, False) == []
    [full] = inst.describe_instances({"tier": "db"}, True)
    facts = full.properties
    assert facts["ContainerID"] == docker_engine.api.inspect_container(db)["Id"]
    assert (facts["Image"], facts["State"]) == (PAUSE_IMAGE, "running")
    assert facts["StartedAt"].startswith(time.strftime("%Y-", time.gmtime()))

    inst.destroy(web)
    assert ids(inst.describe_instances({}, False)) == {db}
    assert [c["Names"] for c in containers(docker_engine)] == [[f"/{db}"]]
    inst.destroy(db)
    assert containers(docker_engine) == []


def test_label_is_kept_by_the_plugin_and_survives_a_restart(
        plugin: Plugin, docker_engine: Engine, start_plugin: StartPlugin, home: Path) -> None:
    rpc = RPCClient(plugin.path, timeout=30)
    inst = InstanceClient(rpc)
    a = inst.provision(Spec(properties=MEMBER, tags={GROUP_TAG: "g", CONFIG_TAG: "v1"}))
    b = inst.provision(Spec(properties=MEMBER, tags={GROUP_TAG: "g", CONFIG_TAG: "v1"}))
    inst.label(a, {CONFIG_TAG: "v2", "extra": "yes"})

    def check(inst: InstanceAPI) -> None:
        got = {d.id: d.tags for d in inst.describe_instances({GROUP_TAG: "g"}, False)}
        assert got == {a: {GROUP_TAG: "g", CONFIG_TAG: "v2", "extra": "yes"},
                       b: {GROUP_TAG: "g", CONFIG_TAG: "v1"}}
        # a filter on a relabelled key sees the new value, not the container's own label
        assert ids(inst.describe_instances({CONFIG_TAG: "v2"}, False)) == {a}
        assert ids(inst.describe_instances({CONFIG_TAG: "v1"}, False)) == {b}

    check(inst)
    # the engine's labels are unchanged: the new ones live in the plugin's state file
    assert docker_engine.api.inspect_container(a)["Config"]["Labels"][CONFIG_TAG] == "v1"
    assert (home / NAME / NAME / "labels.json").is_file()
    rpc.close()
    assert stop_process(plugin.proc) == 0
    inst = client(start_plugin(NAME))
    check(inst)

    assert "reserved" in error(inst.label, a, {OWNER: "someone-else"})
    assert f"{NAME}-000000000000" in error(inst.label, f"{NAME}-000000000000", {"x": "y"})


def test_a_container_that_stops_is_not_described_but_kept_and_debris_is_removed(
        plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    doomed = inst.provision(Spec(properties=MEMBER, tags={"t": "x"}))
    kept = inst.provision(Spec(properties=MEMBER, tags={"t": "x"}))
    kill(docker_engine, doomed)
    # as a plugin that died between creating a container and starting it leaves one
    api = docker_engine.api
    api.create_container(PAUSE_IMAGE, name=f"{NAME}-00000000000c",
                         labels={"t": "x", OWNER: NAME})
    assert ids(inst.describe_instances({"t": "x"}, False)) == {kept}  # at once
    # that describe removed the one never started; the killed one stays, to tell its end
    states = {c["Names"][0][1:]: c["State"] for c in containers(docker_engine)}
    assert states == {kept: "running", doomed: "exited"}
    [ended] = inst.describe_ended({"t": "x"})
    assert (ended.id, ended.reason, ended.exit_status, ended.crashed) == \
        (doomed, "killed by signal 9 (SIGKILL)", None, True)


def test_an_ended_container_says_how_and_destroy_clears_it(plugin: Plugin,
                                                            docker_engine: Engine) -> None:
    rpc = RPCClient(plugin.path, timeout=30)
    inst = InstanceClient(rpc)
    before = time.time()
    failed = inst.provision(Spec(properties=FAILING, tags={"t": "x", "n": "1"},
                                 logical_id="failing-1"))
    alive = inst.provision(Spec(properties=MEMBER, tags={"t": "x"}))
    wait_until(lambda: exited(docker_engine, failed), DEADLINE, what=f"{failed} to exit")
    assert ids(inst.describe_instances({}, False)) == {alive}

    [ended] = inst.describe_ended({"t": "x"})
    assert (ended.id, ended.logical_id, ended.tags) == (failed, "failing-1", {"t": "x", "n": "1"})
    assert (ended.reason, ended.exit_status, ended.crashed) == ("exited with status 3", 3, True)
    assert sorted(ended.output or []) == ["no config found", "starting"]  # both streams
    assert before - 1 < ended.started <= ended.ended + 0.01 < time.time() + 1
    assert ended.ended - ended.started < 5
    # reported again on every call, the same; every given tag must match
    assert inst.describe_ended({"n": "1"}) == [ended] == inst.describe_ended({})
    assert inst.describe_ended({"t": "x", "n": "2"}) == []
    assert inst.describe_ended({"tier": "x"}) == []
    # on the wire
    raw = rpc.call_raw("Instance.DescribeEnded", {"Tags": {"t": "x"}}, dict)
    assert [(e["ID"], e["ExitStatus"], e["Reason"]) for e in raw["Ended"]] == \
        [(failed, 3, "exited with status 3")]
    # the container is still there for whoever looks into it
    assert docker_engine.api.inspect_container(failed)["State"]["ExitCode"] == 3

    inst.destroy(failed)
    assert inst.describe_ended({}) == []
    assert [c["Names"] for c in containers(docker_engine)] == [[f"/{alive}"]]
    inst.destroy(alive)
    assert inst.describe_ended({}) == [] and containers(docker_engine) == []
    rpc.close()


def test_a_container_removed_behind_the_plugins_back_is_told_apart(
        plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    gone = inst.provision(Spec(properties=MEMBER, tags={"t": "x"}, logical_id="g-1"))
    other = inst.provision(Spec(properties=MEMBER, tags={"t": "y"}))
    assert ids(inst.describe_instances({}, False)) == {gone, other}  # seen running
    docker_engine.api.remove_container(gone, force=True)
    # a listing that would not have shown it tells nothing
    assert inst.describe_ended({"t": "y"}) == []
    [ended] = inst.describe_ended({"t": "x"})
    assert (ended.id, ended.logical_id, ended.crashed, ended.reason) == \
        (gone, "g-1", False, "removed outside the plugin")
    assert (ended.exit_status, ended.output) == (None, None)
    assert ended.started > 0 and ended.ended >= ended.started
    # nothing is left to destroy: destroyed already, and the plugin forgets it
    inst.destroy(gone)
    assert inst.describe_ended({}) == []
    inst.destroy(other)


def test_destroy_of_a_container_already_destroyed_succeeds(plugin: Plugin,
                                                           docker_engine: Engine) -> None:
    inst = client(plugin)
    made = inst.provision(Spec(properties=MEMBER))
    inst.destroy(made)
    inst.destroy(made)  # a retried destroy
    assert containers(docker_engine) == [] and inst.describe_instances({}, False) == []
    assert f"{made} was already gone" in plugin.output()
    message = error(inst.label, made, {"x": "y"})
    assert repr(made) in message and "gone" in message and "cannot label" in message


def test_destroy_of_a_container_removed_with_the_engines_api_succeeds(
        plugin: Plugin, docker_engine: Engine, home: Path) -> None:
    inst = client(plugin)
    seen, unseen, keep = (inst.provision(Spec(properties=MEMBER, tags={"t": "x"}))
                          for _ in range(3))
    inst.label(seen, {"v": "2"})  # the plugin keeps this label: it must go with the container
    docker_engine.api.remove_container(seen, force=True)
    assert ids(inst.describe_instances({}, False)) == {unseen, keep}  # seen to go ...
    docker_engine.api.remove_container(unseen, force=True)  # ... and not this one
    for instance in (seen, unseen):
        inst.destroy(instance)
        assert f"{instance} was already gone" in plugin.output()
    assert inst.describe_ended({}) == []  # destroyed through the plugin: nothing to report
    assert ids(inst.describe_instances({}, False)) == {keep}
    assert seen not in json.loads((home / NAME / NAME / "labels.json").read_text())["Labels"]
    inst.destroy(keep)
    assert containers(docker_engine) == []


def test_only_the_most_recent_exited_containers_of_each_group_stay(
        docker_engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_KEEP_ENDED", "2")
    monkeypatch.setattr(docker_ended, "KEEP_ENDINGS", 4)
    learnt: list[str] = []
    learn = docker_ended.learn

    def counted(api: Any, item: Listed) -> EndedInstance | None:
        learnt.append(item.instance)
        return learn(api, item)

    monkeypatch.setattr(docker_ended, "learn", counted)
    plugin = DockerInstancePlugin(NAME, home / NAME)  # in this process, with those limits
    made = []
    for status, group in ((1, "web"), (2, "web"), (3, "web"), (4, "db"), (5, "web")):
        props = {**CONTAINER, "Command": ["sh", "-c", f"exit {status}"]}
        made.append(plugin.provision(Spec(properties=props,
                                          tags={"t": "x", "infrakit.group": group})))
        wait_until(lambda: exited(docker_engine, made[-1]), DEADLINE, what="an exit")

    # the last four endings are reported; the last two containers of each group are kept
    # (web's 3 and 5, db's 4), however many another group's crash loop leaves
    ended = plugin.describe_ended({"t": "x"})
    assert [(e.id, e.exit_status) for e in ended] == \
        list(zip(made[1:], (2, 3, 4, 5), strict=True))
    assert {c["Names"][0][1:] for c in containers(docker_engine)} == set(made[2:])
    assert plugin.describe_instances({}, False) == []
    assert plugin.describe_ended({}) == ended
    assert sorted(learnt) == sorted(made)  # each inspected, and its logs read, once
    # one remembered without its container: destroyed already, and it is forgotten
    plugin.destroy(made[1])
    assert [e.id for e in plugin.describe_ended({})] == made[2:]
    for instance in made[2:]:
        plugin.destroy(instance)
    assert plugin.describe_ended({}) == [] and containers(docker_engine) == []


def test_an_exited_container_goes_after_the_age_limit_and_its_ending_stays(
        docker_engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_KEEP_ENDED_SECONDS", "1")
    plugin = DockerInstancePlugin(NAME, home / NAME)
    props = {**CONTAINER, "Command": ["sh", "-c", "exit 7"]}
    iid = plugin.provision(Spec(properties=props, tags={"infrakit.group": "web"}))
    wait_until(lambda: [e.exit_status for e in plugin.describe_ended({})] == [7], DEADLINE,
               what="its ending")

    def removed() -> bool:
        plugin.describe_instances({}, False)  # a listing prunes
        return containers(docker_engine) == []

    wait_until(removed, DEADLINE, what="the container to go after 1s")
    assert [e.id for e in plugin.describe_ended({})] == [iid]
    plugin.destroy(iid)


def test_containers_it_did_not_make_are_never_touched(plugin: Plugin,
                                                      docker_engine: Engine) -> None:
    inst = client(plugin)
    api = docker_engine.api
    # one with a name the plugin might have given, one with another plugin's label
    lookalike = f"{NAME}-0123456789ab"
    for name, labels in ((lookalike, {"t": "x"}), ("other-0123456789ab", {OWNER: "other"})):
        made = api.create_container(PAUSE_IMAGE, name=name, labels=labels,
                                    host_config=api.create_host_config(network_mode="none"))
        api.start(made["Id"])
    assert inst.describe_instances({}, False) == []
    for name in (lookalike, "other-0123456789ab"):
        message = error(inst.destroy, name)
        assert name in message
    assert "not made by plugin" in error(inst.destroy, lookalike)
    assert len(api.containers()) == 2  # both still running


def test_bad_input_is_refused_and_makes_nothing(plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    for image in ("busybox", "x:latest", "infrakit-test/busybox"):
        for call, arg in ((inst.validate, {**CONTAINER, "Image": image}),
                          (inst.provision, Spec(properties={**CONTAINER, "Image": image}))):
            message = error(call, arg)
            assert "Properties.Image" in message and repr(image) in message, message
            assert "not pinned" in message and IMAGE in message, message
    message = error(inst.validate, {**CONTAINER, "Image": "infrakit-test/nginx:1.25"})
    assert "'infrakit-test/nginx:1.25' is not on the Docker engine" in message
    assert f"tags present locally: {IMAGE}, {PAUSE_IMAGE}" in message
    message = error(inst.provision, Spec(properties={**CONTAINER, "Image": "x:2"}))
    assert "'x:2'" in message and IMAGE in message, message

    assert "Properties.Comand: unknown field; did you mean Command?" in error(
        inst.validate, {"Image": IMAGE, "Comand": ["true"]})
    assert "Properties.CPUs" in error(inst.validate, {**CONTAINER, "CPUs": 0})
    assert "Properties.Memory" in error(inst.validate, {**CONTAINER, "Memory": "lots"})
    assert "Properties.Mounts[0].Type: invalid enum value 'nfs'" in error(
        inst.validate, {**CONTAINER, "Mounts": [{"Target": "/m", "Type": "nfs"}]})
    assert "reserved" in error(inst.provision, Spec(properties=CONTAINER,
                                                    tags={OWNER: "x"}))

    nobody = f"{NAME}-fedcba987654"
    message = error(inst.label, nobody, {"x": "y"})
    assert repr(nobody) in message and "no container" in message
    assert "'../../etc'" in error(inst.destroy, "../../etc")
    assert containers(docker_engine) == []


# -- through the group plugin ----------------------------------------------------------------


def group_spec(size: int) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": NAME, "Properties": MEMBER},  # no Init: pause has no shell
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Tags": {"tier": "web"}}},
    })


def members(plugin: Plugin) -> set[str]:
    with RPCClient(plugin.path) as conn:
        return ids(InstanceClient(conn).describe_instances({GROUP_TAG: "web"}, False))


def converged(group: Plugin, plugin: Plugin, size: int) -> set[str]:
    """The group's members, once it says it has converged to ``size`` members that the
    instance plugin describes (else nothing)."""
    with RPCClient(group.path) as conn:
        desc = GroupClient(conn).describe_group("web")
    got = ids(desc.instances or [])
    return got if desc.converged and len(got) == size and got == members(plugin) else set()


def test_group_heals_a_killed_container_and_leaves_only_its_ending_behind(
        docker_engine: Engine, start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", str(POLL))
    plugin = start_plugin(NAME)
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    with RPCClient(group.path, timeout=30) as conn:
        groups = GroupClient(conn)
        assert groups.commit_group(group_spec(3), False) == "Managing 3 instances"
        first = wait_until(lambda: converged(group, plugin, 3), DEADLINE,
                           what="3 running members")
        victim = sorted(first)[0]
        config = docker_engine.api.inspect_container(victim)["Config"]
        assert (config["Image"], config["Entrypoint"]) == (PAUSE_IMAGE, ["/pause"])

        start = time.monotonic()
        kill(docker_engine, victim)
        # what makes the group act at its next pass: the killed member is not counted
        assert victim not in members(plugin)
        healed = wait_until(lambda: converged(group, plugin, 3), DEADLINE,
                            what="the killed member to be replaced")
        took = time.monotonic() - start
        assert victim not in healed and len(healed & first) == 2
        # noticed at the next pass, replaced at once: two polls and a container start
        assert took < 2 * POLL + 5.0, took
        running = {c["Names"][0][1:] for c in docker_engine.api.containers()}
        assert running == healed
        # the killed container is kept, exited, to tell how it ended
        [ended] = InstanceClient(RPCClient(plugin.path)).describe_ended({GROUP_TAG: "web"})
        assert (ended.id, ended.reason) == (victim, "killed by signal 9 (SIGKILL)")

        # a new instance plugin finds the same containers; the group changes nothing
        assert stop_process(plugin.proc) == 0
        plugin = start_plugin(NAME)
        assert members(plugin) == healed
        assert wait_until(lambda: converged(group, plugin, 3), DEADLINE) == healed

        groups.destroy_group("web")
    # the group destroys its members; what is left is the ended one, until destroyed
    assert [c["Names"] for c in containers(docker_engine)] == [[f"/{victim}"]]
    client(plugin).destroy(victim)
    assert containers(docker_engine) == []


# -- the tiny images -----------------------------------------------------------------------


def run_to_the_end(engine: Engine, image: str) -> tuple[int, bytes]:
    """``docker run --rm --network none IMAGE``: its exit status and output."""
    api = engine.api
    made = api.create_container(image, host_config=api.create_host_config(network_mode="none"))
    try:
        api.start(made["Id"])
        status = api.wait(made["Id"], timeout=DEADLINE)["StatusCode"]
        return status, bytes(api.logs(made["Id"], stdout=True, stderr=True))
    finally:
        api.remove_container(made["Id"], force=True)


@pytest.mark.parametrize(("bits", "build"), [(64, tinyelf.hello64), (32, tinyelf.hello32)])
def test_a_tiny_hello_image_loads_and_prints_its_message(
        docker_engine: Engine, tmp_path: Path, bits: int, build: Callable[[bytes], bytes],
) -> None:
    if bits == 32 and (problem := i386_problem(tmp_path)):
        pytest.skip(problem)
    api = docker_engine.api
    message = b"Hello Docker world!\n"
    hello = build(message)
    tag = f"infrakit-test/hello:{bits}"
    assert load(api, scratch.image_tar(hello, "hello", tag, bits)) == [tag]
    try:
        image = api.inspect_image(tag)
        assert image["Size"] == len(hello)  # the one layer holds the executable alone
        assert image["Architecture"] == scratch.ARCHITECTURES[bits]
        assert run_to_the_end(docker_engine, tag) == (0, message)
    finally:
        api.remove_image(tag)


def test_a_pause_container_exists_until_docker_stop_and_then_exits_0(
        docker_engine: Engine) -> None:
    api = docker_engine.api
    image = api.inspect_image(PAUSE_IMAGE)
    assert (image["Size"], image["Config"]["Entrypoint"]) == (116, ["/pause"])
    made = api.create_container(PAUSE_IMAGE,
                                host_config=api.create_host_config(network_mode="none"))
    api.start(made["Id"])
    try:
        # as PID 1 of its container, it gets SIGTERM only because it waits for it
        assert api.top(made["Id"])["Processes"][0][-1] == "/pause"
        start = time.monotonic()
        api.stop(made["Id"], timeout=10)
        took = time.monotonic() - start
        state = api.inspect_container(made["Id"])["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        assert took < 2.0, took  # not the 10 s after which the engine would SIGKILL it
    finally:
        api.remove_container(made["Id"], force=True)


# -- Instance.Logs ----------------------------------------------------------------------------


def _follow(inst: InstanceAPI, instance: str, offset: str, wanted: str) -> tuple[str, str]:
    """Poll the logs from ``offset`` (as ``logs -f`` does) until ``wanted`` shows."""
    text = ""
    end = time.monotonic() + DEADLINE
    while wanted not in text:
        assert time.monotonic() < end, f"{wanted!r} never came; read {text!r}"
        chunk = inst.logs(instance, offset, None, False)
        text, offset = text + chunk.data, chunk.offset
        if not chunk.data:
            time.sleep(POLL)
    return text, offset


def test_logs_of_a_container_both_streams_followed_with_the_cursor(
        plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    talker = inst.provision(Spec(properties={**CONTAINER, "Command": [
        "sh", "-c", "trap 'exit 0' TERM; echo one; sleep 0.1; echo two >&2; "
                    "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo three; "
                    "sleep 3600 & wait"]}))
    text, offset = _follow(inst, talker, "", "two\n")
    assert text == "one\ntwo\n"
    assert inst.logs(talker, "", 1, False).data == "two\n"
    now = inst.logs(talker, "", 0, False)
    assert now.data == "" and not now.ended
    in_container(docker_engine, talker, "sh", "-c", ": > /tmp/go")
    for cursor in (offset, now.offset):  # neither a line twice nor one from before
        assert _follow(inst, talker, cursor, "three\n")[0] == "three\n"
    assert "Previous: instance" in error(inst.logs, talker, "", None, True)
    assert "not a cursor" in error(inst.logs, talker, "12", None, False)
    inst.destroy(talker)


def test_logs_of_an_ended_container_and_of_none(plugin: Plugin, docker_engine: Engine) -> None:
    inst = client(plugin)
    failed = inst.provision(Spec(properties=FAILING))
    wait_until(lambda: exited(docker_engine, failed), DEADLINE, what=f"{failed} to exit")
    for previous in (False, True):
        last = inst.logs(failed, "", None, previous)
        assert last.data == "starting\nno config found\n" and last.ended
    after = inst.logs(failed, last.offset, None, False)
    assert (after.data, after.ended) == ("", True)
    inst.destroy(failed)
    assert "no container" in error(inst.logs, failed, "", None, False)
    assert "not an instance of plugin" in error(inst.logs, "web-1", "", None, False)


# -- how an ending is told, without an engine -------------------------------------------------


def test_an_ending_in_words() -> None:
    second = calendar.timegm((2026, 11, 29, 16, 47, 34))
    assert parse_time("2026-11-29T16:47:34.217334457Z") == pytest.approx(second + 0.217334457)
    assert parse_time("2026-11-29T18:47:34+02:00") == second
    assert parse_time("2026-11-29T16:47:34Z") == second
    for never in ("0001-01-01T00:00:00Z", "", None, "yesterday"):
        assert parse_time(never) == 0.0

    assert how_it_ended({"ExitCode": 2}) == ("exited with status 2", 2)
    assert how_it_ended({"ExitCode": 0}) == ("exited with status 0", 0)
    assert how_it_ended({"ExitCode": 255}) == ("exited with status 255", 255)
    assert how_it_ended({"ExitCode": 137}) == ("killed by signal 9 (SIGKILL)", None)
    assert how_it_ended({"ExitCode": 143}) == ("killed by signal 15 (SIGTERM)", None)
    assert how_it_ended({"ExitCode": 128 + 40}) == ("killed by signal 40", None)
    assert how_it_ended({"ExitCode": 137, "OOMKilled": True}) == \
        ("killed: out of memory (OOMKilled)", None)
    assert how_it_ended({"ExitCode": 1, "OOMKilled": True}) == \
        ("exited with status 1, out of memory (OOMKilled)", 1)
    assert how_it_ended({"ExitCode": 127, "Error": "exec: no such file"}) == \
        ("exited with status 127: exec: no such file", 127)

    logs = b"".join(b"line %d\n" % i for i in range(30)) + b"x" * 600 + b"\n\xff"
    lines = output_lines(logs)
    assert len(lines) == 20 and lines[0] == "line 12"
    assert lines[-2:] == ["x" * 500, "\ufffd"]


def _listed(state: str, **labels: str) -> list[Listed]:
    container = {"Id": "c1", "State": state, "Created": 5, "Labels": {OWNER: "p", **labels}}
    return [Listed("p-000000000001", container, dict(labels))]


def _never(item: Listed) -> EndedInstance | None:
    raise AssertionError(f"{item.instance} inspected as ended")


def test_a_listing_taken_while_a_destroy_runs_reports_nothing() -> None:
    endings = EndedContainers()

    def sweep(listed: list[Listed], **filters: str) -> None:
        with endings.lock:
            assert endings.sweep(listed, {OWNER: "p", **filters}, _never) == []

    for while_destroyed in (_listed("exited", g="a"), []):  # stopped, or removed, by it
        sweep(_listed("running", g="a"))
        with endings.destroying("p-000000000001"):
            sweep(while_destroyed)
            assert endings.report({}) == []
        sweep([])
        assert endings.report({}) == []

    sweep(_listed("running", g="a"))
    sweep([], g="b")  # a listing that would not have shown it
    assert endings.report({}) == []
    sweep([], g="a")
    [gone] = endings.report({"g": "a"})
    assert (gone.crashed, gone.reason, gone.started) == (False, "removed outside the plugin", 5)


def test_log_lines_of_one_instant_are_neither_lost_nor_repeated_and_answers_are_bounded(
        ) -> None:
    from infrakit.plugins.instance import docker_logs

    stamp = "2026-01-02T03:04:05.5Z"
    lines = [f"{stamp} {word}\n".encode() for word in ("aaa", "bbb", "ccc")]

    class Engine:
        def logs(self, _: str, **kw: Any) -> list[bytes]:
            assert kw["follow"] is False and kw["timestamps"] is True
            return lines

    first = docker_logs.read(Engine(), "c", None, None, ended=False, limit=8)
    assert first.data == "bbb\nccc\n"  # the last 8 bytes, whole lines
    follow = docker_logs.read(Engine(), "c", (0, 0), None, ended=True, limit=8)
    assert (follow.data, follow.ended) == ("aaa\nbbb\n", False)  # bounded: more to come
    cursor = docker_logs._cursor(follow.offset)
    rest = docker_logs.read(Engine(), "c", cursor, None, ended=True, limit=8)
    assert (rest.data, rest.ended) == ("ccc\n", True)
