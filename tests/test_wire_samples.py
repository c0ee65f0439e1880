"""The captured InfraKit v0.5 exchanges as test vectors.

(a) every request's params decode into our request struct and re-encode unchanged;
(b) every successful result decodes into our result struct and re-encodes unchanged, and our
client codec accepts every response, errors included;
(c) every Instance, Flavor and Handshake request, replayed against our real instance-file and
flavor-vanilla processes, gets an answer of the sample's shape with the id echoed exactly.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from infrakit.rpc import jsonrpc
from infrakit.spi import handshake
from infrakit.spi.flavor import FLAVOR
from infrakit.spi.group import GROUP
from infrakit.spi.instance import INSTANCE
from infrakit.spi.methods import Interface, Method
from tests.helpers import assert_same_shape, builtin_plugins, http_request

SAMPLES_NAME = "infrakit-v0.5-samples.json"


def _samples_path() -> Path | None:
    default = Path(__file__).resolve().parents[2] / "shared" / "wire" / SAMPLES_NAME
    if default.is_file():
        return default
    env = os.environ.get("INFRAKIT_WIRE_SAMPLES")
    if env and Path(env).is_file():
        return Path(env)
    return None


SAMPLES_PATH = _samples_path()
SAMPLES: list[dict[str, Any]] = (
    json.loads(SAMPLES_PATH.read_text()) if SAMPLES_PATH is not None else []
)

pytestmark = pytest.mark.skipif(
    SAMPLES_PATH is None,
    reason=f"wire samples not found: {SAMPLES_NAME} beside the project or $INFRAKIT_WIRE_SAMPLES",
)

METHODS: dict[str, Method[Any, Any]] = {**INSTANCE.methods, **FLAVOR.methods, **GROUP.methods}
HANDSHAKE_RESULTS: dict[str, type[msgspec.Struct]] = {
    "Handshake.Implements": handshake.ImplementsResult,
    "Handshake.Types": handshake.TypesResult,
    "Plugin.Implements": handshake.LegacyImplementsResult,
}
OUR_PLUGINS = ("instance-file", "flavor-vanilla")


def _id(entry: dict[str, Any]) -> str:
    req = entry["request"]
    outcome = "ok" if "result" in entry["response"] else "error"
    return f"{entry['plugin'].replace(' ', '_')}-{req['method']}-{req['id']}-{outcome}"


def _entries(pred: Callable[[dict[str, Any]], bool]) -> pytest.MarkDecorator:
    """Parametrize a test over the sample entries that ``pred`` selects."""
    chosen = [e for e in SAMPLES if pred(e)]
    return pytest.mark.parametrize("entry", chosen, ids=[_id(e) for e in chosen])


def _plain(value: Any) -> Any:
    """Encoded JSON back to plain data, so that two encodings compare as data."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _result_type(method: str) -> type[Any]:
    if method in HANDSHAKE_RESULTS:
        return HANDSHAKE_RESULTS[method]
    return METHODS[method].result


def _reference(iface: Interface) -> set[str]:
    return {wire for wire, m in iface.methods.items() if m.single is None}


def test_samples_cover_every_interface() -> None:
    """The vectors hold the traffic these tests rely on (so a wrong file cannot pass)."""
    methods = {e["request"]["method"] for e in SAMPLES}
    # the reference group plugin never labels in this capture; every other method of the
    # reference is here (our batch methods, DescribeEnded and Logs are extensions it does
    # not have)
    extensions = {"Instance.DescribeEnded", "Instance.Logs"}
    assert _reference(INSTANCE) - {"Instance.Label", *extensions} <= methods
    assert _reference(FLAVOR) <= methods
    assert {"Group.CommitGroup", "Group.DescribeGroup", "Group.InspectGroups"} <= methods
    assert {e["plugin"] for e in SAMPLES} >= set(OUR_PLUGINS)


# -- (a) requests -------------------------------------------------------------------------


@_entries(lambda e: e["request"]["method"] in METHODS)
def test_request_params_round_trip_through_request_struct(entry: dict[str, Any]) -> None:
    req = entry["request"]
    method = METHODS[req["method"]]
    decoded = msgspec.json.decode(json.dumps(req["params"]).encode(), type=method.request)
    again = _plain(decoded)
    if "result" in entry["response"]:
        # traffic the reference's own client sent: every key and every null unchanged
        assert again == req["params"]
    else:
        # hand-made probes (e.g. `{}`) decode too; what they hold survives the round trip
        for key, value in req["params"].items():
            assert again[key] == value


@_entries(lambda e: e["request"]["method"] == "Group.CommitGroup"
          and "result" in e["response"])
def test_commit_group_properties_round_trip_unchanged(entry: dict[str, Any]) -> None:
    """``Spec.Properties`` is free-form: it comes back exactly as sent, key order included."""
    params = entry["request"]["params"]
    decoded = msgspec.json.decode(json.dumps(params).encode(),
                                  type=METHODS["Group.CommitGroup"].request)
    assert decoded.spec.id == params["Spec"]["ID"]
    assert decoded.spec.properties == params["Spec"]["Properties"]
    assert list(_plain(decoded)["Spec"]["Properties"]) == list(params["Spec"]["Properties"])


# -- (b) results --------------------------------------------------------------------------


@_entries(lambda e: "result" in e["response"])
def test_result_round_trips_through_result_struct(entry: dict[str, Any]) -> None:
    method = entry["request"]["method"]
    result = entry["response"]["result"]
    decoded = msgspec.json.decode(json.dumps(result).encode(), type=_result_type(method))
    assert _plain(decoded) == result


@_entries(lambda e: e["request"]["method"] in METHODS or e["request"]["method"]
          in HANDSHAKE_RESULTS)
def test_client_codec_accepts_every_response(entry: dict[str, Any]) -> None:
    method = entry["request"]["method"]
    body = json.dumps(entry["response"]).encode()
    if "result" in entry["response"]:
        decoded = jsonrpc.decode_response(body, _result_type(method))
        assert _plain(decoded) == entry["response"]["result"]
    else:
        with pytest.raises(jsonrpc.RPCError) as info:
            jsonrpc.decode_response(body, _result_type(method))
        assert info.value.code == entry["response"]["error"]["code"]
        assert info.value.message == entry["response"]["error"]["message"]
        assert info.value.data == entry["response"]["error"]["data"]


def test_typed_client_unwraps_sample_results() -> None:
    """What a caller of the typed clients sees, for a few results with nulls in them."""
    by_method = {e["request"]["method"]: e for e in SAMPLES if "result" in e["response"]}
    inspect = [e for e in SAMPLES if e["request"]["method"] == "Group.InspectGroups"
               and "result" in e["response"]]
    groups = [METHODS["Group.InspectGroups"].unwrap(
        jsonrpc.decode_response(json.dumps(e["response"]).encode(),
                                METHODS["Group.InspectGroups"].result)) for e in inspect]
    # "Groups": null unwraps to an empty list, a real list to GroupSpec structs
    assert [] in groups
    assert any(g and g[0].id == "cattle" for g in groups)
    health = METHODS["Flavor.Healthy"].unwrap(jsonrpc.decode_response(
        json.dumps(by_method["Flavor.Healthy"]["response"]).encode(),
        METHODS["Flavor.Healthy"].result))
    assert int(health) == by_method["Flavor.Healthy"]["response"]["result"]["Health"]


# -- (c) replay against our plugins -------------------------------------------------------


@pytest.fixture(scope="module")
def our_plugins() -> Iterator[dict[str, Path]]:
    """instance-file and flavor-vanilla, running for this module, in their own home."""
    with builtin_plugins(*OUR_PLUGINS) as paths:
        yield paths


def _replay(sock: Path, request: dict[str, Any]) -> dict[str, Any]:
    raw = json.dumps(request).encode()
    answer = http_request(sock, raw)
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("application/json")
    # the id is a 64-bit integer: it must come back digit for digit, not as a float
    assert f'"id":{request["id"]}'.encode() in answer.body.replace(b" ", b"")
    resp: dict[str, Any] = answer.json()
    assert resp["id"] == request["id"]
    assert type(resp["id"]) is type(request["id"])
    return resp


def _provision(sock: Path) -> str:
    resp = _replay(sock, {"jsonrpc": "2.0", "method": "Instance.Provision",
                          "params": {"Type": "", "Spec": {"Tags": {"from": "wire-test"}}},
                          "id": 1})
    iid: str = resp["result"]["ID"]
    return iid


@_entries(lambda e: e["plugin"] in OUR_PLUGINS)
def test_replayed_request_gets_answer_of_sample_shape(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    sock = our_plugins[entry["plugin"]]
    request = copy.deepcopy(entry["request"])
    if request["method"] == "Instance.Destroy":
        # the sample's instance does not exist here: destroy one of ours instead
        request["params"]["Instance"] = _provision(sock)
    resp = _replay(sock, request)
    assert_same_shape(resp, entry["response"])
    if request["method"].startswith("Handshake."):
        # our plugin of the same kind must describe itself exactly as the reference did
        assert resp["result"] == entry["response"]["result"]
    if request["method"] in ("Instance.Destroy", "Instance.Validate", "Flavor.Validate",
                             "Flavor.Drain"):
        assert resp["result"]["OK"] is True
    if "Type" in request["params"]:
        assert resp["result"]["Type"] == request["params"]["Type"]


def test_replayed_destroy_really_destroys(our_plugins: dict[str, Path]) -> None:
    sock = our_plugins["instance-file"]
    entry = next(e for e in SAMPLES if e["request"]["method"] == "Instance.Destroy")
    request = copy.deepcopy(entry["request"])
    iid = request["params"]["Instance"] = _provision(sock)
    _replay(sock, request)
    listed = _replay(sock, {"jsonrpc": "2.0", "method": "Instance.DescribeInstances",
                            "params": {"Type": "", "Tags": {}, "Properties": False}, "id": 2})
    assert iid not in [d["ID"] for d in listed["result"]["Descriptions"]]


def test_replayed_describe_shape_with_instances(our_plugins: dict[str, Path]) -> None:
    """With members present, each description has the reference's keys (no Properties)."""
    sock = our_plugins["instance-file"]
    _provision(sock)
    group = next(e for e in SAMPLES if e["request"]["method"] == "Group.DescribeGroup"
                 and "result" in e["response"])
    sample_desc = group["response"]["result"]["Description"]["Instances"][0]
    entry = next(e for e in SAMPLES if e["request"]["method"] == "Instance.DescribeInstances")
    resp = _replay(sock, entry["request"])
    descriptions = resp["result"]["Descriptions"]
    assert descriptions
    for d in descriptions:
        assert_same_shape(d, sample_desc)


@_entries(lambda e: e["request"]["method"] == "Handshake.Implements"
          and e["plugin"] not in OUR_PLUGINS)
def test_group_handshake_implements_shape_is_ours_too(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    resp = _replay(our_plugins["instance-file"], entry["request"])
    assert_same_shape(resp, entry["response"])


@_entries(lambda e: e["request"]["method"] == "Handshake.Types"
          and e["plugin"] not in OUR_PLUGINS)
def test_group_handshake_types_request_answered(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    resp = _replay(our_plugins["instance-file"], entry["request"])
    sample_types = entry["response"]["result"]["Types"]
    types = resp["result"]["Types"]
    assert set(resp["result"]) == set(entry["response"]["result"]) == {"Types"}
    for name, listed in {**sample_types, **types}.items():
        assert "/" in name
        assert "." in listed


@_entries(lambda e: e["request"]["method"] == "Plugin.Implements")
def test_legacy_plugin_implements_answers_interfaces(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    """The reference answered the pre-0.4 handshake with an error; we answer it."""
    for kind, api in (("instance-file", "Instance"), ("flavor-vanilla", "Flavor")):
        resp = _replay(our_plugins[kind], entry["request"])
        assert "error" not in resp
        assert resp["result"] == {"Interfaces": [
            {"Name": api, "Version": "0.5.0" if api == "Instance" else "0.1.0"}]}


def _replay_error(sock: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Replay a request the sample answered with an error; check the envelope's shape."""
    resp = _replay(sock, entry["request"])
    assert set(resp) == set(entry["response"])
    assert set(resp["error"]) == set(entry["response"]["error"])
    return resp


@_entries(lambda e: e["request"].get("jsonrpc") != "2.0")
def test_wrong_jsonrpc_version_is_invalid_request(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    for sock in our_plugins.values():
        resp = _replay_error(sock, entry)
        assert resp["error"]["code"] == entry["response"]["error"]["code"] == -32600
        assert resp["error"]["message"] == entry["response"]["error"]["message"]


@_entries(lambda e: e["request"]["method"] not in METHODS
          and e["request"]["method"] not in HANDSHAKE_RESULTS)
def test_unknown_method_is_method_not_found(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    for sock in our_plugins.values():
        resp = _replay_error(sock, entry)
        assert resp["error"]["code"] == -32601
        assert entry["request"]["method"] in resp["error"]["message"]


@_entries(lambda e: e["request"]["method"].startswith("Group.")
          and e["request"].get("jsonrpc") == "2.0" and e["request"]["method"] in METHODS)
def test_group_method_on_instance_plugin_is_method_not_found(
    entry: dict[str, Any], our_plugins: dict[str, Path]
) -> None:
    """A plugin answers only the interfaces it implements."""
    resp = _replay(our_plugins["instance-file"], entry["request"])
    assert resp["error"]["code"] == -32601
