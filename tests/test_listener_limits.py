"""A TCP listener (TLS and a bearer token) under callers that do not play by the rules: heads
that never end, callers without the token that stay, TLS handshakes that never come. Each
test runs a real plugin process with a small connection cap and short deadlines, and talks
to it over real TLS on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Processes
from tests.helpers import PY, answers_handshake, wait_until
from tests.test_manager_tcp import TOKEN, free_port, post, self_signed

CAP = 16
HANDSHAKE_TIMEOUT = 1.5

GUARDED = '''
import sys
from pathlib import Path

from infrakit.plugins.flavor.vanilla import VanillaFlavor
from infrakit.rpc.http import Limits
from infrakit.rpc.server import serve
from infrakit.rpc.tcp import TcpListener
from infrakit.rpc.tokens import Tokens

serve("guarded", flavor=VanillaFlavor(), directory=Path(sys.argv[1]),
      tcp=TcpListener("127.0.0.1", {port}, Path({cert!r}), Path({key!r}),
                      Tokens.single({token!r})),
      limits=Limits(connections={cap}, read_timeout=10.0, idle_timeout=10.0,
                    handshake_timeout={handshake}))
'''

VALIDATE = json.dumps({"jsonrpc": "2.0", "method": "Flavor.Validate", "params": {},
                       "id": 1}).encode()


@dataclass
class Guarded:
    """A vanilla flavor plugin on its UNIX socket and on a TLS listener with a token."""

    pid: int
    sock: Path
    port: int
    cert: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def tls(self, timeout: float = 5.0) -> ssl.SSLSocket:
        """A TLS connection, handshake done, that has sent nothing."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.context().wrap_socket(raw, server_hostname="127.0.0.1")

    def call(self) -> int:
        """The status of one Flavor.Validate with the token, on a new connection."""
        status, body = post(self.port, self.cert, VALIDATE, TOKEN)
        assert status != 200 or json.loads(body)["result"]["OK"] is True
        return status

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def start_guarded(procs: Processes, tmp_path: Path, prefix: list[str] | None = None,
                  cap: int = CAP) -> Guarded:
    tls = self_signed(tmp_path)
    port = free_port()
    script = procs.home / "guarded_plugin.py"
    script.write_text(GUARDED.format(port=port, cert=str(tls["cert"]), key=str(tls["key"]),
                                     token=TOKEN, cap=cap, handshake=HANDSHAKE_TIMEOUT))
    log = procs.home / "test-logs" / "guarded.log"
    plugins = procs.home / "plugins"
    proc = procs.spawn([*(prefix or []), PY, str(script), str(plugins)], log)
    plugin = procs.wait_ready("guarded", plugins / "guarded", proc, log)
    return Guarded(proc.pid, plugin.path, port, tls["cert"])


@pytest.fixture
def guarded(procs: Processes, tmp_path: Path) -> Guarded:
    return start_guarded(procs, tmp_path)


def read_to_end(conn: socket.socket, limit: float) -> bytes:
    """What the server sends until it closes; fails if it has not closed within ``limit``
    seconds."""
    deadline = time.monotonic() + limit
    chunks = []
    while True:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open past {limit:g}s") from None
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@contextlib.contextmanager
def held(connections: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield connections
    finally:
        for conn in connections:
            conn.close()


# -- heads that never end -------------------------------------------------------------------


FLOOD = 32 * 1024 * 1024
"""Bytes of an endless header that a client tries to send."""


def test_a_header_without_end_is_cut_off_before_the_token_is_known(guarded: Guarded) -> None:
    """``Authorization: Bearer AAAA...`` that never ends, on four connections: each is
    answered 401 (nothing else is said without the token) and closed once 16 KiB of head
    have come (what else comes while TLS closes is dropped), and the plugin's memory stays
    where it was."""
    before = guarded.rss_kib()
    outcomes: list[tuple[int, bytes]] = []

    def flood() -> None:
        sent, reply = 0, b""
        with guarded.tls() as conn:
            try:
                conn.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer ")
                for _ in range(FLOOD // 65536):
                    conn.sendall(b"A" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass
            with contextlib.suppress(AssertionError):
                reply = read_to_end(conn, 5.0)
        outcomes.append((sent, reply))

    floods = [threading.Thread(target=flood) for _ in range(4)]
    started = time.monotonic()
    for t in floods:
        t.start()
    for t in floods:
        t.join(30)
    assert len(outcomes) == 4
    assert time.monotonic() - started < 10.0
    for _, reply in outcomes:
        assert reply == b"" or reply.startswith(b"HTTP/1.1 401 "), reply[:100]
    assert guarded.rss_kib() - before < 8 * 1024, "the header bytes were kept"
    assert guarded.call() == 200


def test_a_long_head_with_the_token_is_431(guarded: Guarded) -> None:
    with guarded.tls() as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nX-Filler: " + b"f" * 20000)
        reply = read_to_end(conn, 5.0)
    assert reply.startswith(b"HTTP/1.1 431 ") and reply.count(b"HTTP/1.1") == 1, reply[:200]


# -- callers without the token ----------------------------------------------------------------


def test_401_closes_the_connection(guarded: Guarded) -> None:
    with guarded.tls() as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        reply = read_to_end(conn, 2.0)
    assert reply.startswith(b"HTTP/1.1 401 ") and reply.count(b"HTTP/1.1") == 1, reply
    assert reply.endswith(b"\r\n\r\nunauthorized\n")


@pytest.mark.parametrize("behaviour", ["silent", "asking-without-token"])
def test_callers_without_the_token_cannot_crowd_out_those_with_it(guarded: Guarded,
                                                                 behaviour: str) -> None:
    """Callers without the token that fill the connection cap, silent after their
    handshake or sending requests without it, do not turn away a caller with the token."""
    with held([guarded.tls() for _ in range(CAP)]) as crowd:
        if behaviour == "asking-without-token":
            for conn in crowd:
                with contextlib.suppress(OSError):
                    conn.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        started = time.monotonic()
        for _ in range(3):
            assert guarded.call() == 200
        assert time.monotonic() - started < 2.0


def test_token_holders_keep_their_connections_against_a_crowd(guarded: Guarded) -> None:
    """Connections that have shown the token are not closed to make room for new ones."""
    with held([guarded.tls() for _ in range(CAP // 4)]) as mine:
        for conn in mine:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: "
                         + str(len(VALIDATE)).encode() + b"\r\n\r\n" + VALIDATE)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
        with held([guarded.tls() for _ in range(CAP * 2)]):
            for conn in mine:  # still open, still served
                conn.sendall(b"GET /info/api.json HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
                             + TOKEN.encode() + b"\r\n\r\n")
                assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_a_churn_of_callers_without_the_token_does_not_grow_the_plugin(
        procs: Processes, tmp_path: Path) -> None:
    """2,500 TLS connections without the token against the default cap, each kept open
    until the plugin closes it to make room for newer ones (so it lives through a few
    rounds of the cycle collector): what each closed connection held is freed at once."""
    plugin = start_guarded(procs, tmp_path, cap=256)
    before = plugin.rss_kib()
    with held([]) as crowd:
        for _ in range(2500):
            with contextlib.suppress(OSError, ssl.SSLError):
                crowd.append(plugin.tls())
            if len(crowd) > 200:
                crowd.pop(0).close()
    assert plugin.rss_kib() - before < 12 * 1024
    assert plugin.call() == 200


# -- TLS handshakes -----------------------------------------------------------------------


def test_a_silent_tcp_connection_is_cut_at_the_handshake_deadline(guarded: Guarded) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as raw:
        started = time.monotonic()
        assert read_to_end(raw, HANDSHAKE_TIMEOUT + 3.0) == b""
        assert time.monotonic() - started > HANDSHAKE_TIMEOUT - 0.2


def test_handshakes_count_against_the_cap_and_spare_the_unix_socket(
        procs: Processes, tmp_path: Path) -> None:
    """300 TCP connections that never start TLS, against a plugin allowed 64 open files:
    they are counted against the connection cap (the oldest closed to make room), so the
    plugin keeps file descriptors for its UNIX socket, and a caller with the token is
    still served."""
    plugin = start_guarded(procs, tmp_path, ["prlimit", "--nofile=64:64"])
    baseline = plugin.fds()
    with held([]) as silent:
        for _ in range(300):
            silent.append(socket.create_connection(("127.0.0.1", plugin.port), timeout=10))
        wait_until(lambda: plugin.fds() <= baseline + CAP, 5.0,
                   what="the plugin to hold no more than its cap of connections")
        assert answers_handshake(plugin.sock)
        assert plugin.call() == 200
        assert plugin.fds() <= baseline + CAP + 2


# -- answers that are never read ----------------------------------------------------------


def test_pipelined_answers_not_read_over_tls_do_not_grow_the_plugin(guarded: Guarded) -> None:
    before = guarded.rss_kib()
    request = (b"GET /info/api.json HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
               + TOKEN.encode() + b"\r\n\r\n")
    burst = request * (FLOOD // len(request))  # more than the kernel buffers hold
    with guarded.tls() as conn:
        conn.settimeout(1.0)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < len(burst):
                sent += conn.send(burst[sent:sent + 16384])
        assert sent < len(burst), "the plugin read every request while no answer was read"
        assert guarded.rss_kib() - before < 8 * 1024, "the unread answers were kept"
        assert guarded.call() == 200
