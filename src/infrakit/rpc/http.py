"""A lean HTTP/1.1 server for JSON-RPC on a UNIX socket (or, for a manager's listener,
on TCP with TLS, where every request must carry the bearer token).

Why not aiohttp's server: on a 2-core machine a plain aiohttp "hello" handler answers about
2,700 keep-alive requests a second to a Python ``http.client`` loop, below what one plugin
must serve (see bench/RESULTS.md). This protocol does only what a plugin socket needs:
``POST /`` with a body (Content-Length or chunked, ``Expect: 100-continue``), ``GET
/info/api.json``, keep-alive, in-order answers to pipelined requests, a limit on the request
line and headers (431) and on the body (413), a per-request read deadline, an idle
keep-alive deadline, a connection cap, and a graceful close. Parsing is done by
``httptools`` (llhttp, in C).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httptools

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("infrakit.rpc.http")

#: Answers a JSON-RPC body; ``None`` means "no content" (a notification).
BodyHandler = Callable[[bytes], Coroutine[Any, Any, bytes | None]]
T = TypeVar("T")

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Content Too Large", 415: "Unsupported Media Type",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    """What one connection may cost the server."""

    body: int = 4 * 1024 * 1024
    head: int = 16 * 1024
    """Bytes of a request line and its headers, together. llhttp keeps a header that has
    not ended in memory, and httptools grows it by copying, so a head is cut off here."""
    read_timeout: float = 30.0
    """Seconds a client has to send a whole request once it has started one."""
    idle_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open."""
    connections: int = 256


def _response(status: int, body: bytes, ctype: str = "application/json",
              extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def _plain(status: int, text: str, extra: str = "") -> bytes:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8", extra)


@dataclass
class _Message:
    method: bytes
    keep_alive: bool
    body: bytes
    early: bytes | None
    """A response decided before the body was read (405, 404, 415)."""
    drain: bool = False
    """After this answer, read and drop what the client still sends (see :meth:`_refuse`)."""


class _Connection(asyncio.Protocol):
    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[_Message] = collections.deque()
        self._pending: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + self._limits.idle_timeout
        self.deadline_status: int | None = None
        """What to answer when :attr:`deadline` passes: 408 mid-request, nothing when idle."""
        self._closing = False
        self._discarding = False
        self._discarded = 0
        self._ignoring = False
        self._head = 0
        """Bytes of the request head read so far; -1 while a body is read."""
        self._reset()

    # -- request state -------------------------------------------------------------------
    def _reset(self) -> None:
        self._url: list[bytes] = []
        self._ctype: bytes | None = None
        self._auth = b""
        self._expect = False
        self._body: list[bytes] = []
        self._size = 0
        self._early: bytes | None = None

    def _arm(self, seconds: float, status: int | None) -> None:
        """Set the deadline that :meth:`HTTPServer._sweep` enforces (cheaper than a timer)."""
        self.deadline = self._loop.time() + seconds
        self.deadline_status = status

    def expire(self) -> None:
        if self.deadline_status is not None and self._transport is not None:
            self._transport.write(_plain(self.deadline_status, "request not received in time",
                                         "Connection: close\r\n"))
        self.close()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._server.admit(self):
            self._transport.write(_plain(503, "too many connections", "Connection: close\r\n"))
            transport.close()
            return

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._closing = True
        if self._pending is not None:
            self._pending.cancel()

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; while a request head is read, in pieces that keep it within
        :attr:`Limits.head`. (The bytes after a request that ends inside a piece count
        toward the next head only from the next piece on: a head may pass the limit by
        one read before it is refused.)"""
        while data and not (self._closing or self._ignoring):
            if self._discarding:
                self._discarded += len(data)
                if self._discarded > _MAX_DISCARD:
                    self.close()
                return
            if self._head >= 0:
                room = self._limits.head - self._head
                if room <= 0:
                    self._refuse(431, f"request line and headers larger than "
                                      f"{self._limits.head} bytes", drain=True)
                    continue
                piece, data = data[:room], data[room:]
                self._head += len(piece)
            else:
                piece, data = data, b""
            self._feed(piece)

    def _feed(self, piece: bytes) -> None:
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not (self._closing or self._discarding or self._ignoring):
                self._refuse(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self._arm(self._limits.read_timeout, 408)

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-type":
            self._ctype = value
        elif lname == b"authorization":
            self._auth = value
        elif lname == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        elif lname == b"content-length" and value.isdigit() and int(value) > self._limits.body:
            self._too_large()

    def on_headers_complete(self) -> None:
        self._head = -1
        method = self._parser.get_method()
        path = b"".join(self._url).split(b"?", 1)[0]
        token = self._server.token
        if token is not None and not _same(self._auth, token):
            # nothing else is said to a caller without the token, not even what is served
            self._early = _plain(401, "unauthorized", "WWW-Authenticate: Bearer\r\n")
        elif path == b"/info/api.json":
            if method != b"GET":
                self._early = _plain(405, "use GET", "Allow: GET\r\n")
        elif path != b"/":
            self._early = _plain(404, "not found: POST JSON-RPC 2.0 requests to /")
        elif method != b"POST":
            self._early = _plain(405, "use POST with a JSON-RPC 2.0 body", "Allow: POST\r\n")
        elif self._ctype is not None and self._ctype.split(b";")[0].strip().lower() != \
                b"application/json":
            self._early = _plain(415, "Content-Type must be application/json")
        if self._expect and self._early is None and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limits.body:
            self._too_large()
        elif self._early is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._head = 0
        self._arm(self._limits.idle_timeout, None)
        self._queue.append(_Message(self._parser.get_method(), self._parser.should_keep_alive(),
                                    b"".join(self._body), self._early))
        self._reset()
        if len(self._queue) > _MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
        self._answer_queued()

    # -- answering -----------------------------------------------------------------------
    def _too_large(self) -> None:
        self._refuse(413, f"request body larger than {self._limits.body} bytes", drain=True)
        raise _Refused

    def _refuse(self, status: int, text: str, extra: str = "", drain: bool = False) -> None:
        """Answer the request being read with ``status``, after the answers to the requests
        before it, and read no more requests from this connection. With ``drain``, what
        the client is still sending is read and dropped (up to :data:`_MAX_DISCARD` bytes,
        until the read deadline), so that it can finish writing and read the answer,
        instead of failing on a broken pipe; without, the connection closes once answered."""
        self._queue.append(_Message(b"", False, b"", _plain(status, text, "Connection: close\r\n"
                                                             + extra), drain))
        if drain:
            self._discarding = True
        else:
            self._ignoring = True
        self._answer_queued()

    def _fail(self, status: int, text: str) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(_plain(status, text, "Connection: close\r\n"))
        self.close()

    def close(self) -> None:
        """Close the connection; the server calls this too, at deadlines and shutdown."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._pending is not None

    def _answer_queued(self) -> None:
        """Answer queued requests in order. A handler that completes without suspending
        (an async plugin method that needs no I/O, a handshake, an error) is answered
        right here, with no task; one that suspends continues in a task."""
        while self._queue and self._pending is None and not self._closing:
            msg = self._queue.popleft()
            if len(self._queue) == _MAX_PIPELINED and self._transport is not None:
                self._transport.resume_reading()
            if msg.early is not None:
                self._send(msg, msg.early)
                continue
            if msg.method == b"GET":
                self._send(msg, _response(200, self._server.info()))
                continue
            coro = self._server.handler(msg.body)
            try:
                step = coro.send(None)
            except StopIteration as done:
                self._send(msg, _ok(done.value))
                continue
            except Exception:
                self._handler_failed()
                return
            self.deadline = float("inf")
            self._pending = self._loop.create_task(self._finish(msg, coro, step))

    async def _finish(self, msg: _Message, coro: Coroutine[Any, Any, bytes | None],
                      step: Any) -> None:
        try:
            answer = await _resume(coro, step)
        except Exception:
            self._handler_failed()
            return
        self._pending = None
        self._arm(self._limits.idle_timeout, None)
        self._send(msg, _ok(answer))
        self._answer_queued()

    def _handler_failed(self) -> None:
        """The handler answers every error itself, so an exception out of it is a bug: log
        it and drop this connection rather than leave it waiting."""
        log.exception("request handler failed")
        self._fail(500, "internal error")

    def _send(self, msg: _Message, out: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(out)
        if msg.drain:
            if self._transport.can_write_eof():
                self._transport.write_eof()
            self._arm(self._limits.read_timeout, None)
        elif not msg.keep_alive or self._server.closing:
            self.close()


_MAX_PIPELINED = 16
_MAX_DISCARD = 64 * 1024 * 1024
"""After a 413, at most this much more is read and dropped before the connection closes."""


def _same(given: bytes, token: bytes) -> bool:
    """Compare a bearer token in constant time. :mod:`hmac` is imported here, by the only
    server that has a token, so that a plugin serving only its UNIX socket does not load
    OpenSSL."""
    import hmac

    return hmac.compare_digest(given, token)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was answered early."""


def _ok(answer: bytes | None) -> bytes:
    return _response(200, b"" if answer is None else answer)


async def _resume(coro: Coroutine[Any, Any, T], step: Any) -> T:
    """Drive a coroutine that was started by hand and suspended, yielding ``step``."""
    while True:
        try:
            if step is None:
                await asyncio.sleep(0)
            else:
                step._asyncio_future_blocking = False  # the inner yield set it; we await anew
                await step
        except BaseException as exc:  # includes cancellation: pass it into the coroutine
            try:
                step = coro.throw(exc)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                step = coro.send(None)
            except StopIteration as done:
                return cast(T, done.value)


class HTTPServer:
    """Owns the listening socket and every connection."""

    def __init__(self, handler: BodyHandler, info: Callable[[], bytes],
                 limits: Limits | None = None, token: str | None = None) -> None:
        self.handler = handler
        self.info = info
        self.limits = limits or Limits()
        self.token = None if token is None else f"Bearer {token}".encode()
        """The ``Authorization`` header every request must carry, when set."""
        self.closing = False
        self._conns: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def admit(self, conn: _Connection) -> bool:
        if self.closing or len(self._conns) >= self.limits.connections:
            return False
        self._conns.add(conn)
        return True

    def forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve on a bound UNIX socket, or on a bound TCP socket with ``tls``."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), sock=sock, ssl=tls,
                ssl_handshake_timeout=self.limits.read_timeout)
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close connections whose read or idle deadline has passed."""
        loop = asyncio.get_running_loop()
        period = min(1.0, self.limits.read_timeout / 4, self.limits.idle_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in [c for c in self._conns if c.deadline < now]:
                conn.expire()

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections; give busy ones ``grace`` seconds."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            for conn in list(self._conns):
                if not conn.busy:
                    conn.close()
            if not self._conns or loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)
        for conn in list(self._conns):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
