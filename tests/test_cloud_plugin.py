"""The instance-cloud plugin through libcloud's EC2 driver, against moto's EC2 server (a real
HTTP endpoint on loopback) behind the proxy of ``tests.moto_engine``, which can delay
visibility and throttle. What exists is checked with boto3, talking to moto directly.

libcloud speaks EC2's query API as GET requests, with the lists of CreateTags numbered from
0, and reads EC2's namespaces as EC2 writes them; moto's server and the proxy want POST
forms numbered from 1, and moto writes its namespace without EC2's final slash (and puts
it on error answers, where EC2 has none). :func:`query_shim`, between libcloud and the
proxy, translates both ways, so each side sees what real EC2 would send or accept.

The plugin object is driven in this process for the single-node tests, and as its own
process through the group plugin for the end-to-end one. Every wait polls with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec
import pytest

from infrakit.plugins.instance.cloud import CloudInstancePlugin
from infrakit.plugins.instance.cloud_drivers import Drivers, Place
from infrakit.rpc.client import RPCClient
from infrakit.rpc.jsonrpc import APPLICATION_ERROR
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec, Spec
from infrakit.spi.errors import CallFailed, NotFoundError, PluginError
from tests.conftest import Plugin, StartPlugin
from tests.helpers import stop_process, wait_until
from tests.moto_engine import (
    AWS_VARIABLES,
    LIVE,
    REGION,
    MotoServer,
    Proxy,
    ec2_proxy,
    list_instances,
    moto_client,
    tags_of,
)

NAME = "instance-cloud"
OWNER = "infrakit.plugin"
LOGICAL_ID = "infrakit.logical_id"
GROUP_TAG = "infrakit.group"
CONVERGE = 40.0  # seconds: a deadline, never a sleep

MOTO_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
EC2_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


def renumber(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Query lists numbered from 0 (``Tag.0.Key``) numbered from 1, as moto wants them."""
    split = [key.split(".") for key, _ in params]
    from_zero = {tuple(parts[:i]) for parts in split for i, p in enumerate(parts) if p == "0"}
    out = []
    for parts, (_, value) in zip(split, params, strict=True):
        fixed = [str(int(p) + 1) if p.isdigit() and tuple(parts[:i]) in from_zero else p
                 for i, p in enumerate(parts)]
        out.append((".".join(fixed), value))
    return out


@contextlib.contextmanager
def query_shim(upstream: str) -> Iterator[str]:
    """A loopback HTTP server that forwards libcloud's EC2 calls to ``upstream`` as POST
    forms and gives moto's answers EC2's namespaces; yields its URL."""
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the proxy behind counts the calls."""

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            query = urlsplit(self.path).query
            params = parse_qsl(query or body, keep_blank_values=True)
            form = urlencode(renumber(params)).encode()
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "keep-alive", "content-length",
                                            "content-type")}
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
            try:
                conn.request("POST", "/", form, headers)
                resp = conn.getresponse()
                data = resp.read().replace(MOTO_NAMESPACE, EC2_NAMESPACE)
                status = resp.status
                kind = resp.getheader("Content-Type") or "text/xml"
            finally:
                conn.close()
            if status >= 400:
                data = data.replace(b"<Response " + EC2_NAMESPACE + b">", b"<Response>")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ec2-shim", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_renumber_shifts_only_lists_numbered_from_zero() -> None:
    assert renumber([("Action", "CreateTags"), ("ResourceId.0", "i-1"), ("Tag.0.Key", "a"),
                     ("Tag.1.Key", "b"), ("Filter.1.Name", "x"), ("Filter.1.Value.1", "y")]) \
        == [("Action", "CreateTags"), ("ResourceId.1", "i-1"), ("Tag.1.Key", "a"),
            ("Tag.2.Key", "b"), ("Filter.1.Name", "x"), ("Filter.1.Value.1", "y")]


@pytest.fixture(scope="session")
def image(moto: MotoServer) -> dict[str, Any]:
    """An AMI moto knows (moto's set is the same after every reset; listing it is slow)."""
    images = moto_client(moto.url).describe_images(Owners=["amazon"])["Images"]
    names = [i["Name"] for i in images]
    found: dict[str, Any] = next(i for i in images if names.count(i["Name"]) == 1)
    return found


@dataclass
class EC2:
    """The endpoint of a test: moto behind the proxy and the shim, and boto3 on moto."""

    proxy: Proxy
    api: Any
    image: str
    image_name: str

    def instances(self, tags: dict[str, str] | None = None,
                  states: list[str] | None = None) -> list[dict[str, Any]]:
        return list_instances(self.api, tags, states)

    def tags(self, instance: str) -> dict[str, str]:
        [found] = [i for i in self.instances(states=[*LIVE, "terminated"])
                   if i["InstanceId"] == instance]
        return tags_of(found)

    def state(self, instance: str) -> str:
        answer = self.api.describe_instances(InstanceIds=[instance])
        state: str = answer["Reservations"][0]["Instances"][0]["State"]["Name"]
        return state


@pytest.fixture
def ec2(moto: MotoServer, image: dict[str, Any], home: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[EC2]:
    """A fresh moto behind a fresh proxy and shim, named by ``$INFRAKIT_CLOUD_ENDPOINT``
    for the plugins this test makes, with fake credentials."""
    moto.reset()
    for var in AWS_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with ec2_proxy(moto.url) as proxy, query_shim(proxy.url) as shim:
        monkeypatch.setenv("INFRAKIT_CLOUD_ENDPOINT", shim)
        monkeypatch.setenv("INFRAKIT_CLOUD_KEY", "testing")
        monkeypatch.setenv("INFRAKIT_CLOUD_SECRET", "testing")
        monkeypatch.setenv("INFRAKIT_CLOUD_DRIVER_ARGS",
                           json.dumps({"ec2": {"signature_version": "4"}}))
        yield EC2(proxy, moto_client(moto.url), image["ImageId"], image["Name"])


@pytest.fixture
def cloud(ec2: EC2, home: Path) -> CloudInstancePlugin:
    return CloudInstancePlugin(NAME, home / "instance-cloud")


def props(ec2: EC2, **more: Any) -> dict[str, Any]:
    return {"Driver": "ec2", "Region": REGION, "Size": "t2.micro", "Image": ec2.image, **more}


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(PluginError) as info:
        call(*args)
    return str(info.value)


# -- one node at a time ----------------------------------------------------------------------


def test_metadata_style_provision_describe_label_destroy(cloud: CloudInstancePlugin,
                                                         ec2: EC2) -> None:
    good = props(ec2)
    cloud.validate(good)
    web = cloud.provision(Spec(properties=good, tags={"tier": "web"}, init="echo hello",
                               logical_id="web-1"))
    db = cloud.provision(Spec(properties=props(ec2, TagStyle="metadata"),
                              tags={"tier": "db"}))

    # tags are EC2 tags from the launch on; Init is the user data
    tags = ec2.tags(web)
    assert tags.pop("Name").startswith(f"{NAME}-")
    assert tags == {"tier": "web", OWNER: NAME, LOGICAL_ID: "web-1"}
    data = ec2.api.describe_instance_attribute(InstanceId=web, Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]) == b"echo hello"
    [made] = [i for i in ec2.instances() if i["InstanceId"] == web]
    assert (made["InstanceType"], made["ImageId"]) == ("t2.micro", ec2.image)

    [desc] = cloud.describe_instances({"tier": "web"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (web, "web-1", {"tier": "web"})
    assert {d.id for d in cloud.describe_instances({}, False)} == {web, db}
    assert cloud.describe_instances({"tier": "web*"}, False) == []  # no wildcard
    [full] = cloud.describe_instances({"tier": "db"}, True)
    assert (full.properties["Driver"], full.properties["State"]) == ("ec2", "running")
    assert full.properties["TagStyle"] == "metadata"

    ec2.proxy.reset_counts()
    cloud.label(web, {"infrakit.config_sha": "v2"})
    assert ec2.tags(web)["infrakit.config_sha"] == "v2"
    assert [d.id for d in cloud.describe_instances({"infrakit.config_sha": "v2"}, False)] \
        == [web]
    assert ec2.proxy.calls["CreateTags"] == 1

    cloud.destroy(web)
    assert ec2.state(web) in ("shutting-down", "terminated")
    assert [d.id for d in cloud.describe_instances({}, False)] == [db]
    cloud.destroy(db)
    assert ec2.instances() == []
    assert cloud.describe_instances({}, False) == []


def test_name_style_keeps_tags_in_the_state_file(cloud: CloudInstancePlugin, ec2: EC2,
                                                 home: Path) -> None:
    spec = Spec(properties=props(ec2, TagStyle="name"), tags={"tier": "web"}, init="echo hi",
                logical_id="web-1")
    web = cloud.provision(spec)
    other = cloud.provision(Spec(properties=props(ec2, TagStyle="name"), tags={"tier": "db"}))

    # on EC2 the node carries nothing but its name; the tags are the plugin's own record
    tags = ec2.tags(web)
    assert list(tags) == ["Name"] and tags["Name"].startswith(f"{NAME}-")
    data = ec2.api.describe_instance_attribute(InstanceId=web, Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]) == b"echo hi"
    state = json.loads((home / "instance-cloud" / "state.json").read_bytes())
    assert state["Named"][tags["Name"]]["Tags"] == {"tier": "web"}

    [desc] = cloud.describe_instances({"tier": "web"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (web, "web-1", {"tier": "web"})
    cloud.label(web, {"v": "2"})
    assert ec2.tags(web) == tags  # nothing written to EC2
    assert [d.id for d in cloud.describe_instances({"v": "2"}, False)] == [web]

    # a plugin restarted on the same directory knows the same
    again = CloudInstancePlugin(NAME, home / "instance-cloud")
    [desc] = again.describe_instances({"v": "2"}, True)
    assert (desc.id, desc.tags, desc.properties["TagStyle"]) == (
        web, {"tier": "web", "v": "2"}, "name")
    again.destroy(web)
    assert ec2.state(web) in ("shutting-down", "terminated")
    assert [d.id for d in again.describe_instances({}, False)] == [other]
    state = json.loads((home / "instance-cloud" / "state.json").read_bytes())
    assert tags["Name"] not in state["Named"]
    again.destroy(other)
    assert ec2.instances() == []


def test_nodes_of_others_are_never_touched(cloud: CloudInstancePlugin, ec2: EC2) -> None:
    # the plugin has made nodes in both styles, so it looks in both
    mine = cloud.provision(Spec(properties=props(ec2)))
    named = cloud.provision(Spec(properties=props(ec2, TagStyle="name")))
    theirs = ec2.api.run_instances(ImageId=ec2.image, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": OWNER, "Value": "someone-else"},
                                              {"Key": "Name", "Value": f"{NAME}-0123456789ab"}]}],
    )["Instances"][0]["InstanceId"]
    untagged = ec2.api.run_instances(ImageId=ec2.image, MinCount=1,
                                     MaxCount=1)["Instances"][0]["InstanceId"]
    assert {d.id for d in cloud.describe_instances({}, False)} == {mine, named}
    for other in (theirs, untagged):
        with pytest.raises(NotFoundError, match=f"not made by plugin {NAME}; refusing to "
                                                "destroy"):
            cloud.destroy(other)
        with pytest.raises(NotFoundError, match=f"not made by plugin {NAME}"):
            cloud.label(other, {"x": "y"})
    nobody = "i-0123456789abcdef0"
    assert f"no node {nobody!r} where plugin {NAME} makes nodes" in refused(
        cloud.label, nobody, {"x": "y"})
    assert "'../etc' is not a node ID" in refused(cloud.destroy, "../etc")
    assert len(ec2.instances()) == 4  # all still running
    # terminated, another's node is still not the plugin's to destroy
    ec2.api.terminate_instances(InstanceIds=[theirs])
    with pytest.raises(NotFoundError, match=f"not made by plugin {NAME}; refusing to destroy"):
        cloud.destroy(theirs)
    assert "'infrakit.plugin' is reserved" in refused(cloud.label, mine, {OWNER: "x"})


def gone_logged(caplog: pytest.LogCaptureFixture, instance: str) -> bool:
    return any(f"{instance} was already gone" in r.getMessage() and r.levelname == "INFO"
               for r in caplog.records)


@pytest.mark.parametrize("style", ["metadata", "name"])
def test_destroy_of_a_node_already_destroyed_succeeds(
        cloud: CloudInstancePlugin, ec2: EC2, style: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="infrakit.plugins.instance.cloud")
    made = cloud.provision(Spec(properties=props(ec2, TagStyle=style)))
    cloud.destroy(made)
    ec2.proxy.reset_counts()
    cloud.destroy(made)  # a retried destroy
    assert ec2.proxy.calls["TerminateInstances"] == 0 and gone_logged(caplog, made)
    message = refused(cloud.label, made, {"x": "y"})
    assert repr(made) in message and "gone" in message and "cannot label" in message
    assert cloud.describe_instances({}, False) == [] and ec2.instances() == []


def test_destroy_of_a_node_destroyed_through_the_driver_succeeds(
        cloud: CloudInstancePlugin, ec2: EC2, home: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="infrakit.plugins.instance.cloud")
    tagged = cloud.provision(Spec(properties=props(ec2)))
    named = cloud.provision(Spec(properties=props(ec2, TagStyle="name"), tags={"t": "x"}))
    keep = cloud.provision(Spec(properties=props(ec2)))
    # libcloud's own driver, made apart from the plugin, destroys two of them
    driver = Drivers(5).driver(Place(driver="ec2", region=REGION, tag_style="metadata"))
    for node in driver.list_nodes(ex_node_ids=[tagged, named]):
        assert driver.destroy_node(node)
    for instance in (tagged, named):
        cloud.destroy(instance)
        assert gone_logged(caplog, instance)
    # one no longer listed at all is gone as well
    nobody = "i-0123456789abcdef0"
    cloud.destroy(nobody)
    assert gone_logged(caplog, nobody)
    assert [d.id for d in cloud.describe_instances({}, False)] == [keep]
    state = json.loads((home / "instance-cloud" / "state.json").read_bytes())
    assert state["Named"] == {}  # the tags it kept for the named node went with it
    cloud.destroy(keep)
    assert ec2.instances() == []


def test_an_id_belonging_to_nobody_before_anything_was_made(cloud: CloudInstancePlugin,
                                                            ec2: EC2) -> None:
    message = refused(cloud.label, "i-0123456789abcdef0", {"a": "b"})
    assert "where plugin instance-cloud makes nodes (nowhere yet)" in message
    assert sum(ec2.proxy.calls.values()) == 0


def test_bad_properties_are_refused_and_make_nothing(cloud: CloudInstancePlugin,
                                                     ec2: EC2) -> None:
    good = props(ec2)
    assert "Properties.Driver: 'ec3' is not a libcloud compute driver; did you mean ec2" \
        in refused(cloud.validate, {**good, "Driver": "ec3"})
    assert "Properties.Sise: unknown field; did you mean Size?" in refused(cloud.validate,
                                                                          {**good, "Sise": "x"})
    assert "Properties.Region: 'us-moon-1' is not a region of driver 'ec2'" \
        in refused(cloud.validate, {**good, "Region": "us-moon-1"})
    message = refused(cloud.validate, {**good, "Extra": {"ex_keynam": "k"}})
    assert message.startswith("Properties.Extra.ex_keynam: not an argument of driver 'ec2'"), \
        message
    assert "did you mean ex_keyname?" in message
    for taken in ("ex_userdata", "ex_metadata", "ex_maxcount", "name"):
        assert refused(cloud.validate, {**good, "Extra": {taken: "x"}}).startswith(
            f"Properties.Extra.{taken}: may not be given")
    assert refused(cloud.validate, {**good, "TagStyle": "metadata", "Driver": "linode"}) \
        .startswith("Properties.TagStyle: driver 'linode' cannot keep tags")
    message = refused(cloud.provision, Spec(properties={**good, "Driver": "linode"},
                                            init="echo hi"))
    assert message.startswith("Spec.Init: driver 'linode' takes no user data")
    assert "reserved" in refused(cloud.provision, Spec(properties=good, tags={OWNER: "x"}))
    assert sum(ec2.proxy.calls.values()) == 0  # all of that was refused before any call

    # what only EC2 knows
    bad_image = {**good, "Image": "ami-12345678"}
    message = refused(cloud.validate, bad_image)
    assert message.startswith("Properties.Image: ec2 (us-east-1) has no image "
                              "'ami-12345678'"), message
    assert refused(cloud.provision, Spec(properties=bad_image)).startswith("Properties.Image:")
    message = refused(cloud.validate, {**good, "Size": "t9.enormous"})
    assert message.startswith("Properties.Size: ec2 (us-east-1) has no size 't9.enormous'")
    assert refused(cloud.provision, Spec(properties={**good, "Size": "t9.enormous"})) \
        .startswith("Properties.Size:")
    # an argument of the right name and the wrong kind is the driver's to refuse
    message = refused(cloud.provision, Spec(properties={**good, "Extra": {"ex_subnet": "s"}}))
    assert message.startswith("Properties.Extra: the driver's create_node refused"), message
    assert ec2.proxy.calls["RunInstances"] == 0
    assert ec2.instances(states=["pending", "running", "terminated"]) == []


def test_an_image_may_be_named(cloud: CloudInstancePlugin, ec2: EC2) -> None:
    spec = Spec(properties=props(ec2, Image=ec2.image_name))
    cloud.validate(spec.properties)
    made = cloud.provision(spec)
    [instance] = ec2.instances()
    assert (instance["InstanceId"], instance["ImageId"]) == (made, ec2.image)


def test_missing_credentials_are_a_clear_error(cloud: CloudInstancePlugin, ec2: EC2,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFRAKIT_CLOUD_SECRET")
    for call, arg in ((cloud.validate, props(ec2)),
                      (cloud.provision, Spec(properties=props(ec2)))):
        message = refused(call, arg)
        assert message == ("credentials for driver 'ec2' are missing: set $INFRAKIT_CLOUD_KEY "
                           "and $INFRAKIT_CLOUD_SECRET in the plugin's environment"), message
        assert "testing" not in message
    assert sum(ec2.proxy.calls.values()) == 0  # nothing was sent
    assert ec2.instances() == []


def test_missing_credentials_over_rpc_are_an_error_not_a_traceback(
        ec2: EC2, start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFRAKIT_CLOUD_KEY")
    inst = InstanceClient(RPCClient(start_plugin(NAME).path, timeout=60))
    with pytest.raises(CallFailed) as info:
        inst.provision(Spec(properties=props(ec2)))
    assert info.value.code == APPLICATION_ERROR
    assert "Traceback" not in info.value.reason
    assert "set $INFRAKIT_CLOUD_KEY and $INFRAKIT_CLOUD_SECRET" in info.value.reason
    assert ec2.instances() == []


def test_throttled_calls_are_retried(ec2: EC2, home: Path) -> None:
    cloud = CloudInstancePlugin(NAME, home / "instance-cloud", retry_seconds=15)
    # a third of the calls are refused (libcloud lists nodes with two calls, DescribeInstances
    # then DescribeAddresses, and retries them together: with half, the second would always
    # be the one refused)
    ec2.proxy.throttle_every = 3
    made = cloud.provision(Spec(properties=props(ec2), tags={"t": "1"}))
    assert [d.id for d in cloud.describe_instances({"t": "1"}, False)] == [made]
    cloud.label(made, {"u": "2"})
    cloud.destroy(made)
    assert ec2.proxy.throttled > 0
    assert ec2.proxy.calls["RunInstances"] >= 1
    assert ec2.instances(states=["pending", "running", "terminated"])[0]["InstanceId"] == made
    assert ec2.instances() == []


def test_throttling_past_the_bound_is_an_error(ec2: EC2, home: Path) -> None:
    cloud = CloudInstancePlugin(NAME, home / "instance-cloud", retry_seconds=0.5)
    ec2.proxy.throttle_every = 1  # every call
    message = refused(cloud.provision, Spec(properties=props(ec2)))
    assert "RequestLimitExceeded" in message and "still failing after 0.5 s" in message
    assert ec2.proxy.throttled >= 2


def test_a_node_not_listed_yet_is_described_until_it_is_or_its_deadline_passes(
        ec2: EC2, home: Path) -> None:
    ec2.proxy.hide_for = 60.0  # EC2 lists nothing new for a minute
    cloud = CloudInstancePlugin(NAME, home / "instance-cloud", visibility_deadline=60)
    made = cloud.provision(Spec(properties=props(ec2), tags={"g": "1"}, logical_id="a"))
    [desc] = cloud.describe_instances({"g": "1"}, False)
    assert (desc.id, desc.logical_id, desc.tags) == (made, "a", {"g": "1"})
    assert ec2.proxy.hidden >= 1
    cloud.label(made, {"v": "2"})  # taggable and destroyable meanwhile
    assert [d.id for d in cloud.describe_instances({"v": "2"}, False)] == [made]
    cloud.destroy(made)
    assert cloud.describe_instances({}, False) == []

    short = CloudInstancePlugin(NAME, home / "instance-cloud", visibility_deadline=1.0)
    late = short.provision(Spec(properties=props(ec2, TagStyle="name"), tags={"g": "2"}))
    assert [d.id for d in short.describe_instances({"g": "2"}, False)] == [late]
    wait_until(lambda: short.describe_instances({"g": "2"}, False) == [], 10.0,
               what="the unlisted node's deadline to pass")
    ec2.proxy.hide_for = 0  # once EC2 lists it, it is described from EC2 again
    assert [d.id for d in short.describe_instances({"g": "2"}, False)] == [late]


def test_a_node_the_provider_does_not_know_yet_is_still_labelled_and_destroyed(
        ec2: EC2, home: Path) -> None:
    """EC2 may answer InvalidInstanceID.NotFound for an instance it has just launched."""
    ec2.proxy.unknown_for = 1.0
    cloud = CloudInstancePlugin(NAME, home / "instance-cloud", retry_seconds=10)
    made = cloud.provision(Spec(properties=props(ec2), tags={"g": "1"}))
    cloud.label(made, {"v": "2"})
    assert ec2.proxy.unknowns >= 1 and ec2.tags(made)["v"] == "2"
    other = cloud.provision(Spec(properties=props(ec2), tags={"g": "1"}))
    unknowns = ec2.proxy.unknowns
    cloud.destroy(other)
    assert ec2.proxy.unknowns > unknowns
    wait_until(lambda: ec2.state(other) in ("shutting-down", "terminated"), 10,
               what="the node to be terminated")


# -- through the group plugin ----------------------------------------------------------------


def group_spec(image: str, size: int) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": NAME, "Properties": {"Driver": "ec2", "Region": REGION,
                                                    "Size": "t2.micro", "Image": image}},
        "Flavor": {"Plugin": "flavor-vanilla",
                   "Properties": {"Init": ["echo ready"], "Tags": {"tier": "web"}}},
    })


def converged(group: Plugin, ec2: EC2, size: int) -> set[str] | None:
    """The members, once the group says Converged and EC2 agrees."""
    with RPCClient(group.path, timeout=60) as conn:
        desc = GroupClient(conn).describe_group("web")
    truth = {i["InstanceId"] for i in ec2.instances({GROUP_TAG: "web"})}
    said = {d.id for d in desc.instances or []}
    return truth if desc.converged and len(truth) == size and truth == said else None


def test_a_group_of_nodes_converges_heals_and_is_destroyed(
        ec2: EC2, start_plugin: StartPlugin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin(NAME)
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    try:
        with RPCClient(group.path, timeout=60) as conn:
            assert GroupClient(conn).commit_group(group_spec(ec2.image, 3), False) \
                == "Managing 3 instances"
        members = wait_until(lambda: converged(group, ec2, 3), CONVERGE, interval=0.1,
                             what="3 members") or set()
        for m in ec2.instances({GROUP_TAG: "web"}):
            tags = tags_of(m)
            assert (tags["tier"], tags[OWNER]) == ("web", NAME), tags
            data = ec2.api.describe_instance_attribute(InstanceId=m["InstanceId"],
                                                       Attribute="userData")
            assert b"echo ready" in base64.b64decode(data["UserData"]["Value"])

        victim = sorted(members)[0]
        ec2.api.terminate_instances(InstanceIds=[victim])  # behind the group's back

        def replaced() -> set[str] | None:
            now = converged(group, ec2, 3)
            return now if now and victim not in now else None

        healed = wait_until(replaced, CONVERGE, interval=0.1,
                            what="a member to be replaced") or set()
        assert len(healed - members) == 1

        with RPCClient(group.path, timeout=60) as conn:
            GroupClient(conn).destroy_group("web")
        wait_until(lambda: ec2.instances() == [], CONVERGE, interval=0.1,
                   what="every node to be terminated")
        assert len(ec2.instances(states=["terminated"])) == 4
    finally:
        stop_process(group.proc)  # first, while the plugins it calls still answer


def test_the_state_file_is_plain_json(cloud: CloudInstancePlugin, ec2: EC2,
                                      home: Path) -> None:
    made = cloud.provision(Spec(properties=props(ec2), tags={"a": "b"}))
    raw = (home / "instance-cloud" / "state.json").read_bytes()
    assert msgspec.json.decode(raw)["Launched"][made]["Tags"] == {"a": "b"}
    assert (home / "instance-cloud" / "state.json").stat().st_mode & 0o777 == 0o600
