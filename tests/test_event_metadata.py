"""Event/0.1.0, Metadata/0.1.0 and the event stream, against the captured exchanges of the
reference (``infrakit-v0.5-event-metadata.json``).

Two plugin programs of ours stand in for the captured ones: ``event-time`` (a timer that
publishes ``timer/msec/100`` ... ``timer/hr/1``, and the metadata ``implements``,
``revision``, ``version`` and ``time/now``) and ``tracker`` (the typed object
``instance-file`` with the topics ``found``, ``lost``, ``error``). Every JSON-RPC request the
reference was sent is replayed against them and must get the captured answer; our group
plugin answers the captured group-plugin requests with the captured shapes; the event stream
is read from a raw socket and compared with the captured bytes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.events import Notice, Subscription
from infrakit.spi.event import Event
from tests.conftest import Cli, Plugin, StartPlugin, StartScript
from tests.helpers import (
    PY,
    assert_same_shape,
    http_request,
    private_plugins,
    rpc,
    wait_until,
)

SAMPLES_PATH = Path(__file__).resolve().parents[2] / "shared" / "wire" / \
    "infrakit-v0.5-event-metadata.json"
SAMPLES: list[dict[str, Any]] = (json.loads(SAMPLES_PATH.read_text())
                                 if SAMPLES_PATH.is_file() else [])
pytestmark = pytest.mark.skipif(not SAMPLES, reason=f"wire samples not found at {SAMPLES_PATH}")

PLUGIN = '''
import asyncio, signal, sys, time
from pathlib import Path
from infrakit.rpc.http import Limits
from infrakit.rpc.server import serve
from infrakit.spi.event import Event, timestamp
from infrakit.spi.tree import children, walk

MODE = {mode!r}
PERIODS = {{"msec/100": (0.1, "100ms"), "msec/500": (0.5, "500ms"), "sec/1": (1, "1sec"),
            "sec/5": (5, "5s"), "sec/30": (30, "30s"), "min/1": (60, "1m"),
            "min/5": (300, "5m"), "min/30": (1800, "30m"), "hr/1": (3600, "1h")}}


def tree(names):
    out = {{}}
    for name in names:
        node = out
        for part in name.split("/"):
            node = node.setdefault(part, {{}})
    return out


class Topics:
    def __init__(self, names, ticking):
        self.tree, self.ticking, self.publish, self.tasks = tree(names), ticking, None, []

    def publish_on(self, publish):
        self.publish = publish

    def event_topics(self, topic):
        return children(walk(self.tree, topic))

    async def start(self):
        if not self.ticking:
            return
        for topic, (period, ident) in PERIODS.items():
            self.tasks.append(asyncio.create_task(self.tick(topic, period, ident)))
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.burst)

    async def tick(self, topic, period, ident):
        while True:
            await asyncio.sleep(period - time.time() % period)
            self.publish(Event(topic=topic, type="timer", id=ident,
                               timestamp=timestamp(time.time()), data=int(period * 1e9)))

    def burst(self):
        for i in range(10000):
            self.publish(Event(topic="msec/100", type="timer", id=f"burst-{{i}}",
                               timestamp=timestamp(time.time()), data=i))

    async def stop(self):
        for task in self.tasks:
            task.cancel()


class Now:
    def metadata(self, path):
        return walk({{"now": {{"nano": time.time_ns(), "sec": int(time.time())}}}}, path)


class Base:
    def metadata(self, path):
        return walk({{"implements": {{"Name": "Event", "Version": "0.1.0"}},
                     "revision": "Unspecified", "version": "Unspecified"}}, path)


limits = Limits(connections=8, idle_timeout=1.0)
if MODE == "event-time":
    serve("event-time", event={{"timer": Topics(PERIODS, True)}},
          metadata={{".": Base(), "time": Now()}}, directory=Path(sys.argv[1]), limits=limits,
          grace=0.5)
else:
    serve("tracker", event={{"instance-file": Topics(["found", "lost", "error"], False)}},
          directory=Path(sys.argv[1]), limits=limits, grace=0.5)
'''


@pytest.fixture
def event_time(start_script: StartScript) -> Plugin:
    return start_script(PLUGIN.format(mode="event-time"), "event-time")


@pytest.fixture
def tracker(start_script: StartScript) -> Plugin:
    return start_script(PLUGIN.format(mode="tracker"), "tracker")


MODES = ("event-time", "tracker")


@pytest.fixture(scope="module")
def replayed_to() -> Iterator[dict[str, Path]]:
    """Both programs, run once for the replays (which change nothing): socket by name."""
    def commands(home: Path) -> dict[str, list[str]]:
        (home / "plugins").mkdir()
        for mode in MODES:
            (home / f"{mode}.py").write_text(PLUGIN.format(mode=mode))
        return {mode: [PY, str(home / f"{mode}.py"), str(home / "plugins")] for mode in MODES}

    with private_plugins(commands) as socks:
        yield socks


def _replayed(entry: dict[str, Any], sock: Path) -> dict[str, Any]:
    answer = http_request(sock, json.dumps(entry["request"]).encode())
    assert answer.status == 200
    out: dict[str, Any] = answer.json()
    assert out["id"] == entry["request"]["id"]
    return out


TIMED = {"time/now/nano", "time/now/sec"}
"""Values computed at call time: compared by shape."""
GO_FUNCS = {"time/now", "time"}
"""Values holding Go functions, which the reference cannot encode (an error): ours are
always plain data."""


def _path_of(entry: dict[str, Any]) -> Any:
    params = entry["request"]["params"]
    params = params[0] if isinstance(params, list) else params
    path = params.get("Path")
    return path if isinstance(path, str) else None


def _rpc_entries(*plugins: str) -> list[dict[str, Any]]:
    return [e for e in SAMPLES if e["plugin"] in plugins
            and e["interface"] in ("Event/0.1.0", "Metadata/0.1.0")
            and not (e["request"]["method"] == "Metadata.Get" and _path_of(e) in GO_FUNCS)]


def _entry_id(e: dict[str, Any]) -> str:
    return f"{e['plugin']}-{e['request']['method']}-{json.dumps(e['request']['params'])}"


@pytest.mark.parametrize("entry", _rpc_entries("event-time", "tracker"), ids=_entry_id)
def test_every_captured_request_gets_the_captured_answer(
        entry: dict[str, Any], replayed_to: dict[str, Path]) -> None:
    ours = _replayed(entry, replayed_to[entry["plugin"]])
    theirs = entry["response"]
    if "error" in theirs:  # the reference's words; the standard code for a missing method
        assert ours["error"]["message"] == theirs["error"]["message"]
        assert ours["error"]["code"] == -32601 and ours["error"]["data"] is None
    elif _path_of(entry) in TIMED:
        assert_same_shape(ours["result"], theirs["result"])
    else:
        assert ours["result"] == theirs["result"]


@pytest.mark.parametrize("plugin", ["event-time", "tracker"])
def test_the_handshake_lists_the_interfaces_and_typed_objects(
        plugin: str, replayed_to: dict[str, Path]) -> None:
    sock = replayed_to[plugin]
    for entry in (e for e in SAMPLES if e["plugin"] == plugin and e["interface"] == "Handshake"):
        ours, theirs = _replayed(entry, sock)["result"], entry["response"]["result"]
        if "APIs" in theirs:  # the reference lists them in map order
            assert sorted(ours["APIs"], key=str) == sorted(theirs["APIs"], key=str)
        else:
            assert ours == theirs


# -- our group plugin -------------------------------------------------------------------------

CATTLE = {"ID": "cattle", "Properties": {
    "Allocation": {"Size": 2},
    "Instance": {"Plugin": "instance-file", "Properties": {"Note": "Instance properties"}},
    "Flavor": {"Plugin": "flavor-vanilla", "Properties": {
        "Init": ["echo hello"], "Tags": {"tier": "web", "project": "infrakit"}}}}}


@pytest.fixture
def group(start_plugin: StartPlugin, cli: Cli, home: Path,
          monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our group plugin managing ``cattle``, two members, converged."""
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    sock = start_plugin("group").path
    spec = home / "cattle.json"
    spec.write_text(json.dumps(CATTLE))
    assert cli("group", "commit", str(spec)).returncode == 0
    wait_until(lambda: len(rpc(sock, "Group.DescribeGroup", {"ID": "cattle"})["result"]
                           ["Description"]["Instances"] or []) == 2, what="two members")
    return sock


def test_our_group_plugin_answers_the_captured_group_requests_in_their_shapes(
        group: Path) -> None:
    handshake = rpc(group, "Handshake.Types", {})["result"]["Types"]
    assert handshake == {"Event/0.1.0": ["group"], "Group/0.1.0": ["."],
                         "Metadata/0.1.0": ["."]}
    # after a commit: the captured ones before it show the reference's 30 s delay
    entries = [e for e in SAMPLES if e["plugin"] == "group-stateless"
               and e["interface"] == "Metadata/0.1.0"][2:]
    assert entries
    for entry in entries:
        ours = _replayed(entry, group)["result"]
        theirs = entry["response"]["result"]
        if _path_of(entry) == ".":
            assert ours == {"Nodes": ["groups", "specs", "status"]}
        else:
            assert_same_shape(ours, theirs)
    spec = rpc(group, "Metadata.Get", {"Path": "specs/cattle"})["result"]["Value"]
    assert spec == CATTLE
    ids = rpc(group, "Metadata.List", {"Path": "groups/cattle/Instances"})["result"]["Nodes"]
    assert ids == ["[0]", "[1]"]
    status = rpc(group, "Metadata.Get", {"Path": "status/cattle/Target"})["result"]
    assert status == {"Value": 2}
    topics = rpc(group, "Event.List", {"Topic": "group/cattle"})["result"]["Nodes"]
    assert "provisioned" in topics and "member-died" in topics
    assert rpc(group, "Event.List", {"Topic": "group/nope"})["result"] == {"Nodes": None}


# -- the event stream -------------------------------------------------------------------------

def _stream(sock: Path, target: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.fspath(sock))
    conn.sendall(f"GET {target} HTTP/1.1\r\nHost: e\r\nAccept: text/event-stream\r\n"
                 "\r\n".encode())
    return conn


def _read(conn: socket.socket, until: bytes | None, seconds: float) -> bytes:
    """What arrives within ``seconds`` (or until ``until`` has arrived, or the end)."""
    got = b""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and not (until and until in got):
        conn.settimeout(left)
        try:
            more = conn.recv(65536)
        except TimeoutError:
            break
        if not more:
            break
        got += more
    return got


_STAMP = re.compile(rb'"Timestamp": "[^"]+"')
_SIZE = re.compile(rb"\r\n[0-9a-f]+\r\n")


def _framed(raw: bytes) -> list[bytes]:
    """The chunks after the head of a raw chunked answer, each checked against its size."""
    body = raw.split(b"\r\n\r\n", 1)[1]
    chunks = []
    while body and not body.startswith(b"0\r\n"):
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        assert rest[n:n + 2] == b"\r\n", body[:300]
        chunks.append(rest[:n])
        body = rest[n + 2:]
    return chunks


def _captured(target: str) -> dict[str, Any]:
    """The captured answer to ``target``; read from a raw socket (chunks visible) when
    there is such a capture."""
    found = [e for e in SAMPLES if e["interface"].startswith("Event/0.1.0 SSE")
             and e["request"].get("path") == target and e["plugin"] == "event-time"]
    return next((e for e in found if "recv_timeline" in e or "Go-http-client" in
                 e["request"]["raw"]), found[0])


def test_the_stream_is_framed_and_encoded_as_the_reference_sends_it(event_time: Plugin) -> None:
    target = "/events?topic=timer%2Fsec%2F1"
    conn = _stream(event_time.path, target)
    raw = _read(conn, b"}\n\n\r\n", 3.0)
    conn.close()
    theirs = _captured(target)["response"]["raw"].encode()
    head, their_head = raw.split(b"\r\n\r\n")[0], theirs.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    names = {line.split(b":")[0] for line in head.split(b"\r\n")[1:]}
    assert names == {line.split(b":")[0] for line in their_head.split(b"\r\n")[1:]} - {b"Date"}
    for line in their_head.split(b"\r\n")[1:]:
        if not line.startswith(b"Date"):
            assert line in head.split(b"\r\n")
    ours_chunk, their_chunk = _framed(raw)[0], _framed(theirs)[0]
    assert _STAMP.sub(b"T", ours_chunk) == _STAMP.sub(b"T", their_chunk)


@pytest.mark.parametrize("topic", ["timer/min/1", "timer", "timer/msec/100/"])
def test_a_quiet_or_exact_topic_gets_no_bytes_at_all(event_time: Plugin, topic: str) -> None:
    conn = _stream(event_time.path, f"/events?topic={topic}")
    assert _read(conn, None, 1.5) == b""
    conn.close()


MSEC = {b"timer/msec/100", b"timer/msec/500"}


@pytest.mark.parametrize(("target", "topics", "only"), [
    ("/events", MSEC, False),
    ("/events?topic=", MSEC, False),
    ("/events?topic=.", MSEC, False),
    ("/events?topic=timer/msec/", MSEC, True),
    ("/events?topic=/timer/msec/", MSEC, True),
    ("/events?topic=timer%2Fmsec%2F100", {b"timer/msec/100"}, True),
])
def test_prefix_and_exact_subscriptions(event_time: Plugin, target: str, topics: set[bytes],
                                        only: bool) -> None:
    """The root gets every topic; ``x/`` those under it; ``x/y`` only itself."""
    conn = _stream(event_time.path, target)
    raw = _read(conn, None, 1.2)
    conn.close()
    seen = {m.group(1) for m in re.finditer(rb'"Topic": "([^"]+)"', raw)}
    assert seen == topics if only else topics <= seen


@pytest.mark.parametrize("target", ["/events?topic=timer/nope", "/events?topic=time/now",
                                    "/events/timer/sec/1"])
def test_an_unknown_topic_is_refused_before_anything_streams(event_time: Plugin,
                                                             target: str) -> None:
    answer = http_request(event_time.path, method="GET", path=target, headers={})
    assert answer.status == 404
    captured = _captured(target)["response"]["raw"]
    if "invalid topic" in captured:
        assert answer.body.decode() == captured.split("\r\n\r\n", 1)[1]


def test_a_stream_survives_the_idle_deadline_and_ends_when_the_server_stops(
        event_time: Plugin) -> None:
    conn = _stream(event_time.path, "/events?topic=timer/sec/1")
    first = _read(conn, b"}\n\n\r\n", 3.0)
    assert b'"ID": "1sec"' in first
    later = _read(conn, b"}\n\n\r\n", 2.5)  # the socket's idle deadline is 1 s
    assert b'"ID": "1sec"' in later
    event_time.proc.send_signal(signal.SIGTERM)
    rest = _read(conn, None, 5.0)
    assert rest.endswith(b"0\r\n\r\n")
    conn.close()


def test_streams_count_against_the_connection_cap(event_time: Plugin) -> None:
    conns = [_stream(event_time.path, "/events?topic=timer/min/1") for _ in range(8)]
    try:
        extra = http_request(event_time.path, method="GET", path="/info/api.json", headers={})
        assert extra.status == 503
    finally:
        for conn in conns:
            conn.close()
    wait_until(lambda: http_request(event_time.path, method="GET", path="/info/api.json",
                                    headers={}).status == 200, what="room again")


def test_a_client_that_does_not_read_is_skipped_not_waited_for(event_time: Plugin) -> None:
    """A subscriber that reads nothing gets what fits in the buffers, misses what waited
    longer than a second, and still gets what comes after it reads again; one that reads
    gets every event of the burst."""
    topic = "/events?topic=timer%2Fmsec%2F100"
    slow = _stream(event_time.path, topic)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fast = _stream(event_time.path, topic)
    _read(slow, b"}\n\n\r\n", 2.0)
    _read(fast, b"}\n\n\r\n", 2.0)  # both are subscribed
    event_time.proc.send_signal(signal.SIGUSR1)  # 2,000 events at once
    fast_got = _read(fast, b'"ID": "burst-9999"', 10.0)
    assert all(f'"ID": "burst-{i}"'.encode() in fast_got for i in range(10000))
    time.sleep(1.5)  # what the slow client was not sent grows stale: a time to pass, not a poll
    slow_got = _read(slow, None, 2.0)
    missed = sum(f'"ID": "burst-{i}"'.encode() not in slow_got for i in range(10000))
    assert missed > 0
    assert b'"ID": "100ms"' in _read(slow, b'"ID": "100ms"', 3.0)  # then it gets events again
    slow.close()
    fast.close()


# -- our client of the stream -----------------------------------------------------------------

def test_our_client_reads_events_and_says_why_a_stream_cannot_be_had(
        event_time: Plugin, start_plugin: StartPlugin) -> None:
    with RPCClient(event_time.path) as client:
        sub = Subscription(client, "timer/sec/1")
        event = wait_until(lambda: sub.get(0.5), 5.0, what="an event")
        sub.close()
        assert isinstance(event, Event)
        assert (event.topic, event.type, event.id, event.data) == \
            ("timer/sec/1", "timer", "1sec", 1_000_000_000)
        sub = Subscription(client, "timer/nope")
        notice = wait_until(lambda: sub.get(0.5), 5.0, what="a notice")
        assert notice == Notice("invalid", "invalid topic: timer/nope")
        sub.close()
    with RPCClient(start_plugin("instance-file").path) as client:
        sub = Subscription(client, "")
        notice = wait_until(lambda: sub.get(0.5), 5.0, what="a notice")
        assert isinstance(notice, Notice) and notice.state == "unsupported"
        sub.close()
