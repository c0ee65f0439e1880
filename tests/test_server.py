"""The plugin server, run as real processes on real UNIX sockets: handshakes, routing of
typed sub-plugins, concurrency, error mapping, HTTP edge cases and the socket's life."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, Plugin, Processes, StartPlugin, StartScript
from tests.helpers import (
    PY,
    answers_handshake,
    error_of,
    http_request,
    post_json,
    require_engine,
    result_of,
    rpc,
    stop_process,
    wait_until,
)

MULTI = '''
import asyncio
import sys
import time
from pathlib import Path

from infrakit.rpc.server import serve
from infrakit.spi.errors import PluginError
from infrakit.spi.types import Description

MARKS = Path(sys.argv[1]).parent / "marks"


def mark(props):
    if "mark" in props:
        MARKS.mkdir(exist_ok=True)
        (MARKS / props["mark"]).write_text("started")


class A:
    tag = "A"

    def validate(self, properties):
        props = properties or {}
        mark(props)
        if "sleep" in props:
            time.sleep(props["sleep"])
        if props.get("raise") == "plugin":
            raise PluginError("Properties.Size: must be positive")
        if props.get("raise") == "key":
            raise KeyError("missing-key")

    def provision(self, spec):
        return f"{self.tag}-{spec.init}"

    async def label(self, instance, labels):
        mark(labels)
        if "sleep" in labels:
            await asyncio.sleep(float(labels["sleep"]))
        if labels.get("raise") == "plugin":
            raise PluginError(f"async {self.tag} refused {instance}")

    def destroy(self, instance):
        pass

    async def describe_instances(self, tags, properties):
        await asyncio.sleep(0)
        return [Description(id=f"{self.tag}-1", tags={"served-by": self.tag, "style": "async"})]


class B(A):
    tag = "B"

    def describe_instances(self, tags, properties):
        return [Description(id="B-1", tags={"served-by": "B", "style": "sync"})]


serve("multi", instance={".": A(), "ec2": B()}, directory=Path(sys.argv[1]))
'''


@pytest.fixture
def multi(start_script: StartScript) -> Plugin:
    return start_script(MULTI, "multi")


def _marked(home: Path, name: str) -> bool:
    return (home / "marks" / name).exists()


class Call(threading.Thread):
    """One RPC call in the background; records its answer and when it arrived."""

    def __init__(self, sock: Path, method: str, params: Any, timeout: float = 20.0) -> None:
        super().__init__(daemon=True)
        self.args_ = (sock, method, params)
        self.timeout = timeout
        self.answer: Any = None
        self.error: BaseException | None = None
        self.done_at = 0.0

    def run(self) -> None:
        try:
            self.answer = rpc(*self.args_, timeout=self.timeout)
        except BaseException as exc:
            self.error = exc
        self.done_at = time.monotonic()


# -- handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "api", "version"), [
    ("instance-file", "Instance", "0.5.0"), ("flavor-vanilla", "Flavor", "0.1.0")])
def test_builtin_handshakes(start_plugin: StartPlugin, kind: str, api: str,
                            version: str) -> None:
    sock = start_plugin(kind).path
    spec = {"Name": api, "Version": version}
    assert result_of(sock, "Handshake.Implements") == {"APIs": [spec]}
    assert result_of(sock, "Handshake.Types") == {"Types": {f"{api}/{version}": ["."]}}
    assert result_of(sock, "Plugin.Implements") == {"Interfaces": [spec]}


def test_info_api_json_describes_methods(instance_file: Path) -> None:
    answer = http_request(instance_file, method="GET", path="/info/api.json", headers={})
    assert answer.status == 200
    info = answer.json()
    assert info["Name"] == "instance-file"
    assert "Instance.Provision" in info["Methods"]
    assert "Handshake.Implements" in info["Methods"]


# -- typed sub-plugins ----------------------------------------------------------------------


def test_handshake_types_lists_every_type(multi: Plugin) -> None:
    assert result_of(multi.path, "Handshake.Types") == {"Types": {"Instance/0.5.0": [".", "ec2"]}}
    assert result_of(multi.path, "Handshake.Implements") == {
        "APIs": [{"Name": "Instance", "Version": "0.5.0"}]}


@pytest.mark.parametrize(("type_name", "served_by"), [("", "A"), (".", "A"), ("ec2", "B")])
def test_type_field_routes_to_sub_plugin(multi: Plugin, type_name: str, served_by: str) -> None:
    res = result_of(multi.path, "Instance.Provision", {"Type": type_name, "Spec": {"Init": "x"}})
    assert res == {"Type": type_name, "ID": f"{served_by}-x"}
    res = result_of(multi.path, "Instance.DescribeInstances", {"Type": type_name})
    assert res["Type"] == type_name
    assert [d["Tags"]["served-by"] for d in res["Descriptions"]] == [served_by]


def test_missing_type_field_reaches_default_type(multi: Plugin) -> None:
    res = result_of(multi.path, "Instance.Provision", {"Spec": {"Init": "y"}})
    assert res["ID"] == "A-y"


def test_unknown_type_is_application_error_naming_it(multi: Plugin) -> None:
    err = error_of(multi.path, "Instance.Provision", {"Type": "gce", "Spec": {}}, rid=77)
    assert err["code"] == -32000
    assert "'gce'" in err["message"]
    assert err["data"] is None


# -- sync and async plugin methods -----------------------------------------------------------


def test_sync_and_async_methods_both_answer(multi: Plugin) -> None:
    # A.describe_instances is async, B.describe_instances and A.validate are plain functions
    async_res = result_of(multi.path, "Instance.DescribeInstances", {"Type": "."})
    sync_res = result_of(multi.path, "Instance.DescribeInstances", {"Type": "ec2"})
    assert async_res["Descriptions"][0]["Tags"]["style"] == "async"
    assert sync_res["Descriptions"][0]["Tags"]["style"] == "sync"
    assert result_of(multi.path, "Instance.Validate", {"Properties": {}})["OK"] is True
    assert result_of(multi.path, "Instance.Label",
                     {"Instance": "A-1", "Labels": {"k": "v"}})["OK"] is True


def test_slow_sync_method_does_not_block_handshake(multi: Plugin, home: Path) -> None:
    slow = Call(multi.path, "Instance.Validate", {"Properties": {"sleep": 0.5, "mark": "slow"}})
    slow.start()
    wait_until(lambda: _marked(home, "slow"), 5.0, 0.005, "the slow call to start")
    started = time.monotonic()
    assert result_of(multi.path, "Handshake.Implements")["APIs"]
    elapsed = time.monotonic() - started
    assert slow.is_alive(), "the slow call finished before the handshake answered"
    slow.join(10)
    assert slow.error is None and slow.answer["result"]["OK"] is True
    assert elapsed < 0.25
    assert slow.done_at - started > elapsed


def test_slow_async_method_does_not_block_other_calls(multi: Plugin, home: Path) -> None:
    slow = Call(multi.path, "Instance.Label",
                {"Instance": "A-1", "Labels": {"sleep": "0.5", "mark": "aslow"}})
    slow.start()
    wait_until(lambda: _marked(home, "aslow"), 5.0, 0.005, "the slow call to start")
    started = time.monotonic()
    assert result_of(multi.path, "Instance.Provision", {"Spec": {"Init": "z"}})["ID"] == "A-z"
    elapsed = time.monotonic() - started
    assert slow.is_alive()
    slow.join(10)
    assert slow.error is None and slow.answer["result"]["OK"] is True
    assert elapsed < 0.25


def test_slow_sync_calls_run_concurrently(multi: Plugin) -> None:
    calls = [Call(multi.path, "Instance.Validate", {"Properties": {"sleep": 0.4}})
             for _ in range(5)]
    started = time.monotonic()
    for c in calls:
        c.start()
    for c in calls:
        c.join(10)
    elapsed = time.monotonic() - started
    assert all(c.error is None and c.answer["result"]["OK"] for c in calls)
    assert elapsed < 1.5, f"5 calls of 0.4s took {elapsed:.2f}s: they ran one at a time"


# -- errors from plugins --------------------------------------------------------------------


def test_plugin_error_is_application_error_with_its_message(multi: Plugin) -> None:
    err = error_of(multi.path, "Instance.Validate", {"Properties": {"raise": "plugin"}}, rid=5)
    assert err == {"code": -32000, "message": "Properties.Size: must be positive", "data": None}


def test_async_plugin_error_is_application_error(multi: Plugin) -> None:
    err = error_of(multi.path, "Instance.Label",
                   {"Type": "ec2", "Instance": "B-7", "Labels": {"raise": "plugin"}})
    assert err["code"] == -32000
    assert err["message"] == "async B refused B-7"


def test_unexpected_exception_names_method_and_exception(multi: Plugin) -> None:
    err = error_of(multi.path, "Instance.Validate", {"Properties": {"raise": "key"}})
    assert err["code"] == -32000
    assert "Instance.Validate" in err["message"]
    assert "KeyError" in err["message"]
    assert "missing-key" in err["message"]
    assert err["data"] is None
    # and the plugin goes on serving
    assert result_of(multi.path, "Instance.Validate", {"Properties": {}})["OK"] is True
    assert multi.proc.poll() is None


# -- protocol errors ------------------------------------------------------------------------


def test_malformed_json_is_parse_error(instance_file: Path) -> None:
    answer = http_request(instance_file, b'{"jsonrpc": "2.0", "method": ')
    assert answer.status == 200
    resp = answer.json()
    assert resp["error"]["code"] == -32700
    assert resp["id"] is None


def test_deeply_nested_body_is_an_error_and_plugin_survives(instance_file: Path) -> None:
    answer = http_request(instance_file, b"[" * 100_000)
    assert answer.status == 200
    assert answer.json()["error"]["code"] in (-32700, -32600)
    assert answers_handshake(instance_file)


def test_wrong_jsonrpc_version_is_invalid_request(instance_file: Path) -> None:
    resp = post_json(instance_file, {"jsonrpc": "1.0", "method": "Instance.Validate",
                                     "params": {}, "id": 12}).json()
    assert resp["error"]["code"] == -32600
    assert resp["error"]["message"] == "jsonrpc must be 2.0"
    assert resp["id"] == 12


def test_unknown_method_is_method_not_found(instance_file: Path) -> None:
    err = error_of(instance_file, "Instance.Nope", {}, rid=10)
    assert err["code"] == -32601
    assert "Instance.Nope" in err["message"]


def test_wrongly_typed_param_is_invalid_params_naming_field(instance_file: Path) -> None:
    err = error_of(instance_file, "Instance.Destroy", {"Type": "", "Instance": 5})
    assert err["code"] == -32602
    assert "`params.Instance`" in err["message"]


def test_missing_required_param_is_invalid_params(instance_file: Path) -> None:
    err = error_of(instance_file, "Instance.Destroy", {"Type": ""})
    assert err["code"] == -32602
    assert "Instance" in err["message"]


def test_nested_wrong_type_is_named_by_its_path(instance_file: Path) -> None:
    err = error_of(instance_file, "Instance.Provision", {"Spec": {"Init": 5}})
    assert err["code"] == -32602
    assert "`params.Spec.Init`" in err["message"]
    err = error_of(instance_file, "Instance.Provision", {"Spec": {"Tags": {"a": 1}}})
    assert err["code"] == -32602
    assert "`params.Spec.Tags" in err["message"]


def test_params_as_array_of_one_object(instance_file: Path) -> None:
    resp = rpc(instance_file, "Instance.DescribeInstances", [{"Type": "", "Tags": {}}], rid="s")
    assert resp["result"] == {"Type": "", "Descriptions": []}
    assert resp["id"] == "s"
    err = error_of(instance_file, "Instance.DescribeInstances", [{}, {}])
    assert err["code"] == -32602


@pytest.mark.parametrize(("body", "code"), [
    (b"nope", -32700),
    (b'{"jsonrpc": "1.0", "method": "Instance.Validate", "params": {}, "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "method": "Instance.Nope", "params": {}, "id": 1}', -32601),
    (b'{"jsonrpc": "2.0", "method": "Instance.Destroy", "params": {"Instance": 5}, "id": 1}',
     -32602),
    (b'{"jsonrpc": "2.0", "method": "Instance.Destroy", "params": [{}, {}], "id": 1}', -32602),
], ids=["parse", "invalid-request", "method-not-found", "invalid-params", "params-array"])
def test_protocol_errors_have_error_object_shape_and_null_data(
    instance_file: Path, body: bytes, code: int
) -> None:
    """The error object is ``{code, message, data}``; there is no extra data to give, so
    ``data`` is null, as it is for application errors (it must not echo the request id)."""
    resp = http_request(instance_file, body).json()
    assert set(resp) == {"jsonrpc", "error", "id"}
    assert set(resp["error"]) == {"code", "message", "data"}
    assert resp["error"]["code"] == code
    assert resp["error"]["data"] is None


@pytest.mark.parametrize("rid", [0, 2**63 - 1, -(2**63), "a-string", None])
def test_id_is_echoed_exactly(instance_file: Path, rid: Any) -> None:
    answer = post_json(instance_file, {"jsonrpc": "2.0", "method": "Handshake.Types",
                                       "params": {}, "id": rid})
    assert answer.json()["id"] == rid
    assert json.dumps(rid).encode() in answer.body


# -- notifications --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "params"), [
    ("Instance.DescribeInstances", {}),     # async method of the file plugin
    ("Instance.Validate", {}),              # sync method: runs in the thread pool
    ("Instance.Nope", {}),                  # unknown method
    ("Instance.Destroy", {"Instance": 5}),  # bad params
], ids=["async", "sync", "unknown-method", "bad-params"])
def test_notification_gets_empty_http_200(instance_file: Path, method: str,
                                          params: Any) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode()
    answer = http_request(instance_file, body, timeout=3.0)
    assert (answer.status, answer.body) == (200, b"")
    assert answers_handshake(instance_file)


def test_notification_is_still_executed(instance_file: Path) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "Instance.Provision",
                       "params": {"Spec": {"Tags": {"via": "notification"}}}}).encode()
    answer = http_request(instance_file, body, timeout=3.0)
    assert answer.status == 200
    found = result_of(instance_file, "Instance.DescribeInstances",
                      {"Tags": {"via": "notification"}})["Descriptions"]
    assert len(found) == 1


# -- HTTP -----------------------------------------------------------------------------------


def test_get_root_is_405(instance_file: Path) -> None:
    answer = http_request(instance_file, method="GET", headers={})
    assert answer.status == 405
    assert "POST" in answer.headers.get("allow", "")


def test_text_plain_is_415(instance_file: Path) -> None:
    body = b'{"jsonrpc": "2.0", "method": "Handshake.Types", "params": {}, "id": 1}'
    answer = http_request(instance_file, body, headers={"Content-Type": "text/plain"})
    assert answer.status == 415
    # a charset parameter on application/json is fine
    answer = http_request(instance_file, body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status == 200
    assert answer.json()["result"]["Types"]


def _raw_exchange(sock_path: Path, *parts: bytes, timeout: float = 10.0) -> bytes:
    """Write ``parts`` (stopping if the server hangs up) and read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(sock_path))
        for part in parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


BIG = 4 * 1024 * 1024 + 1


def test_declared_body_over_4mib_is_413_and_plugin_still_answers(instance_file: Path) -> None:
    head = (f"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BIG}\r\n\r\n").encode()
    reply = _raw_exchange(instance_file, head, b" " * BIG)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert answers_handshake(instance_file)


def test_chunked_body_over_4mib_is_413_and_plugin_still_answers(instance_file: Path) -> None:
    head = (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * (1024 * 1024)
    parts = [head, *[b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(5)], b"0\r\n\r\n"]
    reply = _raw_exchange(instance_file, *parts)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert answers_handshake(instance_file)


def test_body_just_under_limit_is_parsed(instance_file: Path) -> None:
    """A big but allowed body reaches the JSON-RPC layer (and is answered)."""
    filler = "x" * (3 * 1024 * 1024)
    resp = post_json(instance_file, {"jsonrpc": "2.0", "method": "Instance.Validate",
                                     "params": {"Properties": {"blob": filler}}, "id": 3})
    assert resp.status == 200
    assert resp.json()["result"]["OK"] is True


def test_keep_alive_serves_many_calls_on_one_connection(instance_file: Path) -> None:
    from tests.helpers import UnixHTTPConnection

    conn = UnixHTTPConnection(instance_file)
    try:
        for i in range(20):
            body = json.dumps({"jsonrpc": "2.0", "method": "Handshake.Types", "params": {},
                               "id": i}).encode()
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert json.loads(resp.read())["id"] == i
    finally:
        conn.close()


def _post_bytes(method: str, rid: int, params: Any = None) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {},
                       "id": rid}).encode()
    return (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def _read_responses(sock: socket.socket, count: int) -> list[Any]:
    """Read ``count`` HTTP responses with Content-Length bodies; return the JSON bodies."""
    buf = b""
    out: list[Any] = []
    while len(out) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            match = re.search(r"(?i)content-length: *(\d+)", head)
            assert match, head
            length = int(match.group(1))
            if len(buf) >= head_end + 4 + length:
                assert head.startswith("HTTP/1.1 200 "), head
                out.append(json.loads(buf[head_end + 4:head_end + 4 + length]))
                buf = buf[head_end + 4 + length:]
                continue
        data = sock.recv(65536)
        assert data, "connection closed early"
        buf += data
    return out


def test_pipelined_requests_are_answered_in_order(multi: Plugin) -> None:
    """A slow first request must not let the fast ones behind it overtake it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.fspath(multi.path))
        s.sendall(_post_bytes("Instance.Validate", 1, {"Properties": {"sleep": 0.2}})
                  + _post_bytes("Handshake.Types", 2)
                  + _post_bytes("Instance.Provision", 3, {"Spec": {"Init": "p"}})
                  + _post_bytes("Instance.DescribeInstances", 4, {"Type": "ec2"}))
        answers = _read_responses(s, 4)
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    assert answers[0]["result"]["OK"] is True
    assert answers[2]["result"]["ID"] == "A-p"
    assert answers[3]["result"]["Descriptions"][0]["ID"] == "B-1"


def test_expect_100_continue(instance_file: Path) -> None:
    body = b'{"jsonrpc":"2.0","method":"Handshake.Types","params":{},"id":9}'
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.fspath(instance_file))
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += s.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        [answer] = _read_responses(s, 1)
    assert answer["id"] == 9 and "Types" in answer["result"]


def test_client_hanging_up_mid_call_does_not_hurt_the_plugin(multi: Plugin, home: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(multi.path))
        s.sendall(_post_bytes("Instance.Validate", 1, {"Properties": {"sleep": 0.3,
                                                                      "mark": "hangup"}}))
        wait_until(lambda: _marked(home, "hangup"), 5.0, 0.005, "the call to start")
    # the async path too: a suspended coroutine whose caller left
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(multi.path))
        s.sendall(_post_bytes("Instance.Label", 2, {"Instance": "A-1",
                                                    "Labels": {"sleep": "0.3",
                                                               "mark": "ahangup"}}))
        wait_until(lambda: _marked(home, "ahangup"), 5.0, 0.005, "the call to start")
    for _ in range(3):
        assert result_of(multi.path, "Instance.Validate", {"Properties": {}})["OK"] is True
    time.sleep(0.4)  # let the abandoned calls end, then check the plugin again
    assert result_of(multi.path, "Handshake.Types")["Types"]
    assert multi.proc.poll() is None


# -- clients that send too much, or never read ----------------------------------------------


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


HEAD_LIMIT = 16 * 1024


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: h\r\nX-Filler: " + b"A" * (HEAD_LIMIT + 1),
    b"POST /" + b"a" * (HEAD_LIMIT + 1),
    b"POST / HTTP/1.1\r\n" + b"X-Many: b\r\n" * (HEAD_LIMIT // 10 + 1),
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: " + b"A" * 3 * HEAD_LIMIT,
], ids=["header-without-end", "url", "many-headers", "trailer-without-end"])
def test_request_line_and_headers_over_16_kib_are_refused_with_431(
        instance_file: Path, head: bytes) -> None:
    """A head that never ends is answered 431 once 16 KiB of it has arrived, not kept
    (and copied over and over) until the read deadline; so is a chunked body's trailer
    section (headers after the last chunk), which may pass 16 KiB by one read."""
    started = time.monotonic()
    reply = _raw_exchange(instance_file, head, timeout=5.0)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1
    assert time.monotonic() - started < 3.0
    assert answers_handshake(instance_file)


def test_a_head_or_trailer_just_under_16_kib_is_served(instance_file: Path) -> None:
    body = b'{"jsonrpc":"2.0","method":"Handshake.Types","params":{},"id":4}'
    answer = http_request(instance_file, body, headers={
        "Content-Type": "application/json", "X-Filler": "f" * (HEAD_LIMIT - 200)})
    assert answer.status == 200 and answer.json()["id"] == 4
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                      for i in range(0, len(body), 7))
    reply = _raw_exchange(instance_file, b"POST / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                          b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + chunks + b"0\r\nX-Trailer: " + b"t" * (HEAD_LIMIT - 200)
                          + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"id":4' in reply, reply[:200]


def test_a_flood_of_header_bytes_does_not_grow_the_plugin(start_plugin: StartPlugin) -> None:
    """Four connections stream a header value at full speed: the plugin answers each
    with 431 and drops the rest, and its memory stays where it was."""
    plugin = start_plugin("instance-file")
    before = _rss_kib(plugin.proc.pid)
    chunk = b"A" * 65536

    replies: list[bytes] = []

    def flood() -> None:
        parts = [b"POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer ", *[chunk] * 128]
        try:
            replies.append(_raw_exchange(plugin.path, *parts, timeout=20.0))
        except OSError as exc:
            replies.append(repr(exc).encode())

    floods = [threading.Thread(target=flood) for _ in range(4)]
    for t in floods:
        t.start()
    for t in floods:
        t.join(30)
    assert [r[:13] for r in replies] == [b"HTTP/1.1 431 "] * 4
    assert _rss_kib(plugin.proc.pid) - before < 8 * 1024, "the header bytes were kept"
    assert answers_handshake(plugin.path)


def test_pipelined_answers_that_are_not_read_do_not_grow_the_plugin(
        start_plugin: StartPlugin) -> None:
    """A client pipelines ``GET /info/api.json`` and reads nothing: once the answers it owes
    pass the write buffer's high-water mark the plugin reads no more of its requests, so
    its memory stays where it was; others are served meanwhile, and every answer is there,
    in order, when the client reads at last."""
    plugin = start_plugin("instance-file")
    before = _rss_kib(plugin.proc.pid)
    request = b"GET /info/api.json HTTP/1.1\r\nHost: h\r\n\r\n"
    burst = request * (2 * 1024 * 1024 // len(request))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(plugin.path))
        s.settimeout(1.0)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < len(burst):
                sent += s.send(burst[sent:sent + 65536])
        assert sent < len(burst), "the plugin read every request while no answer was read"
        assert _rss_kib(plugin.proc.pid) - before < 8 * 1024, "the unread answers were kept"
        assert answers_handshake(plugin.path)
        s.settimeout(10.0)
        expected, seen, tail = sent // len(request), 0, b""
        while seen < expected:
            data = s.recv(1 << 20)
            assert data, f"closed after {seen} of {expected} answers"
            seen += (tail + data).count(b"HTTP/1.1 200 OK\r\n")
            tail = (tail + data)[-16:]  # shorter than the mark: never counted twice
    assert seen == expected


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /info/api.json HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
     b"Upgrade: websocket\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
     b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\n\r\n{}", 400),
    (b"CONNECT h:80 HTTP/1.1\r\nHost: h:80\r\n\r\n", 405),
], ids=["websocket", "h2c", "connect"])
def test_upgrade_and_connect_get_one_answer_that_says_why(instance_file: Path, head: bytes,
                                                         status: int) -> None:
    reply = _raw_exchange(instance_file, head, b"tunnelled bytes", timeout=5.0)
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply
    assert re.search(rb"not supported|not served", reply), reply
    assert answers_handshake(instance_file)


SLOW = """
import sys
import time
from pathlib import Path

from infrakit.rpc.http import Limits
from infrakit.rpc.server import serve


class Slow:
    def validate(self, properties):
        time.sleep(properties["sleep"])

    def describe_instances(self, tags, properties):
        return []


serve("slow", instance=Slow(), directory=Path(sys.argv[1]),
      limits=Limits(read_timeout=0.8, idle_timeout=1.2))
"""


def test_a_request_pipelined_behind_a_slow_call_does_not_cut_it_off(
        start_script: StartScript) -> None:
    """The first answer comes first, whole, even when the half-sent request behind it has
    waited past the read deadline by then."""
    plugin = start_script(SLOW, "slow")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.fspath(plugin.path))
        s.sendall(_post_bytes("Instance.Validate", 1, {"Properties": {"sleep": 2.0}})
                  + b"POST / HTTP/1.1\r\nHost: h\r\n")
        [answer] = _read_responses(s, 1)
    assert answer["id"] == 1 and answer["result"]["OK"] is True


# -- curl, as an operator would poke a plugin -----------------------------------------------


def _need_curl() -> str:
    path = shutil.which("curl")
    require_engine(None if path else "curl is not installed")
    assert path is not None
    return path


def _curl(sock: Path, *args: str, data: bytes | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) of one curl request to the plugin at ``sock``."""
    curl = _need_curl()
    cmd = [curl, "-sS", "--max-time", "10", "--unix-socket", os.fspath(sock), "http://h/",
           "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    done = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def test_curl_handshake(instance_file: Path) -> None:
    status, body = _curl(instance_file, data=b'{"jsonrpc":"2.0","method":"Handshake.Implements",'
                                             b'"params":{},"id":6137413926720431094}')
    assert status == 200
    assert json.loads(body) == {"jsonrpc": "2.0", "id": 6137413926720431094,
                                "result": {"APIs": [{"Name": "Instance", "Version": "0.5.0"}]}}


def test_curl_describe(instance_file: Path) -> None:
    result_of(instance_file, "Instance.Provision", {"Spec": {"Tags": {"by": "curl"}}})
    status, body = _curl(instance_file, data=b'{"jsonrpc":"2.0","method":'
                         b'"Instance.DescribeInstances","params":{"Type":"","Tags":{"by":"curl"},'
                         b'"Properties":false},"id":1}')
    assert status == 200
    descriptions = json.loads(body)["result"]["Descriptions"]
    assert [d["Tags"] for d in descriptions] == [{"by": "curl"}]
    assert "Properties" not in descriptions[0]


def test_curl_get_is_405(instance_file: Path) -> None:
    status, _ = _curl(instance_file)
    assert status == 405


def test_curl_body_over_4mib_is_413(instance_file: Path) -> None:
    status, _ = _curl(instance_file, data=b" " * BIG)
    assert status == 413
    status, _ = _curl(instance_file, data=b'{"jsonrpc":"2.0","method":"Handshake.Types",'
                                          b'"params":{},"id":1}')
    assert status == 200


# -- the socket's life ----------------------------------------------------------------------


def test_plugin_dir_socket_and_pid_file_modes(start_plugin: StartPlugin,
                                             plugins_dir: Path) -> None:
    assert not plugins_dir.exists()
    plugin = start_plugin("instance-file")
    assert stat.S_IMODE(plugins_dir.stat().st_mode) == 0o700
    assert plugins_dir.stat().st_uid == os.geteuid()
    st = os.lstat(plugin.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert plugin.pid_file.read_text().strip() == str(plugin.proc.pid)
    assert stat.S_IMODE(plugin.pid_file.stat().st_mode) == 0o600


def test_second_plugin_under_live_name_is_refused(start_plugin: StartPlugin, cli: Cli) -> None:
    first = start_plugin("instance-file")
    inode = os.lstat(first.path).st_ino
    for args in (["plugin", "run", "instance-file"], ["plugin", "start", "instance-file"]):
        done = cli(*args, timeout=30)
        assert done.returncode == 1, done
        assert f"pid {first.proc.pid}" in done.stderr
        assert "Traceback" not in done.stderr
    # the first one keeps its socket and keeps answering
    assert os.lstat(first.path).st_ino == inode
    assert answers_handshake(first.path)
    assert first.pid_file.read_text().strip() == str(first.proc.pid)


def test_kill_9_leaves_stale_socket_that_ls_reports_and_restart_clears(
    start_plugin: StartPlugin, cli: Cli
) -> None:
    first = start_plugin("instance-file")
    first.proc.kill()
    first.proc.wait(10)
    assert first.path.exists(), "kill -9 cannot clean up: the socket file must remain"
    assert not answers_handshake(first.path)

    listed = cli("plugin", "ls")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.endswith("instance-file"))
    assert "stale" in row
    data = json.loads(cli("plugin", "ls", "-o", "json").stdout)
    assert [(d["Name"], d["State"]) for d in data] == [("instance-file", "stale")]

    second = start_plugin("instance-file")
    assert answers_handshake(second.path)
    assert second.pid_file.read_text().strip() == str(second.proc.pid)
    data = json.loads(cli("plugin", "ls", "-o", "json").stdout)
    assert [(d["Name"], d["State"], d["Pid"]) for d in data] == [
        ("instance-file", "running", second.proc.pid)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_socket_and_pid_file_and_exits_0(start_plugin: StartPlugin,
                                                         sig: int) -> None:
    plugin = start_plugin("instance-file")
    assert plugin.path.exists() and plugin.pid_file.exists()
    code = stop_process(plugin.proc, sig)
    assert code == 0, plugin.output()
    assert not plugin.path.exists()
    assert not plugin.pid_file.exists()


def test_in_flight_call_finishes_during_sigterm(multi: Plugin, home: Path) -> None:
    slow = Call(multi.path, "Instance.Validate", {"Properties": {"sleep": 0.7, "mark": "term"}})
    slow.start()
    wait_until(lambda: _marked(home, "term"), 5.0, 0.005, "the slow call to start")
    multi.proc.send_signal(signal.SIGTERM)
    # the socket goes at once, so no new caller reaches a plugin that is leaving ...
    wait_until(lambda: not multi.path.exists(), 5.0, 0.005, "the socket to be removed")
    # ... but the call already in flight still gets its answer
    slow.join(15)
    assert slow.error is None, slow.error
    assert slow.answer["result"] == {"Type": "", "OK": True}
    assert multi.proc.wait(15) == 0
    assert not multi.pid_file.exists()


def test_plugin_dir_writable_by_others_is_refused(plugins_dir: Path, cli: Cli) -> None:
    plugins_dir.mkdir(mode=0o700)
    os.chmod(plugins_dir, 0o777)
    for args in (["plugin", "run", "instance-file"], ["plugin", "start", "instance-file"]):
        done = cli(*args, timeout=30)
        assert done.returncode == 1, done
        assert "writable by group or others" in done.stderr
        assert str(plugins_dir) in done.stderr
        assert "Traceback" not in done.stderr
    assert not (plugins_dir / "instance-file").exists()


def _dir_for_socket_length(home: Path, name: str, length: int) -> Path:
    base = os.fspath(home) + "/"
    room = length - len(base) - len("/" + name)
    assert room > 0
    return home / ("p" * room)


@pytest.mark.parametrize("args", [["plugin", "start", "instance-file"],
                                  ["plugin", "run", "instance-file"]], ids=["start", "run"])
def test_socket_path_too_long_is_one_line_error(home: Path, cli: Cli, args: list[str]) -> None:
    long_dir = _dir_for_socket_length(home, "instance-file", 150)
    done = cli(*args, env={"INFRAKIT_PLUGINS_DIR": str(long_dir)}, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "OSError" not in done.stderr
    assert "107" in lines[0]
    assert "INFRAKIT_PLUGINS_DIR" in lines[0]


def test_socket_path_of_107_bytes_works_and_108_is_refused(
    home: Path, procs: Processes, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused_dir = _dir_for_socket_length(home, "instance-file", 108)
    done = cli("plugin", "run", "instance-file", env={"INFRAKIT_PLUGINS_DIR": str(refused_dir)})
    assert done.returncode == 1 and "108 bytes" in done.stderr

    ok_dir = _dir_for_socket_length(home, "instance-file", 107)
    monkeypatch.setenv("INFRAKIT_PLUGINS_DIR", str(ok_dir))
    log = home / "test-logs" / "long.log"
    proc = procs.spawn([PY, "-m", "infrakit", "plugin", "run", "instance-file"], log)
    plugin = procs.wait_ready("instance-file", ok_dir / "instance-file", proc, log)
    assert len(os.fsencode(plugin.path)) == 107
    assert answers_handshake(plugin.path)
