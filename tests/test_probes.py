"""The vanilla flavor's health probes against real endpoints on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import FlavorClient
from infrakit.spi import Allocation, Description, Health
from infrakit.spi.errors import CallFailed


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
])
def test_bad_probes_are_refused_by_validate(flavor_vanilla: Path, probe: dict[str, Any],
                                            word: str) -> None:
    with RPCClient(flavor_vanilla) as conn, pytest.raises(CallFailed) as err:
        FlavorClient(conn).validate({"Health": probe}, Allocation(size=1))
    assert "Health" in err.value.reason and word in err.value.reason
