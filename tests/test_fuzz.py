"""Hostile input for every RPC method of every built-in plugin, sent to live plugin processes
over their real UNIX sockets.

Whatever arrives, a plugin must stay up and keep answering its handshake, answer every call
within a deadline, answer with a well-formed JSON-RPC 2.0 envelope (or an HTTP 4xx for a
body that is not JSON-RPC at all), and change nothing when it refuses a call. The plugins
run once for the module; hypothesis drives the requests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrakit.rpc.jsonrpc import MAX_DEPTH, nesting_exceeds
from infrakit.spi.flavor import FLAVOR
from infrakit.spi.group import GROUP
from infrakit.spi.instance import INSTANCE
from tests.conftest import StartScript
from tests.helpers import (
    PY,
    HTTPAnswer,
    answers_handshake,
    http_request,
    result_of,
    stop_process,
    wait_until,
)

#: Seconds any one call may take before the plugin counts as hung.
DEADLINE = 5.0

HANDSHAKES = ["Handshake.Implements", "Handshake.Types", "Plugin.Implements"]
METHODS = {
    # instance-file keeps no output: it answers Instance.Logs "method not found"
    "instance-file": [*(m for m in INSTANCE.methods if m != "Instance.Logs"), *HANDSHAKES],
    "instance-process": [*INSTANCE.methods, *HANDSHAKES],
    "flavor-vanilla": [*FLAVOR.methods, *HANDSHAKES],
    "flavor-combo": [*FLAVOR.methods, *HANDSHAKES],
    "group": [*GROUP.methods, *HANDSHAKES],
}
ALL_METHODS = sorted({m for ms in METHODS.values() for m in ms})
KINDS = sorted(METHODS)

#: The group every group-plugin example must leave alone (its ID is never generated).
SEED_GROUP = "seed"


# -- the plugins ----------------------------------------------------------------------------


@dataclass
class Fleet:
    """Every built-in plugin fuzzed here, running in one private INFRAKIT_HOME."""

    home: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    """Per plugin, its state as last seen: what a refused call must leave unchanged."""

    def sock(self, name: str) -> Path:
        return self.home / "plugins" / name

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self, spec: str, env: dict[str, str]) -> None:
        name = spec.partition(":")[2] or spec
        with open(self.home / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [PY, "-m", "infrakit", "plugin", "run", spec], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None and answers_handshake(self.sock(name))


def _state_files(directory: Path) -> list[tuple[str, bytes]]:
    """Every file of a state directory, with its content (a refused call changes none)."""
    if not directory.is_dir():
        return []
    return sorted((p.name, p.read_bytes()) for p in directory.iterdir() if p.is_file())


def snapshot(fleet: Fleet, kind: str) -> Any:
    """What a plugin of ``kind`` holds, as seen from outside: what it answers about its
    state, and the files it keeps it in."""
    sock = fleet.sock(kind)
    if kind == "instance-file":
        return (result_of(sock, "Instance.DescribeInstances", {"Properties": True}),
                _state_files(fleet.home / "instance-file" / kind))
    if kind == "instance-process":
        return (result_of(sock, "Instance.DescribeInstances", {"Properties": True}),
                _state_files(fleet.home / "instance-process" / kind))
    if kind == "group":
        # the database changes under the seed group's controller: only its files' names
        names = sorted(p.name for p in (fleet.home / "group" / kind).iterdir())
        return result_of(sock, "Group.InspectGroups", {}), names
    return None  # the flavors keep no state


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """The five plugin kinds under test, plus ``members`` (an instance-file plugin the seed
    group provisions into, so that the group plugin has a live group to protect)."""
    home = Path(tempfile.mkdtemp(prefix="ik", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFRAKIT_")}
    env["INFRAKIT_HOME"] = str(home)
    fleet = Fleet(home)
    try:
        for spec in [*KINDS, "instance-file:members"]:
            fleet.start(spec, env)
        for name in fleet.procs:
            wait_until(functools.partial(fleet.alive, name), 20.0, what=f"{name} to answer")
        for tag in ("a", "b"):
            result_of(fleet.sock("instance-file"), "Instance.Provision",
                      {"Spec": {"Tags": {"seed": tag}, "Properties": {"n": [1, {"x": None}]}}})
        result_of(fleet.sock("group"), "Group.CommitGroup", {"Spec": {
            "ID": SEED_GROUP, "Properties": {"Allocation": {"Size": 1},
                                             "Instance": {"Plugin": "members"},
                                             "Flavor": {"Plugin": "flavor-vanilla"}}}})
        for kind in KINDS:
            fleet.baseline[kind] = snapshot(fleet, kind)
        yield fleet
    finally:
        for proc in fleet.procs.values():
            stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


# -- strategies -----------------------------------------------------------------------------

HOSTILE_TEXT = [
    "", ".", "..", "../", "../../x", "../../../../../../etc/passwd", "/etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e%2f", "..\\..\\x", "instance-1/../instance-2",
    "instance-1\x00", "\x00", "a\x00b", "proc-1\x00../..", "instance-99999999999999999999999",
    "instance--1", "NaN", "Infinity", "1e400", "\u202e\u0000\ufeff", "\U0010ffff", " ", "x" * 4096,
]
TEXT = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))
BIG_NUMBERS = st.sampled_from([2**200, -(2**200), 2**64, 2**63, -(2**63) - 1, 1e308, -1e308,
                               5e-324, -0.0])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), BIG_NUMBERS,
                    st.floats(allow_nan=False, allow_infinity=False), TEXT)

#: Field names of the requests and of the plugins' properties, so that generated objects
#: often look almost right. Never ``Health``, ``Command`` or ``LogDir``: a value that
#: happened to be valid there would run a program or make a directory outside the home.
FIELD_NAMES = [
    "Type", "Properties", "Spec", "Specs", "Tags", "Init", "LogicalID", "Attachments", "ID",
    "Instance", "Instances", "Labels", "Allocation", "Size", "LogicalIDs", "Index", "Group",
    "Sequence", "Items", "Pretend", "Shrink", "Flavors", "Plugin", "Flavor", "Env", "Ports",
    "StopGrace", "Limits", "MaxParallel", "MaxUnhealthy", "ProvisionDeadline", "MemoryMB",
]
UNSAFE_KEYS = frozenset({"Health", "Command", "LogDir"})
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), TEXT).filter(lambda k: k not in UNSAFE_KEYS)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)

TYPE_NAMES = st.sampled_from(["", ".", "ec2", "../../x", "/etc/passwd", "..%2f", "x\x00", "."
                              * 300])
INSTANCE_IDS = st.one_of(st.sampled_from(["instance-1", "instance-2", "instance-3", "proc-1",
                                          "instance-0"]), TEXT)
#: Plugin names a group or combo spec may name: hostile ones and plugins that do not exist;
#: the only real one is a flavor, so that no group commit can ever succeed.
PLUGIN_NAMES = st.one_of(st.sampled_from([
    "../../x", "../members", "members/../../x", "/etc/passwd", "..%2fmembers", "members\x00",
    "/", "", "no-such-plugin", "flavor-vanilla", "flavor-vanilla/../../x",
    "flavor-combo", "group", "x" * 200]), TEXT).filter(lambda n: n != "members")
GROUP_IDS = st.one_of(st.sampled_from(["other", "../../x", "\x00", "", "g/../../etc"]),
                      TEXT).filter(lambda g: g != SEED_GROUP)


def _or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly of the right shape, often of any shape at all."""
    return st.one_of(strategy, strategy, JSON)


TAGS = _or_junk(st.dictionaries(TEXT, TEXT, max_size=3))
ATTACHMENTS = _or_junk(st.lists(st.fixed_dictionaries({"ID": _or_junk(TEXT)},
                                                      optional={"Type": _or_junk(TEXT)})))
SPEC = st.fixed_dictionaries({}, optional={
    "Properties": JSON, "Tags": TAGS, "Init": _or_junk(TEXT),
    "LogicalID": _or_junk(st.one_of(st.none(), TEXT)), "Attachments": ATTACHMENTS})
ALLOCATION = st.fixed_dictionaries({}, optional={
    "Size": _or_junk(st.one_of(st.integers(), BIG_NUMBERS)),
    "LogicalIDs": _or_junk(st.lists(TEXT, max_size=3))})
INDEX = st.fixed_dictionaries({}, optional={"Group": _or_junk(TEXT),
                                            "Sequence": _or_junk(st.integers())})
DESCRIPTION = st.fixed_dictionaries({"ID": _or_junk(INSTANCE_IDS)}, optional={
    "LogicalID": JSON, "Tags": TAGS, "Properties": JSON})
FLAVOR_REF = st.fixed_dictionaries({"Plugin": _or_junk(PLUGIN_NAMES)},
                                   optional={"Properties": JSON})
#: Properties that some flavor may read: vanilla's and combo's (never a health probe).
FLAVOR_PROPERTIES = _or_junk(st.one_of(
    st.fixed_dictionaries({}, optional={"Init": _or_junk(TEXT), "Tags": TAGS}),
    st.fixed_dictionaries({"Flavors": _or_junk(st.lists(FLAVOR_REF, max_size=3))})))
GROUP_PROPERTIES = _or_junk(st.fixed_dictionaries({}, optional={
    "Allocation": _or_junk(ALLOCATION),
    "Instance": _or_junk(st.fixed_dictionaries({"Plugin": _or_junk(PLUGIN_NAMES)},
                                               optional={"Properties": JSON})),
    "Flavor": _or_junk(st.fixed_dictionaries({"Plugin": _or_junk(PLUGIN_NAMES)},
                                             optional={"Properties": FLAVOR_PROPERTIES})),
    "MaxParallel": JSON, "MaxUnhealthy": JSON, "ProvisionDeadline": JSON}))

#: Per method: the fields of its params, each of roughly the right kind.
_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "Instance.Validate": {"Properties": JSON},
    "Instance.Provision": {"Spec": _or_junk(SPEC)},
    "Instance.ProvisionEach": {"Specs": _or_junk(st.lists(_or_junk(SPEC), max_size=3))},
    "Instance.Label": {"Instance": _or_junk(INSTANCE_IDS), "Labels": TAGS},
    "Instance.Destroy": {"Instance": _or_junk(INSTANCE_IDS)},
    "Instance.DescribeInstances": {"Tags": TAGS, "Properties": _or_junk(st.booleans())},
    "Instance.Logs": {"Instance": _or_junk(INSTANCE_IDS),
                      "Offset": _or_junk(st.one_of(st.from_regex(r"\d{1,30}", fullmatch=True),
                                                   st.text(max_size=30))),
                      "Tail": _or_junk(st.integers()), "Previous": _or_junk(st.booleans())},
    "Flavor.Validate": {"Properties": FLAVOR_PROPERTIES, "Allocation": _or_junk(ALLOCATION)},
    "Flavor.Prepare": {"Properties": FLAVOR_PROPERTIES, "Spec": _or_junk(SPEC),
                       "Allocation": _or_junk(ALLOCATION), "Index": _or_junk(INDEX)},
    "Flavor.PrepareEach": {"Properties": FLAVOR_PROPERTIES, "Allocation": _or_junk(ALLOCATION),
                           "Items": _or_junk(st.lists(st.fixed_dictionaries(
                               {"Spec": _or_junk(SPEC)}, optional={"Index": INDEX}),
                               max_size=3))},
    "Flavor.Healthy": {"Properties": FLAVOR_PROPERTIES, "Instance": _or_junk(DESCRIPTION)},
    "Flavor.HealthyEach": {"Properties": FLAVOR_PROPERTIES,
                           "Instances": _or_junk(st.lists(DESCRIPTION, max_size=3))},
    "Flavor.Drain": {"Properties": FLAVOR_PROPERTIES, "Instance": _or_junk(DESCRIPTION)},
    "Group.CommitGroup": {"Spec": _or_junk(st.fixed_dictionaries(
        {"ID": _or_junk(GROUP_IDS)}, optional={"Properties": GROUP_PROPERTIES})),
        "Pretend": _or_junk(st.booleans())},
    "Group.DestroyInstances": {"ID": _or_junk(GROUP_IDS),
                               "Instances": _or_junk(st.lists(INSTANCE_IDS, max_size=3)),
                               "Shrink": _or_junk(st.booleans())},
    **{m: {"ID": _or_junk(GROUP_IDS)} for m in GROUP.methods
       if m not in ("Group.CommitGroup", "Group.DestroyInstances", "Group.InspectGroups")},
}


@st.composite
def params_for(draw: st.DrawFn, method: str) -> Any:
    """The params of ``method``: its fields (some missing, some of the wrong type), a
    ``Type`` now and then, extra fields; or any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    fields = _FIELDS.get(method, {})
    params = {name: draw(value) for name, value in fields.items() if draw(st.integers(0, 5))}
    if method.split(".")[0] in ("Instance", "Flavor") and draw(st.booleans()):
        params["Type"] = draw(_or_junk(TYPE_NAMES))
    params.update(draw(st.dictionaries(KEYS, JSON, max_size=2)))  # extra fields
    return [params] if draw(st.integers(0, 9)) == 0 else params


IDS = st.one_of(st.integers(), BIG_NUMBERS, TEXT, st.none(),
                st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, st.integers(),
                                                                     max_size=1))


@st.composite
def envelopes(draw: st.DrawFn, kind: str) -> Any:
    """A JSON-RPC request, mostly well-formed, for a method ``kind`` serves (now and then
    for one it does not); some are notifications, some are batches."""
    method = draw(st.one_of(st.sampled_from(METHODS[kind]), st.sampled_from(METHODS[kind]),
                            st.sampled_from(ALL_METHODS), TEXT))
    env: dict[str, Any] = {"jsonrpc": draw(st.one_of(st.just("2.0"), st.just("2.0"), SCALARS)),
                           "method": draw(st.one_of(st.just(method), st.just(method), JSON)),
                           "params": draw(params_for(method)), "id": draw(IDS)}
    for key in list(env):
        if draw(st.integers(0, 11)) == 0:
            del env[key]  # a missing "id" makes a notification
    if draw(st.integers(0, 15)) == 0:
        env[draw(KEYS)] = draw(JSON)
    if draw(st.integers(0, 15)) == 0:
        return [env, *draw(st.lists(st.just(env), max_size=2))]  # a batch
    return env


def disarm(kind: str, payload: Any) -> Any:
    """Make sure no process-plugin request can provision: every spec gets a property the
    plugin refuses before it runs anything (it would run the spec's ``Init`` in a shell)."""
    if kind != "instance-process":
        return payload
    for env in payload if isinstance(payload, list) else [payload]:
        if not isinstance(env, dict):
            continue
        if env.get("params") is None:  # no params means an empty Spec: a shell
            env["params"] = {}
        for params in env["params"] if isinstance(env.get("params"), list) else [
                env.get("params")]:
            if not isinstance(params, dict):
                continue
            params.setdefault("Spec", {})
            specs = [params["Spec"], *(params["Specs"] if isinstance(params.get("Specs"), list)
                                       else [])]
            for spec in specs:
                if isinstance(spec, dict):
                    spec["Properties"] = {"Fuzz": spec.get("Properties")}
    return payload


# -- checking an answer ---------------------------------------------------------------------

#: Codes that answer a request whose id could not be read: they may carry a null id.
_ENVELOPE_ERRORS = (-32700, -32600, -32602)


def check_envelope(payload: Any, answer: HTTPAnswer) -> bool:
    """Fail unless ``answer`` is a well-formed answer to ``payload``; True when it is an
    error (a refused call), False for a result or an empty notification answer."""
    assert answer.status == 200, (answer.status, answer.body[:300])
    is_notification = isinstance(payload, dict) and "id" not in payload
    if answer.body == b"":
        assert is_notification, f"no answer to a call with an id: {payload!r}"
        return False
    resp = json.loads(answer.body)
    assert isinstance(resp, dict) and resp.get("jsonrpc") == "2.0", resp
    assert set(resp) in ({"jsonrpc", "result", "id"}, {"jsonrpc", "error", "id"}), resp
    if "result" in resp:
        assert not is_notification and resp["id"] == payload["id"], (payload, resp)
        return False
    err = resp["error"]
    assert set(err) == {"code", "message", "data"}, err
    assert isinstance(err["code"], int) and not isinstance(err["code"], bool), err
    assert isinstance(err["message"], str) and err["message"], err
    if resp["id"] is None and not (isinstance(payload, dict) and payload.get("id") is None):
        assert err["code"] in _ENVELOPE_ERRORS, (payload, resp)
    else:
        assert isinstance(payload, dict) and resp["id"] == payload.get("id"), (payload, resp)
    # no plugin answers a hostile request with a crash of its own
    assert "RecursionError" not in err["message"] and "Traceback" not in err["message"], err
    return True


def exchange(fleet: Fleet, kind: str, body: bytes,
             headers: dict[str, str] | None = None) -> HTTPAnswer:
    """Send one body; fail if the plugin takes longer than :data:`DEADLINE` to answer."""
    started = time.monotonic()
    answer = http_request(fleet.sock(kind), body, headers=headers, timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE
    return answer


def check_survived(fleet: Fleet, kind: str, refused: bool) -> None:
    """The plugin is alive, and a refused call left its state as it was."""
    assert fleet.alive(kind), f"{kind} died:\n{fleet.log(kind)}"
    now = snapshot(fleet, kind)
    if refused:
        assert now == fleet.baseline[kind], f"a refused call changed the state of {kind}"
    fleet.baseline[kind] = now


FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the fuzzers ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_any_request_gets_a_well_formed_answer_and_a_refusal_changes_nothing(
    fleet: Fleet, kind: str, data: st.DataObject
) -> None:
    payload = disarm(kind, data.draw(envelopes(kind)))
    answer = exchange(fleet, kind, json.dumps(payload).encode())
    refused = check_envelope(payload, answer)
    check_survived(fleet, kind, refused)


def _mangle(body: bytes, how: str, at: int, junk: bytes) -> bytes:
    at %= len(body) + 1
    if how == "insert":
        return body[:at] + junk + body[at:]
    if how == "truncate":
        return body[:at]
    return body[:at] + junk + body[at + len(junk):]  # overwrite


#: Byte sequences that break JSON or UTF-8 in ways a decoder must survive.
JUNK = st.one_of(st.sampled_from([
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\\u0000", b"\\ud800",
    b"NaN", b"-Infinity", b"1e400", b"-" + str(2**200).encode(), b"0x10", b"01", b"[" * 3000,
    b"{" * 3000, b'"', b"\\", b",", b"}", b"]", b"\r\n\r\n"]), st.binary(max_size=8))


@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_mangled_bytes_get_a_parse_error_or_an_answer(fleet: Fleet, kind: str,
                                                      data: st.DataObject) -> None:
    """Valid requests broken at a random byte: invalid UTF-8, NULs, huge or non-JSON
    numbers, truncation, deep brackets."""
    payload = disarm(kind, data.draw(envelopes(kind)))
    if kind == "instance-process" and isinstance(payload, dict):
        payload["method"] = "Instance.Validate"  # a mangled spec might yet be one to run
    body = _mangle(json.dumps(payload).encode(),
                   data.draw(st.sampled_from(["insert", "truncate", "overwrite"])),
                   data.draw(st.integers(0, 1 << 16)), data.draw(JUNK))
    answer = exchange(fleet, kind, body)
    assert answer.status == 200, (answer.status, answer.body[:300])
    refused = False
    if answer.body:
        resp = json.loads(answer.body)
        assert resp.get("jsonrpc") == "2.0" and ("result" in resp) != ("error" in resp), resp
        refused = "error" in resp
        if refused:
            assert isinstance(resp["error"]["code"], int) and resp["error"]["message"]
    check_survived(fleet, kind, refused)


# -- the cases the brief of every plugin names ----------------------------------------------


def _call(method: str, params: Any, rid: Any = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": rid}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("raw", [
    b"1e400", str(2**200).encode(), b"-" + str(2**200).encode(), b"NaN", b"Infinity",
    b"-1e400", b"1" + b"0" * 5000, b"0." + b"0" * 5000 + b"1",
], ids=["1e400", "2**200", "-2**200", "NaN", "Infinity", "-1e400", "5000-digits", "tiny"])
def test_huge_and_non_json_numbers_in_every_field(fleet: Fleet, kind: str, raw: bytes) -> None:
    """A number no float or int64 holds, in every field of every method and in the id."""
    for method in METHODS[kind]:
        payloads = [_call(method, {}, "RAW"), *(_call(method, {name: "RAW"})
                                               for name in [*_FIELDS.get(method, {}), "Type"])]
        for payload in payloads:
            body = json.dumps(disarm(kind, payload)).encode().replace(b'"RAW"', raw)
            answer = exchange(fleet, kind, body)
            assert answer.status == 200, answer
            resp = answer.json()
            assert resp["jsonrpc"] == "2.0" and ("result" in resp) != ("error" in resp), resp
            if "error" in resp:
                assert resp["error"]["code"] in (-32700, -32600, -32602, -32000), resp
            check_survived(fleet, kind, "error" in resp)


@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_is_refused_at_the_limit_with_a_clear_error(fleet: Fleet,
                                                                 kind: str) -> None:
    """Beyond :data:`MAX_DEPTH` levels a request is refused by name, whatever the stack
    depth of the server; at the limit it is read. 100,000 levels must not crash anyone."""
    method = METHODS[kind][0]
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        for depth in (100_000, MAX_DEPTH - 1):  # inside params (at depth 2), so 1 too many
            value = opener * depth + b"1" + closer * depth
            body = b'{"jsonrpc":"2.0","method":"%s","params":{"Properties":%s},"id":1}' % (
                method.encode(), value)
            resp = exchange(fleet, kind, body).json()
            assert resp["error"]["code"] == -32600, resp
            assert f"nested more than {MAX_DEPTH} levels" in resp["error"]["message"]
            check_survived(fleet, kind, True)
        unclosed = exchange(fleet, kind, b'{"params":' + opener * 100_000).json()
        assert unclosed["error"]["code"] == -32600
    at_limit = b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2)
    body = b'{"jsonrpc":"2.0","method":"Handshake.Types","params":{"X":%s},"id":1}' % at_limit
    assert "result" in exchange(fleet, kind, body).json()


@given(value=st.recursive(st.one_of(st.integers(), st.text(alphabet='[]{}"\\ax', max_size=5)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=3), inner,
                                                                  max_size=3)),
                          max_leaves=40),
       limit=st.integers(0, 12))
@settings(max_examples=300, deadline=None)
def test_nesting_check_agrees_with_the_real_depth(value: Any, limit: int) -> None:
    """The byte-level depth check, against the depth of the decoded value (brackets in
    strings and escaped quotes are the traps)."""
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    body = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_exceeds(body, limit) == (depth(value) > limit)


#: Per kind, a method and a string field of it that the plugin reads.
STRING_FIELD = {"instance-file": ("Instance.Destroy", "Instance"),
                "instance-process": ("Instance.Destroy", "Instance"),
                "flavor-vanilla": ("Flavor.Validate", "Properties"),
                "flavor-combo": ("Flavor.Validate", "Properties"),
                "group": ("Group.DescribeGroup", "ID")}


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_utf8_and_nul_bytes(fleet: Fleet, kind: str) -> None:
    """Bytes that are not UTF-8 (overlong ``/``, a lone surrogate) and raw NULs in a string
    the plugin reads, in a field it ignores, in the method name and in the id."""
    method, name = (s.encode() for s in STRING_FIELD[kind])
    for raw in (b'"\xff\xfe"', b'"instance-1\xc0\xaf..\xc0\xafx"', b'"\xed\xa0\x80"'):
        body = b'{"jsonrpc":"2.0","method":"%s","params":{"%s":%s},"id":3}' % (method, name, raw)
        resp = exchange(fleet, kind, body).json()
        assert resp["error"]["code"] in (-32700, -32602), resp
        assert "UTF-8" in resp["error"]["message"]
        check_survived(fleet, kind, True)
        for body in (b'{"jsonrpc":"2.0","method":%s,"params":{},"id":3}' % raw,
                     b'{"jsonrpc":"2.0","method":"%s","params":{},"id":%s}' % (method, raw),
                     b'{"jsonrpc":"2.0","method":"%s","params":{"Zz":%s},"id":3}' % (method,
                                                                                    raw)):
            answer = exchange(fleet, kind, body)
            resp = answer.json()
            assert ("result" in resp) != ("error" in resp), resp
            check_survived(fleet, kind, "error" in resp)
    for body in (b'{"jsonrpc":"2.0","method":"%s","params":{"%s":"i\x00"},"id":3}' % (method,
                                                                                      name),
                 b'{"jsonrpc":"2.0","method":"%s\x00","params":{},"id":3}' % method):
        resp = exchange(fleet, kind, body).json()  # a raw control byte in a string: not JSON
        assert resp["error"]["code"] in (-32700, -32602), resp
        check_survived(fleet, kind, True)


@pytest.mark.parametrize("kind", ["instance-file", "instance-process"])
@pytest.mark.parametrize("instance", [
    "../../victim", "../../../victim", "../victim.json", "/etc/passwd", "..%2f..%2fvictim",
    "instance-1/../../../victim", "instance-1\x00", "proc-1\x00", "./instance-1", "instance-01",
])
def test_instance_ids_cannot_reach_outside_the_state_directory(fleet: Fleet, kind: str,
                                                               instance: str) -> None:
    """Destroy and Label with hostile IDs: refused as unknown instances, and a file that
    the path would name, outside the plugin's directory, is untouched."""
    victims = [fleet.home / "victim", fleet.home / "victim.json",
               fleet.home / kind / "victim.json"]
    for victim in victims:
        victim.write_text("keep me")
    try:
        for method, params in (("Instance.Destroy", {"Instance": instance}),
                               ("Instance.Label", {"Instance": instance,
                                                   "Labels": {"x": "y"}})):
            payload = _call(method, params)
            answer = exchange(fleet, kind, json.dumps(payload).encode())
            assert check_envelope(payload, answer)
            assert answer.json()["error"]["code"] == -32000
            check_survived(fleet, kind, True)
        assert all(v.read_text() == "keep me" for v in victims)
    finally:
        for victim in victims:
            victim.unlink()


@pytest.mark.parametrize("plugin", ["../../x", "../members", "members/../../x", "/etc/passwd",
                                    "..%2fmembers", "members\x00", ".."])
def test_plugin_names_cannot_reach_outside_the_plugin_directory(fleet: Fleet,
                                                                plugin: str) -> None:
    """A group spec or a combo flavor naming a plugin by a path is refused by name."""
    ref = {"Allocation": {"Size": 1}, "Instance": {"Plugin": plugin},
           "Flavor": {"Plugin": "flavor-vanilla"}}
    for kind, payload in (
        ("group", _call("Group.CommitGroup", {"Spec": {"ID": "p", "Properties": ref}})),
        ("group", _call("Group.CommitGroup", {"Spec": {"ID": "p", "Properties": ref},
                                              "Pretend": True})),
        ("flavor-combo", _call("Flavor.Validate", {"Properties": {"Flavors": [
            {"Plugin": plugin}]}})),
    ):
        answer = exchange(fleet, kind, json.dumps(payload).encode())
        assert check_envelope(payload, answer)
        message = answer.json()["error"]["message"]
        assert re.search(r"not valid|no plugin named", message), message
        check_survived(fleet, kind, True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("type_name", ["../../x", "/etc/passwd", "..%2f..%2fx", "x\x00",
                                       "ec2/../..", "." * 200])
def test_type_field_is_only_a_key(fleet: Fleet, kind: str, type_name: str) -> None:
    """``Type`` routes to a sub-plugin by exact name; a path there is an unknown type."""
    method = METHODS[kind][0]
    payload = _call(method, {"Type": type_name, "ID": "x", "Instance": "instance-1"})
    answer = exchange(fleet, kind, json.dumps(payload).encode())
    assert check_envelope(payload, answer)
    if kind != "group":  # Group/0.1.0 has no types: Type is an unknown field there
        assert "no " in answer.json()["error"]["message"]
        assert f"of type {type_name!r}" in answer.json()["error"]["message"]
    check_survived(fleet, kind, True)


@pytest.mark.parametrize("kind", KINDS)
def test_batches_and_notifications(fleet: Fleet, kind: str) -> None:
    """A batch is refused as one invalid request (no plugin serves batches); a
    notification gets an empty answer; a notification of a bad call too."""
    handshake = {"jsonrpc": "2.0", "method": "Handshake.Implements", "params": {}, "id": 1}
    batches: list[list[Any]] = [[handshake], [handshake, handshake], [], [1, 2], [[]]]
    for batch in batches:
        answer = exchange(fleet, kind, json.dumps(batch).encode())
        assert check_envelope(batch, answer)
        assert answer.json()["error"]["code"] == -32600
        check_survived(fleet, kind, True)
    for method in METHODS[kind]:
        note = {"jsonrpc": "2.0", "method": method, "params": {"Type": 5, "ID": 5}}
        answer = exchange(fleet, kind, json.dumps(note).encode())
        assert (answer.status, answer.body) == (200, b"")
        check_survived(fleet, kind, True)


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def _send_all(sock_path: Path, parts: Iterator[bytes], timeout: float = 20.0) -> bytes:
    """Send ``parts`` until the server stops reading; then read its answer to the end."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(sock_path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for part in parts:
                s.sendall(part)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks)


TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked", "lying-content-length"])
def test_ten_megabyte_bodies_get_413_without_the_plugin_growing(fleet: Fleet,
                                                                 framing: str) -> None:
    """10 MB at once, streamed in chunks, or behind a Content-Length that claims less:
    a 413 (or a clean JSON-RPC error) while the plugin keeps its memory and answers."""
    kind = "instance-file"
    before = _rss_kib(fleet.procs[kind].pid)
    chunk = b" " * (1024 * 1024)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        parts = iter([head + b"Transfer-Encoding: chunked\r\n\r\n",
                      *[b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(10)],
                      b"0\r\n\r\n"])
    elif framing == "content-length":
        parts = iter([head + b"Content-Length: %d\r\n\r\n" % TEN_MB, *[chunk] * 10])
    else:  # says 100 bytes, sends 10 MB: the rest is a garbage "next request"
        parts = iter([head + b"Content-Length: 100\r\n\r\n", *[chunk] * 10])
    started = time.monotonic()
    reply = _send_all(fleet.sock(kind), parts)
    assert time.monotonic() - started < 20.0
    assert re.match(rb"HTTP/1\.1 (413|400|200) ", reply), reply[:200]
    if framing != "lying-content-length":
        assert reply.startswith(b"HTTP/1.1 413 ")
    assert fleet.alive(kind)
    assert _rss_kib(fleet.procs[kind].pid) - before < 32 * 1024, "the body was kept in memory"


# -- batch calls ----------------------------------------------------------------------------

MAX_ITEMS = 10_000


@pytest.mark.parametrize(("kind", "method", "field", "item"), [
    ("flavor-vanilla", "Flavor.HealthyEach", "Instances", {"ID": "i"}),
    ("flavor-combo", "Flavor.PrepareEach", "Items", {"Spec": {}}),
    ("instance-file", "Instance.ProvisionEach", "Specs", {"Tags": {"batch": "x"}}),
], ids=["HealthyEach", "PrepareEach", "ProvisionEach"])
def test_a_batch_call_carries_at_most_10000_items(fleet: Fleet, kind: str, method: str,
                                                   field: str, item: Any) -> None:
    """One item too many is refused by name and changes nothing; the limit itself is
    served (the group sends at most 500 a call)."""
    params: dict[str, Any] = {field: [item] * (MAX_ITEMS + 1)}
    if kind == "flavor-combo":
        params["Properties"] = {"Flavors": [{"Plugin": "flavor-vanilla"}]}
    payload = _call(method, params)
    started = time.monotonic()
    answer = exchange(fleet, kind, json.dumps(payload).encode())
    assert check_envelope(payload, answer)
    error = answer.json()["error"]
    assert error["code"] == -32602, error
    assert f"`params.{field}`" in error["message"] and "10000" in error["message"], error
    assert time.monotonic() - started < 2.0
    check_survived(fleet, kind, True)
    if kind == "flavor-vanilla":
        payload = _call(method, {field: [item] * MAX_ITEMS})
        answer = exchange(fleet, kind, json.dumps(payload).encode())
        assert len(answer.json()["result"]["Results"]) == MAX_ITEMS


def test_a_batch_call_that_would_make_a_huge_answer_is_refused(fleet: Fleet) -> None:
    """124 KB of PrepareEach: 1,613 items that each get the same 120 KB init script
    would make an answer of 200 MB. Refused, with the limit named, at once, and the
    plugin's memory stays where it was."""
    kind = "flavor-vanilla"
    before = _rss_kib(fleet.procs[kind].pid)
    payload = _call("Flavor.PrepareEach", {"Properties": {"Init": "x" * 120_000},
                                           "Items": [{"Spec": {}}] * 1613})
    started = time.monotonic()
    answer = exchange(fleet, kind, json.dumps(payload).encode())
    assert check_envelope(payload, answer)
    error = answer.json()["error"]
    assert error["code"] == -32602 and "limit of 64 MiB" in error["message"], error
    assert "`params.Items`" in error["message"], error
    assert time.monotonic() - started < 2.0
    assert _rss_kib(fleet.procs[kind].pid) - before < 32 * 1024
    check_survived(fleet, kind, True)
    fine = _call("Flavor.PrepareEach", {"Properties": {"Init": "x" * 1000},
                                        "Items": [{"Spec": {"Init": "a"}}] * 500})
    results = exchange(fleet, kind, json.dumps(fine).encode()).json()["result"]["Results"]
    assert len(results) == 500 and results[0]["Spec"]["Init"] == "a\n" + "x" * 1000
    # a health verdict holds no copy of the properties: as many instances are judged
    health = _call("Flavor.HealthyEach", {"Properties": {"Init": "x" * 120_000},
                                          "Instances": [{"ID": "i"}] * 1613})
    results = exchange(fleet, kind, json.dumps(health).encode()).json()["result"]["Results"]
    assert results == [{"Health": 1}] * 1613


# -- combos of combos -----------------------------------------------------------------------

VANILLA = {"Plugin": "flavor-vanilla", "Properties": {"Init": "echo hi"}}


def _combo(*refs: Any) -> dict[str, Any]:
    return {"Plugin": "flavor-combo", "Properties": {"Flavors": list(refs)}}


@pytest.mark.parametrize(("flavors", "limit"), [
    ([_combo(_combo(VANILLA))] * 120, "at most 32"),
    ([_combo(_combo(_combo(_combo(VANILLA))))], "at most 3"),
], ids=["wide", "deep"])
def test_a_combo_spec_too_wide_or_too_deep_is_refused_at_once(fleet: Fleet, flavors: Any,
                                                               limit: str) -> None:
    """120 combos of combos (17 KB) once held the combo's every connection to itself and
    stalled it for 60 s; now such a spec is refused by name before any call is made."""
    for method, extra in (("Flavor.Validate", {}), ("Flavor.PrepareEach", {"Items": [{
            "Spec": {}}]}), ("Flavor.HealthyEach", {"Instances": [{"ID": "i"}]})):
        payload = _call(method, {"Properties": {"Flavors": flavors}, **extra})
        started = time.monotonic()
        answer = exchange(fleet, "flavor-combo", json.dumps(payload).encode())
        assert time.monotonic() - started < 1.0
        assert check_envelope(payload, answer)
        message = answer.json()["error"]["message"]
        assert "Properties.Flavors" in message and limit in message, message
        check_survived(fleet, "flavor-combo", True)


def test_combos_calling_combos_at_once_do_not_exhaust_their_connections(fleet: Fleet) -> None:
    """Eleven calls that arrive together, each naming the combo within itself ten times,
    and so on once more (within the limits): the combo has 110 calls to itself waiting on
    110 more, more than a pool of 100 connections holds. Each is answered, at once."""
    spec = {"Flavors": [_combo(_combo(VANILLA))] * 10}
    body = json.dumps(_call("Flavor.Validate", {"Properties": spec})).encode()
    request = (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    conns = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(11)]
    try:
        for conn in conns:
            conn.settimeout(DEADLINE)
            conn.connect(os.fspath(fleet.sock("flavor-combo")))
        started = time.monotonic()
        for conn in conns:  # all at once, on connections made beforehand
            conn.sendall(request)
        replies = [_read_answer(conn) for conn in conns]
        assert time.monotonic() - started < DEADLINE
    finally:
        for conn in conns:
            conn.close()
    assert replies == [{"jsonrpc": "2.0", "result": {"Type": "", "OK": True}, "id": 7}] * 11
    check_survived(fleet, "flavor-combo", False)


def _read_answer(conn: socket.socket) -> Any:
    """The JSON body of one answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += conn.recv(65536)
    return json.loads(body)


# -- slow clients ---------------------------------------------------------------------------

SLOW_TIMEOUT = 1.5
SLOW_CAP = 12

LIMITED = f'''
import sys
from pathlib import Path

from infrakit.plugins.flavor.vanilla import VanillaFlavor
from infrakit.rpc.http import Limits
from infrakit.rpc.server import serve

serve("limited", flavor=VanillaFlavor(), directory=Path(sys.argv[1]),
      limits=Limits(read_timeout={SLOW_TIMEOUT}, idle_timeout=3.0, connections={SLOW_CAP}))
'''


class SlowClient(threading.Thread):
    """Sends a request one byte per ``pause`` seconds; records when the server cut it off
    and what it answered."""

    BODY = (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Content-Length: 80\r\n\r\n" + b" " * 80)

    def __init__(self, sock_path: Path, pause: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(os.fspath(sock_path))
        self.pause = pause
        self.started = time.monotonic()
        self.cut_after: float | None = None
        self.reply = b""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for byte in self.BODY:
                self.sock.sendall(bytes([byte]))
                # between bytes, watch for the server's answer rather than sleep
                readable, _, _ = select.select([self.sock], [], [], self.pause)
                if readable or self.stop.is_set():
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if not self.stop.is_set():
                self.cut_after = time.monotonic() - self.started
                with contextlib.suppress(OSError):
                    self.reply = self.sock.recv(4096)
            self.sock.close()


def test_slow_clients_neither_block_others_nor_stay_past_the_read_deadline(
    start_script: StartScript,
) -> None:
    """Slowloris: clients that send a byte a second hold their connections, yet a normal
    client is answered at once, and each slow one is cut off with a 408 at the read
    deadline, not kept for as long as it keeps trickling."""
    plugin = start_script(LIMITED, "limited")
    slow = [SlowClient(plugin.path, 1.0) for _ in range(SLOW_CAP - 4)]
    for client in slow:
        client.start()
    try:
        deadline = time.monotonic() + SLOW_TIMEOUT
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert result_of(plugin.path, "Flavor.Validate", {})["OK"] is True
            assert time.monotonic() - started < 0.5, "a normal call waited on the slow ones"
        for client in slow:
            client.join(SLOW_TIMEOUT + 5)
            assert not client.is_alive(), "a slow client was never cut off"
            assert client.reply.startswith(b"HTTP/1.1 408 "), client.reply
            assert client.cut_after is not None
            # the sweeper looks every read_timeout/4; a trickle never extends the deadline
            assert SLOW_TIMEOUT - 0.2 < client.cut_after < SLOW_TIMEOUT + 1.0
        assert answers_handshake(plugin.path)
    finally:
        for client in slow:
            client.stop.set()


def test_connection_cap_turns_away_clients_at_once_until_slow_ones_are_cut(
    start_script: StartScript,
) -> None:
    """With every connection held by a slow client, one more gets a 503 at once (not a
    hang); once the read deadline has cut them off, calls are answered again."""
    plugin = start_script(LIMITED, "limited")
    slow = [SlowClient(plugin.path, 1.0) for _ in range(SLOW_CAP)]
    for client in slow:
        client.start()
    try:
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(DEADLINE)
            extra.connect(os.fspath(plugin.path))
            assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 1.0

        def served() -> bool:
            with contextlib.suppress(OSError):
                return http_request(plugin.path, b"{}", timeout=DEADLINE).status == 200
            return False

        wait_until(served, SLOW_TIMEOUT + 3.0, what="the slow clients to be cut off")
        for client in slow:
            client.join(5)
            assert client.reply.startswith(b"HTTP/1.1 408 "), client.reply
    finally:
        for client in slow:
            client.stop.set()
