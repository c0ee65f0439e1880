"""One keep-alive HTTP/1.1 connection over a UNIX socket: what the sync client's calls to a
local plugin need, and no more.

It stands in for :mod:`http.client` on the CLI's path: importing that costs more than a
third of the CLI's start-up (it imports the :mod:`email` package and :mod:`ssl`), and a
plugin's answer needs little of it. The surface is the part of ``HTTPConnection`` the
client uses (``request``, ``getresponse``, ``close``), so a TCP connection to a manager
(TLS, through :mod:`http.client`) is used the same way. A plugin answers with a
``Content-Length``, with chunks (Go's server, for a large answer), or until it closes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 65536
"""The longest status line, header line or chunk-size line read (http.client's limit)."""
MAX_HEADERS = 100
"""The most header lines an answer may have (http.client's limit)."""


class BadAnswer(ConnectionError):
    """What came back is not an HTTP/1.1 answer the client can read."""


@dataclass(frozen=True)
class Answer:
    """A whole response: its status and body."""

    status: int
    body: bytes

    def read(self) -> bytes:
        return self.body


class UnixHTTPConnection:
    """An HTTP/1.1 connection to the UNIX socket ``path``, opened on the first request
    and kept open while the server keeps it; each blocking step waits ``timeout`` at most.
    Failures raise what the socket raises (``ConnectionRefusedError``, ``TimeoutError``,
    ...); a server that closes without answering raises ``ConnectionResetError``, as
    ``http.client.RemoteDisconnected`` is one."""

    def __init__(self, path: os.PathLike[str] | str, timeout: float) -> None:
        self._path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._keep = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        """Send one request (``Host: h``, as the reference's Go client sends)."""
        if self._sock is None or not self._keep:
            self.close()
            self._open()
        assert self._sock is not None
        head = [f"{method} {url} HTTP/1.1", "Host: h", f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in headers.items())]
        self._sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def getresponse(self) -> Answer:
        """Read the answer to the request sent (its 1xx interim answers skipped)."""
        if self._file is None:
            raise ConnectionResetError("no connection to read an answer from")
        while True:
            status = _status(self._file)
            headers = _headers(self._file)
            if not 100 <= status < 200:
                break
        self._keep = headers.get("connection", "").lower() != "close"
        return Answer(status, self._body(headers))

    def _open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self._sock, self._file, self._keep = sock, sock.makefile("rb"), True

    def _body(self, headers: dict[str, str]) -> bytes:
        assert self._file is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _chunks(self._file)
        length = headers.get("content-length")
        if length is None:  # the body runs until the server closes
            self._keep = False
            return self._file.read()
        if not length.strip().isdigit():
            raise BadAnswer(f"the answer's Content-Length is not a number: {length[:40]!r}")
        return _exactly(self._file, int(length))


def _line(fp: BinaryIO) -> bytes:
    line = fp.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadAnswer(f"the answer has a line over {MAX_LINE} bytes")
    return line


def _status(fp: BinaryIO) -> int:
    line = _line(fp)
    if not line:
        raise ConnectionResetError("the plugin closed the connection without answering")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP/1.1 answer: {line[:80]!r}")
    return int(parts[1])


def _headers(fp: BinaryIO) -> dict[str, str]:
    """The header lines up to the blank one, by lower-case name."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(fp)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise BadAnswer(f"the answer has more than {MAX_HEADERS} header lines")


def _exactly(fp: BinaryIO, size: int) -> bytes:
    data = fp.read(size)
    if len(data) < size:
        raise ConnectionResetError(f"the plugin closed the connection {len(data)} bytes "
                                   f"into an answer of {size}")
    return data


def _chunks(fp: BinaryIO) -> bytes:
    """A chunked body, its trailer lines skipped."""
    parts: list[bytes] = []
    while True:
        size_line = _line(fp).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadAnswer(f"bad chunk size in the answer: {size_line[:40]!r}") from None
        if size == 0:
            _headers(fp)  # the trailer
            return b"".join(parts)
        parts.append(_exactly(fp, size))
        _line(fp)  # the CRLF after the chunk
