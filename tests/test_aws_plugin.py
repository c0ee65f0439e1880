"""The instance-aws plugin against moto's EC2 server (a real HTTP endpoint on loopback),
through a proxy that can delay visibility and throttle; the plugin runs as its own process
and is driven over its socket, and what exists is checked with a client of moto's own.

Every wait polls with a deadline. moto starts once per session and is reset per test.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infrakit.plugins.instance.aws import AwsInstancePlugin
from infrakit.rpc.client import RPCClient
from infrakit.rpc.jsonrpc import APPLICATION_ERROR
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec, Spec
from infrakit.spi.calls import InstanceAPI
from infrakit.spi.errors import CallFailed, NotFoundError
from tests.conftest import Plugin, StartPlugin
from tests.helpers import stop_process, wait_until
from tests.moto_engine import (
    AWS_VARIABLES,
    FAKE_CREDENTIALS,
    MotoServer,
    Proxy,
    aws_environment,
    ec2_proxy,
    list_instances,
    moto_client,
    tags_of,
)

NAME = "instance-aws"
OWNER = "infrakit.plugin"
LOGICAL_ID = "infrakit.logical_id"
GROUP_TAG = "infrakit.group"
CONFIG_TAG = "infrakit.config_sha"
POLL = "0.2"
CONVERGE = 40.0  # seconds: a deadline, never a sleep

@pytest.fixture(scope="session")
def image(moto: MotoServer) -> str:
    """An AMI moto knows (moto's set is the same after every reset; listing it is slow)."""
    found: str = moto_client(moto.url).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return found


@dataclass
class EC2:
    """The endpoint of a test: moto behind a proxy, and a client of moto's own."""

    proxy: Proxy
    api: Any
    image: str

    def instances(self, tags: dict[str, str] | None = None,
                  states: list[str] | None = None) -> list[dict[str, Any]]:
        return list_instances(self.api, tags, states)


@pytest.fixture
def ec2(moto: MotoServer, image: str, home: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[EC2]:
    """A fresh moto behind a fresh proxy, named by ``AWS_ENDPOINT_URL`` for the plugins
    this test starts (with fake credentials and no other source of AWS settings)."""
    moto.reset()
    for var in AWS_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    with ec2_proxy(moto.url) as proxy:
        for var, value in aws_environment(proxy.url).items():
            monkeypatch.setenv(var, value)
        api = moto_client(moto.url)
        yield EC2(proxy, api, image)


@pytest.fixture
def plugin(ec2: EC2, start_plugin: StartPlugin) -> Plugin:
    return start_plugin(NAME, None, "--log", "5")  # every call logged: credentials are not


def client(plugin: Plugin) -> InstanceAPI:
    return InstanceClient(RPCClient(plugin.path, timeout=60))


def error(call: Any, *args: Any) -> str:
    with pytest.raises(CallFailed) as info:
        call(*args)
    assert info.value.code == APPLICATION_ERROR
    assert "Traceback" not in info.value.reason
    return info.value.reason


def ids_of(instances: list[dict[str, Any]] | None) -> set[str]:
    return {i["InstanceId"] for i in instances or []}


# -- one instance at a time ------------------------------------------------------------------


def test_provision_describe_label_destroy(plugin: Plugin, ec2: EC2) -> None:
    inst = client(plugin)
    props = {"ImageId": ec2.image, "InstanceType": "t2.micro",
             "BlockDeviceMappings": [{"DeviceName": "/dev/sda1",
                                      "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}}]}
    inst.validate(props)
    web = inst.provision(Spec(properties=props, tags={"tier": "web"}, init="echo hello",
                              logical_id="web-1"))
    db = inst.provision(Spec(properties=props, tags={"tier": "db"}))

    # tags are applied at launch, to the instance and its volumes; Init is the user data
    [made] = [i for i in ec2.instances() if i["InstanceId"] == web]
    assert tags_of(made) == {"tier": "web", OWNER: NAME, LOGICAL_ID: "web-1"}
    assert made["InstanceType"] == "t2.micro"
    volumes = ec2.api.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [web]}])["Volumes"]
    assert volumes and all(tags_of(v)["tier"] == "web" for v in volumes)
    data = ec2.api.describe_instance_attribute(InstanceId=web, Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]) == b"echo hello"

    [desc] = inst.describe_instances({"tier": "web"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (web, "web-1", {"tier": "web"})
    assert {d.id for d in inst.describe_instances({}, False)} == {web, db}
    assert inst.describe_instances({"tier": "web*"}, False) == []  # no wildcard
    [full] = inst.describe_instances({"tier": "db"}, True)
    assert (full.properties["InstanceType"], full.properties["State"]) == ("t2.micro",
                                                                            "running")

    inst.label(web, {CONFIG_TAG: "v2"})
    assert [d.id for d in inst.describe_instances({CONFIG_TAG: "v2"}, False)] == [web]
    assert tags_of(ec2.instances({CONFIG_TAG: "v2"})[0])[CONFIG_TAG] == "v2"

    inst.destroy(web)
    assert [d.id for d in inst.describe_instances({}, False)] == [db]
    assert [i["InstanceId"] for i in ec2.instances()] == [db]
    inst.destroy(db)
    assert ec2.instances() == []


def test_instances_of_others_are_never_touched(plugin: Plugin, ec2: EC2) -> None:
    inst = client(plugin)
    theirs = ec2.api.run_instances(ImageId=ec2.image, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": OWNER, "Value": "someone-else"}]}],
    )["Instances"][0]["InstanceId"]
    untagged = ec2.api.run_instances(ImageId=ec2.image, MinCount=1,
                                     MaxCount=1)["Instances"][0]["InstanceId"]
    assert inst.describe_instances({}, False) == []
    for other in (theirs, untagged):
        assert f"not made by plugin {NAME}" in error(inst.destroy, other)
        assert f"not made by plugin {NAME}" in error(inst.label, other, {"x": "y"})
    nobody = "i-0123456789abcdef0"
    assert f"no EC2 instance {nobody!r}" in error(inst.label, nobody, {"x": "y"})
    assert "'../etc' is not an EC2 instance ID" in error(inst.destroy, "../etc")
    assert len(ec2.instances()) == 2  # both still running
    # terminated, another's instance is still not the plugin's to destroy
    ec2.api.terminate_instances(InstanceIds=[theirs])
    assert f"not made by plugin {NAME}" in error(inst.destroy, theirs)


def test_destroy_of_an_instance_already_terminated_succeeds(plugin: Plugin, ec2: EC2) -> None:
    inst = client(plugin)
    made = inst.provision(Spec(properties={"ImageId": ec2.image}))
    inst.destroy(made)
    ec2.proxy.reset_counts()
    inst.destroy(made)  # a retried destroy
    assert ec2.proxy.calls["TerminateInstances"] == 0
    assert f"{made} was already gone" in plugin.output()
    message = error(inst.label, made, {"x": "y"})
    assert repr(made) in message and "gone" in message and "cannot label" in message
    assert inst.describe_instances({}, False) == [] and ec2.instances() == []


def test_destroy_of_an_instance_terminated_behind_the_plugins_back_succeeds(
        plugin: Plugin, ec2: EC2) -> None:
    inst = client(plugin)
    made, keep = (inst.provision(Spec(properties={"ImageId": ec2.image})) for _ in range(2))
    ec2.api.terminate_instances(InstanceIds=[made])  # through moto's own EC2 API
    inst.destroy(made)
    assert f"{made} was already gone" in plugin.output()
    # one EC2 no longer lists at all (terminated long ago) is gone as well
    nobody = "i-0123456789abcdef0"
    inst.destroy(nobody)
    assert f"{nobody} was already gone" in plugin.output()
    assert [d.id for d in inst.describe_instances({}, False)] == [keep]
    inst.destroy(keep)
    assert ec2.instances() == []


def test_a_malformed_instance_id_is_refused_not_taken_for_gone(home: Path) -> None:
    """EC2 answers InvalidInstanceID.Malformed for an ID that no instance can have (moto
    never does): that is no instance that went away."""
    plugin = AwsInstancePlugin(NAME, home / NAME)
    fault = ClientError({"Error": {"Code": "InvalidInstanceID.Malformed",
                                   "Message": "Invalid id: \"i-0123456789ab\""}},
                        "DescribeInstances")
    made = plugin._client_error("DescribeInstances", fault)
    assert not isinstance(made, NotFoundError)
    assert "InvalidInstanceID.Malformed" in str(made)


def test_bad_properties_are_refused_and_make_nothing(plugin: Plugin, ec2: EC2) -> None:
    inst = client(plugin)
    good = {"ImageId": ec2.image, "InstanceType": "t2.micro"}
    message = error(inst.validate, {**good, "InstanceTyp": "t2.micro"})
    assert 'Unknown parameter in input: "InstanceTyp"' in message
    message = error(inst.validate, {**good, "BlockDeviceMappings": [
        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": "big"}}]})
    assert "BlockDeviceMappings[0].Ebs.VolumeSize" in message
    for field in ("MinCount", "MaxCount", "UserData", "TagSpecifications"):
        message = error(inst.validate, {**good, field: 1})
        assert message.startswith(f"Properties.{field}: may not be given"), message
    assert "Properties.ImageId: required" in error(inst.validate, {"InstanceType": "t2.micro"})

    # what only EC2 knows: the image, the instance type, the subnet
    bad_ami = {**good, "ImageId": "ami-12345678"}
    message = error(inst.validate, bad_ami)
    assert message.startswith("Properties.ImageId:") and "ami-12345678" in message
    message = error(inst.provision, Spec(properties=bad_ami))
    assert message.startswith("Properties.ImageId:") and "InvalidAMIID.NotFound" in message
    bad_type = {**good, "InstanceType": "t9.enormous"}
    assert error(inst.validate, bad_type).startswith("Properties.InstanceType:")
    message = error(inst.provision, Spec(properties=bad_type))
    assert message.startswith("Properties.InstanceType:") and "t9.enormous" in message
    message = error(inst.validate, {**good, "SubnetId": "subnet-00000000"})
    assert message.startswith("Properties.SubnetId:"), message
    assert "reserved" in error(inst.provision, Spec(properties=good, tags={OWNER: "x"}))
    assert "'aws:'" in error(inst.provision, Spec(properties=good, tags={"aws:x": "y"}))
    assert ec2.instances(states=["pending", "running", "stopped", "terminated"]) == []


def test_missing_credentials_are_a_clear_error(ec2: EC2, start_plugin: StartPlugin,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    inst = client(start_plugin(NAME))
    for call, arg in ((inst.validate, {"ImageId": ec2.image}),
                      (inst.provision, Spec(properties={"ImageId": ec2.image})),
                      (inst.describe_instances, {})):
        message = error(call, *([arg, False] if call == inst.describe_instances else [arg]))
        assert "Unable to locate credentials" in message and "AWS_ACCESS_KEY_ID" in message
    assert sum(ec2.proxy.calls.values()) == 0  # nothing was sent unsigned
    assert ec2.instances() == []


def test_one_describe_call_for_more_than_a_default_page(plugin: Plugin, ec2: EC2) -> None:
    """Each instance is a reservation of its own, and moto pages by reservation (100 by
    default): a describe of 101 members still takes one call."""
    tags = [{"Key": OWNER, "Value": NAME}, {"Key": GROUP_TAG, "Value": "big"}]
    for _ in range(101):
        ec2.api.run_instances(ImageId=ec2.image, MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": tags}])
    inst = client(plugin)
    ec2.proxy.reset_counts()
    assert len(inst.describe_instances({GROUP_TAG: "big"}, False)) == 101
    assert dict(ec2.proxy.calls) == {"DescribeInstances": 1}


def test_an_instance_ec2_does_not_know_yet_is_still_labelled_and_terminated(
        ec2: EC2, start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    """EC2 may answer InvalidInstanceID.NotFound for an instance it has just launched."""
    ec2.proxy.unknown_for = 1.0
    monkeypatch.setenv("INFRAKIT_AWS_RETRY_SECONDS", "10")
    inst = client(start_plugin(NAME))
    made = inst.provision(Spec(properties={"ImageId": ec2.image}, tags={"g": "1"}))
    inst.label(made, {"v": "2"})
    assert ec2.proxy.unknowns >= 1
    [found] = ec2.instances({"v": "2"})
    assert found["InstanceId"] == made
    other = inst.provision(Spec(properties={"ImageId": ec2.image}, tags={"g": "1"}))
    unknowns = ec2.proxy.unknowns
    inst.destroy(other)
    assert ec2.proxy.unknowns > unknowns
    assert [i["InstanceId"] for i in ec2.instances({"g": "1"})] == [made]


def test_an_instance_not_listed_yet_is_described_until_it_is_or_its_deadline_passes(
        ec2: EC2, start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    ec2.proxy.hide_for = 60.0  # EC2 lists nothing new for a minute
    first = start_plugin(NAME)
    rpc = RPCClient(first.path, timeout=60)
    inst = InstanceClient(rpc)
    made = inst.provision(Spec(properties={"ImageId": ec2.image}, tags={"g": "1"},
                              logical_id="a"))
    [desc] = inst.describe_instances({"g": "1"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (made, "a", {"g": "1"})
    assert ec2.proxy.hidden >= 1
    inst.label(made, {"v": "2"})  # and it is taggable meanwhile
    assert [d.id for d in inst.describe_instances({"v": "2"}, False)] == [made]

    # a restarted plugin still knows it
    rpc.close()
    assert stop_process(first.proc) == 0
    monkeypatch.setenv("INFRAKIT_AWS_VISIBILITY_DEADLINE", "1.5")
    inst = client(start_plugin(NAME))
    assert [d.id for d in inst.describe_instances({"g": "1"}, False)] == [made]
    # the deadline it was given at launch (the default 10 minutes) stands; a new launch
    # gets the new one, and is dropped when that passes while EC2 still does not list it
    late = inst.provision(Spec(properties={"ImageId": ec2.image}, tags={"g": "2"}))
    assert [d.id for d in inst.describe_instances({"g": "2"}, False)] == [late]
    wait_until(lambda: inst.describe_instances({"g": "2"}, False) == [], 10.0,
               what="the unlisted instance's deadline to pass")
    # once EC2 lists it, it is described from EC2 again
    ec2.proxy.hide_for = 0
    assert [d.id for d in inst.describe_instances({"g": "2"}, False)] == [late]


# -- through the group plugin ----------------------------------------------------------------


@dataclass
class Stack:
    group: Plugin
    ec2: EC2

    def commit(self, size: int, instance_type: str) -> str:
        with RPCClient(self.group.path, timeout=60) as conn:
            return GroupClient(conn).commit_group(group_spec(self.ec2.image, size,
                                                             instance_type), False)

    def converged(self, size: int, instance_type: str) -> list[dict[str, Any]] | None:
        """The members, once the group says Converged and EC2 agrees: ``size`` live
        instances of ``instance_type``."""
        with RPCClient(self.group.path, timeout=60) as conn:
            desc = GroupClient(conn).describe_group("web")
        truth = self.ec2.instances({GROUP_TAG: "web"})
        ok = (desc.converged and len(desc.instances or []) == size and len(truth) == size
              and {i["InstanceId"] for i in truth} == {d.id for d in desc.instances or []}
              and all(i["InstanceType"] == instance_type for i in truth))
        return truth if ok else None


def group_spec(image: str, size: int, instance_type: str) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": NAME, "Properties": {"ImageId": image,
                                                    "InstanceType": instance_type}},
        "Flavor": {"Plugin": "flavor-vanilla",
                   "Properties": {"Init": ["echo ready"], "Tags": {"tier": "web"}}},
    })


@pytest.fixture
def stack(plugin: Plugin, ec2: EC2, start_plugin: StartPlugin,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    start_plugin("flavor-vanilla")
    s = Stack(start_plugin("group"), ec2)
    yield s
    stop_process(s.group.proc)  # first, while the plugins it calls still answer


class Peak:
    """Samples, in a thread, how many live instances EC2 holds for the group."""

    def __init__(self, ec2: EC2) -> None:
        self.ec2 = ec2
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.counts.append(len(self.ec2.instances({GROUP_TAG: "web"})))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(self.counts, default=0)


def test_a_group_of_ec2_instances_heals_updates_and_is_destroyed(stack: Stack,
                                                                 home: Path) -> None:
    ec2 = stack.ec2
    assert stack.commit(5, "t2.micro") == "Managing 5 instances"
    members = ids_of(wait_until(lambda: stack.converged(5, "t2.micro"), CONVERGE,
                                interval=0.1, what="5 members"))
    for m in ec2.instances({GROUP_TAG: "web"}):
        tags = tags_of(m)
        assert (tags["tier"], tags[OWNER]) == ("web", NAME), tags

    # one terminated behind the group's back is replaced
    victim = sorted(members)[0]
    ec2.api.terminate_instances(InstanceIds=[victim])

    def replaced() -> set[str] | None:
        now = ids_of(stack.converged(5, "t2.micro"))
        return now if now and victim not in now else None

    healed = wait_until(replaced, CONVERGE, interval=0.1, what="a member to be replaced") or set()
    assert victim not in healed and len(healed - members) == 1

    # a rolling update changes the instance type of every member
    assert "rolling update on 5 instances" in stack.commit(5, "t3.small")
    updated = ids_of(wait_until(lambda: stack.converged(5, "t3.small"), CONVERGE * 2,
                                interval=0.1, what="the rolling update"))
    assert not updated & healed

    with RPCClient(stack.group.path, timeout=60) as conn:
        GroupClient(conn).destroy_group("web")
    wait_until(lambda: ec2.instances() == [], CONVERGE, interval=0.1,
               what="every instance to be terminated")

    # the credentials signed every call, and are nowhere the plugins wrote (logs at
    # --log 5, state files)
    written = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    assert len(written) > 3
    for secret in FAKE_CREDENTIALS.values():
        assert not any(secret.encode() in data for data in written), secret


def test_delayed_visibility_never_over_provisions(stack: Stack) -> None:
    stack.ec2.proxy.hide_for = 2.0  # several group passes
    peak = Peak(stack.ec2)
    try:
        stack.commit(5, "t2.micro")
        wait_until(lambda: stack.converged(5, "t2.micro"), CONVERGE, interval=0.1,
                   what="the group to converge while EC2 lists late")
        assert stack.ec2.proxy.hidden > 0  # the delay did hide instances
        stack.ec2.proxy.hide_for = 0
        wait_until(lambda: stack.converged(5, "t2.micro"), CONVERGE, interval=0.1)
    finally:
        most = peak.stop()
    assert most == 5, peak.counts


def test_the_group_converges_while_half_the_calls_are_throttled(stack: Stack) -> None:
    stack.ec2.proxy.throttle_every = 2
    peak = Peak(stack.ec2)
    try:
        stack.commit(5, "t2.micro")
        wait_until(lambda: stack.converged(5, "t2.micro"), CONVERGE, interval=0.1,
                   what="the group to converge under throttling")
    finally:
        most = peak.stop()
    proxy = stack.ec2.proxy
    assert proxy.throttled >= sum(proxy.calls.values()) // 2 - 1 > 0
    assert most == 5, peak.counts
