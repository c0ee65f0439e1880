"""The sync client's own HTTP/1.1 connection, against a server on a real UNIX socket that
answers each request with the bytes a test scripts: the answers of Go's net/http (chunks)
and of servers that close, interim answers, and answers that are not HTTP."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from infrakit.rpc.unixhttp import BadAnswer, UnixHTTPConnection


class Say(NamedTuple):
    """One scripted answer: the bytes sent, and whether the connection is closed after
    them (with no bytes: closed instead of answering)."""

    data: bytes
    close: bool = False


CLOSE = Say(b"", close=True)


class ScriptedServer:
    """Reads each request (head and Content-Length body) and sends the next scripted
    answer; counts the connections it accepted and keeps the requests it read."""

    def __init__(self, path: Path, answers: list[Say]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as fp:
                while self.answers:
                    head = b"".join(iter(fp.readline, b"\r\n"))
                    if not head:
                        break
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length"))
                    self.requests.append(head + b"\r\n" + fp.read(length))
                    answer = self.answers.pop(0)
                    conn.sendall(answer.data)
                    if answer.close:
                        break

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)


Serve = tuple[Path, list[ScriptedServer]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """The socket path and a factory's list: each test starts one scripted server."""
    tmp = Path(tempfile.mkdtemp(prefix="ikh", dir="/tmp"))
    servers: list[ScriptedServer] = []
    yield tmp / "s", servers
    for server in servers:
        server.close()
    shutil.rmtree(tmp)


def _start(serve: Serve, *answers: Say | bytes) -> Path:
    path, servers = serve
    servers.append(ScriptedServer(path, [a if isinstance(a, Say) else Say(a) for a in answers]))
    return path


def _ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _ask(conn: UnixHTTPConnection) -> bytes:
    conn.request("POST", "/", b"{}", {})
    return conn.getresponse().read()


def test_a_chunked_answer_as_go_sends_it_and_the_connection_kept(serve: Serve) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
    path = _start(serve, chunked, _ok(b"again"))
    conn = UnixHTTPConnection(path, 5)
    conn.request("POST", "/", b'{"a":1}', {"Content-Type": "application/json"})
    assert conn.getresponse().read() == b"hello, world"
    conn.request("POST", "/", b"{}", {})
    assert conn.getresponse().read() == b"again"
    conn.close()
    server = serve[1][0]
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n")
    assert server.requests[0].endswith(b'\r\n\r\n{"a":1}')


def test_an_answer_that_runs_until_close_then_a_new_connection(serve: Serve) -> None:
    path = _start(serve, Say(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True),
                  Say(_ok(b"next", "Connection: close\r\n"), close=True), _ok(b"third"))
    conn = UnixHTTPConnection(path, 5)
    assert [_ask(conn) for _ in range(3)] == [b"all of it", b"next", b"third"]
    conn.close()
    assert serve[1][0].connections == 3


def test_interim_answers_are_skipped(serve: Serve) -> None:
    path = _start(serve, b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"done"))
    conn = UnixHTTPConnection(path, 5)
    assert _ask(conn) == b"done"
    conn.close()


def test_a_server_that_closes_without_answering(serve: Serve) -> None:
    path = _start(serve, CLOSE)
    conn = UnixHTTPConnection(path, 5)
    conn.request("POST", "/", b"{}", {})
    with pytest.raises(ConnectionResetError, match="closed the connection without answering"):
        conn.getresponse()
    conn.close()


def test_what_is_not_http_is_refused(serve: Serve) -> None:
    path = _start(serve, b"SSH-2.0-OpenSSH\r\n\r\n")
    conn = UnixHTTPConnection(path, 5)
    conn.request("POST", "/", b"{}", {})
    with pytest.raises(BadAnswer, match=r"not an HTTP/1\.1 answer"):
        conn.getresponse()
    conn.close()


def test_a_short_body_is_an_error_not_a_truncated_answer(serve: Serve) -> None:
    path = _start(serve, Say(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True))
    conn = UnixHTTPConnection(path, 5)
    conn.request("POST", "/", b"{}", {})
    with pytest.raises(ConnectionResetError, match="3 bytes into an answer of 10"):
        conn.getresponse()
    conn.close()
