"""The vanilla flavor's health probes against real endpoints on loopback."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from infrakit.plugins.flavor.probes import ProbeSpec
from infrakit.plugins.flavor.probes import probe as run_probe
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import FlavorClient
from infrakit.spi import Allocation, Description, Health
from infrakit.spi.errors import CallFailed
from infrakit.spi.types import HealthReport
from tests.helpers import result_of, wait_until


def _health(sock: Path, probe: dict[str, Any], properties: Any) -> Health:
    with RPCClient(sock) as conn:
        return FlavorClient(conn).healthy({"Health": probe},
                                          Description(id="i-1", properties=properties))


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    yield int(srv.getsockname()[1])
    srv.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


def test_tcp_probe(flavor_vanilla: Path, listener: int) -> None:
    probe = {"TCP": "127.0.0.1:{{ .Properties.port }}", "Timeout": 1}
    assert _health(flavor_vanilla, probe, {"port": listener}) is Health.HEALTHY
    assert _health(flavor_vanilla, probe, {"port": _free_port()}) is Health.UNHEALTHY
    # a target that cannot be filled is unknown, never unhealthy
    assert _health(flavor_vanilla, probe, {"other": 1}) is Health.UNKNOWN


def test_http_probe(flavor_vanilla: Path, web: int) -> None:
    probe = {"HTTP": "http://127.0.0.1:{{ .Properties.port }}/{{ .Properties.path }}"}
    assert _health(flavor_vanilla, probe, {"port": web, "path": "ok"}) is Health.HEALTHY
    assert _health(flavor_vanilla, probe, {"port": web, "path": "bad"}) is Health.UNHEALTHY


def test_command_probe_with_the_instance_id(flavor_vanilla: Path, home: Path) -> None:
    probe = {"Command": f"test -e {home}/{{{{ .ID }}}}"}
    assert _health(flavor_vanilla, probe, None) is Health.UNHEALTHY
    (home / "i-1").touch()
    assert _health(flavor_vanilla, probe, None) is Health.HEALTHY


def test_a_slow_probe_times_out_as_unhealthy(flavor_vanilla: Path) -> None:
    assert _health(flavor_vanilla, {"Command": "sleep 5", "Timeout": 0.2}, None) \
        is Health.UNHEALTHY


@pytest.mark.parametrize(("probe", "word"), [
    ({}, "exactly one"),
    ({"TCP": "h:1", "HTTP": "http://h/"}, "exactly one"),
    ({"TCP": "{{ .Properties.port ", "Timeout": 1}, "malformed"),
    ({"Command": "true", "Timeout": 0}, "Timeout"),
    ({"Tcp": "h:1"}, "Tcp"),
    ({"HTTP": "ftp://127.0.0.1/{{ .ID }}"}, "'ftp' is not http or https"),
    ({"HTTP": "127.0.0.1:80/{{ .ID }}"}, "must begin with http:// or https://"),
    ({"HTTP": "http://[::1/{{ .ID }}"}, "Invalid IPv6 URL"),
])
def test_bad_probes_are_refused_by_validate(flavor_vanilla: Path, probe: dict[str, Any],
                                            word: str) -> None:
    with RPCClient(flavor_vanilla) as conn, pytest.raises(CallFailed) as err:
        FlavorClient(conn).validate({"Health": probe}, Allocation(size=1))
    assert "Health" in err.value.reason and word in err.value.reason


# --- a filled value is data: it never changes what runs or where a probe goes ---

def _report(probe: dict[str, Any], instance: Description) -> HealthReport:
    """One probe run in this process, as the flavor runs it."""
    spec = msgspec.convert(probe, ProbeSpec)
    spec.check()
    return asyncio.run(run_probe(spec, instance))


def _each(sock: Path, probe: dict[str, Any], instances: list[dict[str, Any]]) -> list[Any]:
    return list(result_of(sock, "Flavor.HealthyEach", {
        "Type": "", "Properties": {"Health": probe}, "Instances": instances})["Results"])


def test_a_tag_cannot_run_a_command_through_a_command_probe(flavor_vanilla: Path,
                                                           home: Path) -> None:
    """The reported case: a quoted placeholder, and a tag that closes the quote."""
    pwned = home / "pwned"
    probe = {"Command": "test -n '{{ .Tags.role }}'"}
    results = _each(flavor_vanilla, probe, [
        {"ID": "a", "Tags": {"role": f"x'; id > {pwned}; echo '"}},
        {"ID": "b", "Tags": {"role": "web"}},
        {"ID": "c", "Tags": {"role": ""}}])
    assert not pwned.exists()
    assert [r["Health"] for r in results] == [1, 1, 2]  # healthy, healthy, unhealthy


NASTY = ["plain", "two words", "x'; touch {home}/pwned; echo '", 'x"; touch {home}/pwned; "',
         "$(touch {home}/pwned)", "`touch {home}/pwned`", "a\\b\\", "line\nbreak", "*", "-n",
         "${HOME}", "'", '"', "", "}}{{"]
PLACES = [
    "printf %s {{ .Tags.v }} > {out}",
    "printf %s '{{ .Tags.v }}' > {out}",
    'printf %s "{{ .Tags.v }}" > {out}',
    "printf %s pre'-{{ .Tags.v }}-'post > {out}",
    'printf %s "pre-{{ .Tags.v }}-post" > {out}',
    "printf %s \"$(printf %s '{{ .Tags.v }}')\" > {out}",
    "printf %s \"`printf %s '{{ .Tags.v }}'`\" > {out}",
    "x=\"{{ .Tags.v }}\"; printf %s \"$x\" > {out}",
    "# {{ .Tags.v }} in a comment\nprintf %s '{{ .Tags.v }}' > {out}",
    # the template's own unquoted substitution splits and globs what it prints: only safe
    "printf %s $(printf %s \"{{ .Tags.v }}\") > {out}",
]


@pytest.mark.parametrize("place", PLACES)
def test_a_filled_value_reaches_a_command_whole_wherever_it_stands(place: str,
                                                                   home: Path) -> None:
    """Unquoted, in single or double quotes, inside a command substitution: the command
    sees the value itself, one word, and nothing in it is run."""
    out = home / "out"
    exact = place != PLACES[-1]
    for nasty in NASTY:
        value = nasty.replace("{home}", str(home))
        out.unlink(missing_ok=True)
        report = _report({"Command": place.replace("{out}", str(out))},
                         Description(id="i-1", tags={"v": value}))
        assert report.health is Health.HEALTHY, (value, report.reason)
        assert not (home / "pwned").exists(), (place, value)
        expected = "pre-" + value + "-post" if "pre" in place else value
        if exact:
            # a command substitution drops trailing newlines, as it does for any output
            trimmed = "$(" in place or "`" in place
            assert out.read_text() == (expected.rstrip("\n") if trimmed else expected), \
                (place, value)


def test_a_value_filled_into_arithmetic_must_be_a_number(home: Path) -> None:
    probe = {"Command": "test $(( {{ .Tags.n }} + 1 )) -eq 3"}
    assert _report(probe, Description(id="i", tags={"n": "2"})).health is Health.HEALTHY
    bad = _report(probe, Description(id="i", tags={"n": f"a[$(touch {home}/pwned)]"}))
    assert bad.health is Health.UNKNOWN and "not an integer" in (bad.reason or "")
    assert not (home / "pwned").exists()


def test_a_value_with_a_nul_byte_is_unknown(home: Path) -> None:
    report = _report({"Command": "true {{ .Tags.v }}"},
                     Description(id="i", tags={"v": "a\0b"}))
    assert report.health is Health.UNKNOWN and "NUL" in (report.reason or "")


@pytest.mark.parametrize(("template", "tags", "why"), [
    ("127.0.0.1:{{ .Tags.port }}", {"port": "abc"}, "port 'abc' is not a port number"),
    ("127.0.0.1:{{ .Tags.port }}", {"port": "99999"}, "port '99999' is not a port number"),
    ("127.0.0.1:{{ .Tags.port }}", {"port": ""}, "port '' is not a port number"),
    ("{{ .Tags.host }}:1", {"host": "10.0.0.1:22 #"}, "not a host name"),
    ("{{ .Tags.host }}:1", {"host": "a/b"}, "not a host name"),
    ("[{{ .Tags.host }}]:1", {"host": "::1]:22#["}, "not a host name"),
])
def test_a_bad_tcp_target_is_unknown(template: str, tags: dict[str, str], why: str) -> None:
    report = _report({"TCP": template, "Timeout": 1}, Description(id="i", tags=tags))
    assert report.health is Health.UNKNOWN and why in (report.reason or ""), report.reason


def test_tcp_targets_filled_whole_or_in_parts(listener: int) -> None:
    for template, tags in [("{{ .Tags.addr }}", {"addr": f"127.0.0.1:{listener}"}),
                           ("{{ .Tags.h }}:{{ .Tags.p }}", {"h": "localhost", "p": str(listener)}),
                           ("[{{ .Tags.h }}]:{{ .Tags.p }}", {"h": "::1", "p": str(listener)}),
                           (":{{ .Tags.p }}", {"p": str(listener)})]:
        report = _report({"TCP": template, "Timeout": 1}, Description(id="i", tags=tags))
        if "::1" in template + str(tags) and report.health is not Health.HEALTHY:
            assert "refused" in (report.reason or "") or "address" in (report.reason or "")
            continue  # no IPv6 loopback here: the listener is on 127.0.0.1
        assert report.health is Health.HEALTHY, (template, report.reason)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    yield int(server.server_address[1]), _Recorder.seen
    server.shutdown()


def test_a_value_filled_into_a_url_path_or_query_stays_there(
        recorder: tuple[int, list[str]]) -> None:
    port, seen = recorder
    probe = {"HTTP": f"http://127.0.0.1:{port}/health/{{{{ .Tags.p }}}}?who={{{{ .ID }}}}"}
    for value in ["ok", "../../admin?x=1#y", "@other.example/", "a b", "é", "%2F"]:
        report = _report(probe, Description(id="i-1&z=2", tags={"p": value}))
        assert report.health is Health.HEALTHY, (value, report.reason)
    assert seen == ["/health/ok?who=i-1%26z%3D2", "/health/..%2F..%2Fadmin%3Fx%3D1%23y"
                    "?who=i-1%26z%3D2", "/health/%40other.example%2F?who=i-1%26z%3D2",
                    "/health/a%20b?who=i-1%26z%3D2", "/health/%C3%A9?who=i-1%26z%3D2",
                    "/health/%252F?who=i-1%26z%3D2"]


@pytest.mark.parametrize(("template", "tags", "why"), [
    ("http://127.0.0.1:{{ .Tags.port }}/", {"port": "abc"}, "port 'abc' is not a port number"),
    ("http://127.0.0.1:{{ .Tags.port }}/", {"port": "1@evil.example"},
     "port '1@evil.example' is not a port number"),
    ("http://{{ .Tags.host }}/", {"host": "evil.example@127.0.0.1"}, "not a host name"),
    ("http://{{ .Tags.host }}/", {"host": "127.0.0.1:1/x#"}, "port '1/x#' is not a port"),
    ("http://{{ .Tags.host }}:80/", {"host": "evil.example/"}, "not a host name"),
    ("{{ .Tags.url }}", {"url": "file:///etc/passwd"}, "not http or https"),
    ("{{ .Tags.url }}", {"url": "ftp://127.0.0.1/"}, "not http or https"),
])
def test_a_bad_http_target_is_unknown(template: str, tags: dict[str, str], why: str) -> None:
    report = _report({"HTTP": template, "Timeout": 1}, Description(id="i", tags=tags))
    assert report.health is Health.UNKNOWN and why in (report.reason or ""), report.reason


def test_a_url_filled_whole_from_a_tag_still_works(recorder: tuple[int, list[str]]) -> None:
    port, seen = recorder
    report = _report({"HTTP": "{{ .Tags.url }}"},
                     Description(id="i", tags={"url": f"http://127.0.0.1:{port}/x?y=1"}))
    assert report.health is Health.HEALTHY and seen == ["/x?y=1"]


# --- one member's probe answers for that member only ---

@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A server that accepts each connection, reads the request, and closes it unanswered."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)

    threading.Thread(target=serve, daemon=True).start()
    yield int(srv.getsockname()[1])
    stop.set()
    srv.close()


def test_one_bad_member_does_not_spoil_the_batch(flavor_vanilla: Path, listener: int,
                                                 hangs_up: int, web: int) -> None:
    dead = _free_port()
    tcp = _each(flavor_vanilla, {"TCP": "{{ .Tags.host }}:{{ .Tags.port }}", "Timeout": 1}, [
        {"ID": "a", "Tags": {"host": "127.0.0.1", "port": "abc"}},
        {"ID": "b", "Tags": {"host": "127.0.0.1", "port": str(dead)}},
        {"ID": "c", "Tags": {"host": "a" * 64 + ".invalid", "port": "1"}},  # idna refuses it
        {"ID": "d", "Tags": {"host": "127.0.0.1", "port": str(listener)}}])
    assert [r["Health"] for r in tcp] == [0, 2, 0, 1]
    assert "port 'abc' is not a port number" in tcp[0]["Reason"]
    assert tcp[1]["Reason"] == f"TCP 127.0.0.1:{dead}: connection refused"
    assert "the probe failed: UnicodeError" in tcp[2]["Reason"]
    http_ = _each(flavor_vanilla, {"HTTP": "http://127.0.0.1:{{ .Tags.port }}/ok",
                                   "Timeout": 2}, [
        {"ID": "a", "Tags": {"port": str(hangs_up)}}, {"ID": "b", "Tags": {"port": "x"}},
        {"ID": "c", "Tags": {"port": str(dead)}}, {"ID": "d", "Tags": {"port": str(web)}}])
    assert [r["Health"] for r in http_] == [2, 0, 2, 1]
    assert http_[0]["Reason"].startswith(f"GET http://127.0.0.1:{hangs_up}/ok: ")
    assert "closed" in http_[0]["Reason"]
    assert http_[2]["Reason"] == f"GET http://127.0.0.1:{dead}/ok: connection refused"


def test_an_answer_that_is_not_http_is_unhealthy(listener: int) -> None:
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen()

    def serve() -> None:
        conn, _ = garbage.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        report = _report({"HTTP": f"http://127.0.0.1:{garbage.getsockname()[1]}/"},
                         Description(id="i"))
    finally:
        garbage.close()
    assert report.health is Health.UNHEALTHY and "not an HTTP answer" in (report.reason or "")


# --- a probe that runs too long leaves nothing running ---

def _running(word: str) -> list[int]:
    """Processes (not zombies) whose command line holds ``word``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if word.encode() in cmdline.split(b"\0") and state not in "ZX":
            found.append(int(entry))
    return found


def test_a_probe_that_times_out_leaves_no_process(flavor_vanilla: Path) -> None:
    seconds = str(3000 + os.getpid() % 1000) + ".5"
    results = _each(flavor_vanilla, {"Command": f"sleep {seconds}; true", "Timeout": 0.5},
                    [{"ID": str(n)} for n in range(3)])
    assert [r["Health"] for r in results] == [2, 2, 2]
    assert all("no answer within 0.5s" in r["Reason"] for r in results)
    wait_until(lambda: not _running(seconds), 5, what="the probes' children to be gone")


def test_a_probe_leaves_nothing_running_when_it_ends_or_is_cancelled() -> None:
    seconds = str(4000 + os.getpid() % 1000) + ".5"
    passed = _report({"Command": f"sleep {seconds} & true"}, Description(id="i"))
    assert passed.health is Health.HEALTHY
    wait_until(lambda: not _running(seconds), 5, what="a background child to be gone")

    async def cancelled() -> None:
        spec = ProbeSpec(command=f"sleep {seconds}; true", timeout=60)
        task = asyncio.ensure_future(run_probe(spec, Description(id="i")))
        await asyncio.sleep(0.3)
        assert _running(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    wait_until(lambda: not _running(seconds), 5, what="a cancelled probe's child to be gone")
