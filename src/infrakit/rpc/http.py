"""A lean HTTP/1.1 server for JSON-RPC on a UNIX socket (or, for a manager's listener,
on TCP with TLS, where every request must carry the bearer token).

Why not aiohttp's server: on a 2-core machine a plain aiohttp "hello" handler answers about
2,700 keep-alive requests a second to a Python ``http.client`` loop, below what one plugin
must serve (see bench/RESULTS.md). This protocol does only what a plugin socket needs:
``POST /`` with a body (Content-Length or chunked, ``Expect: 100-continue``), ``GET`` of
read-only pages (``/info/api.json``), keep-alive, in-order answers to pipelined requests, a
limit on the request line and headers (431) and on the body (413), a per-request read
deadline, an idle keep-alive deadline, a connection cap, and a graceful close. Parsing is
done by ``httptools`` (llhttp, in C).

On a listener with tokens, a caller is trusted with nothing until it shows one: the
TLS handshake is started by the connection itself, so that it counts against the cap and
has a short deadline (:attr:`Limits.handshake_timeout`, which also bounds the wait for a
first request with the token); a request without the token gets 401 and the connection is
closed; and callers yet to show it may hold only half the cap. The token says who the
caller is (a :class:`~infrakit.spi.access.Principal`: a name and a role); each of its calls
is handled :func:`~infrakit.spi.access.acting_as` it, and the dispatcher refuses a method
its role does not allow. On a UNIX socket, which its file mode guards, the caller is the
local user who connected (``local:alice``), as ``admin``.

A server may also be given a web handler (the console): the requests under ``/ui/`` go to
it whole (:mod:`infrakit.rpc.web`), without a token, for it authenticates them itself (by
a session cookie); no other request pays for that but a test of its path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httptools

from infrakit.rpc.stream import Stream, StreamWriter
from infrakit.rpc.web import PREFIX, Request, WebHandler
from infrakit.spi.access import ACTOR_HEADER, Principal, Role, acting_as, on_behalf

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("infrakit.rpc.http")

#: Answers a JSON-RPC body; ``None`` means "no content" (a notification).
BodyHandler = Callable[[bytes], Coroutine[Any, Any, bytes | None]]
#: Who shows the ``Authorization`` header given (its whole value), or None for nobody.
Authenticate = Callable[[bytes], Principal | None]
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """The answer to a ``GET`` of a read-only page (``/info/api.json``, ``/metrics``)."""

    body: bytes
    ctype: str = "application/json"
    status: int = 200


#: The read-only pages a server answers ``GET`` on, by path; each is given the query string
#: (without the ``?``) and answers at once, in the event loop, with a page or a stream
#: (which stays open: see :mod:`infrakit.rpc.stream`).
Pages = Mapping[bytes, Callable[[bytes], Page | Stream]]

_REASONS = {100: "Continue", 200: "OK", 303: "See Other", 304: "Not Modified",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout",
            413: "Content Too Large", 415: "Unsupported Media Type",
            429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error",
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
    """Open connections, TLS handshakes included. On a listener with a token, those that
    have not shown it yet hold at most half of them: a newcomer past that, or past the cap,
    closes the one of them that has waited longest, so that callers without the token
    cannot keep out callers with it."""
    handshake_timeout: float = 10.0
    """On a listener with a token: seconds a caller has, from connecting, to finish the
    TLS handshake and send the head of a request with the token."""


def _response(status: int, body: bytes, ctype: str = "application/json",
              extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def _plain(status: int, text: str, extra: str = "") -> bytes:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8", extra)


def _page(pages: Pages, target: bytes) -> bytes | Stream:
    """The answer to a ``GET`` of ``target`` (a path in ``pages``, and its query): its
    bytes, or the stream to answer with."""
    path, _, query = target.partition(b"?")
    try:
        page = pages[path](query)
    except Exception:
        log.exception("page %s failed", path.decode("latin-1"))
        return _plain(500, "internal error")
    if isinstance(page, Stream):
        return page
    return _response(page.status, page.body, page.ctype)


@dataclass
class _Message:
    method: bytes
    keep_alive: bool
    body: bytes
    early: bytes | None
    """A response decided before the body was read (405, 404, 415)."""
    target: bytes = b"/"
    """The request's path and query."""
    principal: Principal | None = None
    """Who sent it: the holder of its token, or the local user of a UNIX socket."""
    drain: bool = False
    """After this answer, read and drop what the client still sends (see
    :meth:`_Connection.refuse`)."""
    web: dict[str, str] | None = None
    """The header fields of a request for the web handler (see :mod:`infrakit.rpc.web`)."""


class _Reader:
    """The parser's callbacks: what the request being read says, as it arrives."""

    def __init__(self, conn: _Connection, limits: Limits, authenticate: Authenticate | None,
                 pages_only: bool, web: bool) -> None:
        self._conn = conn
        self._limits = limits
        self._authenticate = authenticate
        self._pages_only = pages_only
        """A port that serves its pages alone: no call reaches the plugin."""
        self._web = web
        """Whether paths under :data:`~infrakit.rpc.web.PREFIX` go to a web handler."""
        self.parser = httptools.HttpRequestParser(self)
        self.head = 0
        """Bytes of the request head read so far; -1 while a body is read."""
        self.reset()

    def detach(self) -> None:
        """Drop this reader's references to its connection and to its parser, which refer
        back to it: a closed connection is then freed at once, not when the cycle collector
        gets to it (under a crowd of short TLS connections that took 2.5 MB a second)."""
        self.__dict__.pop("_conn", None)
        self.__dict__.pop("parser", None)

    def reset(self) -> None:
        self._url: list[bytes] = []
        self._ctype: bytes | None = None
        self.principal: Principal | None = None
        """Who shows this request's token: set once its header is read."""
        self._behalf = b""
        """The caller a manager forwarding this call names (:data:`ACTOR_HEADER`)."""
        self.authorized = self._authenticate is None
        """Whether this request has shown a token (always, where none is needed)."""
        self._expect = False
        self._upgrade = b""
        self._length = 0
        self._body: list[bytes] = []
        self._size = 0
        self._early: bytes | None = None
        self._fields: dict[str, str] | None = None
        """The header fields of a request for the web handler; None for any other."""

    def on_message_begin(self) -> None:
        self.reset()
        self._conn.arm(self._limits.read_timeout, 408)

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        if self._web and b"".join(self._url).startswith(PREFIX):
            self._fields = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if self._fields is not None:  # the web handler authenticates by its own means
            self._fields[lname.decode("latin-1")] = value.decode("latin-1")
        elif lname == b"content-type":
            self._ctype = value
        elif lname == b"authorization" and self._authenticate is not None:
            # checked as soon as it has come: a wrong token ends the connection at once
            self.principal = self._authenticate(value)
            self.authorized = self.principal is not None
            if not self.authorized:
                self._conn.refuse(401, "unauthorized")
                raise _Refused
            self._conn.prove()
        elif lname == _ACTOR:
            self._behalf = value
        elif lname == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        elif lname == b"upgrade":
            self._upgrade = value
        elif lname == b"content-length" and value.isdigit():
            self._length = int(value)

    def on_headers_complete(self) -> None:
        self.head = -1
        # nothing else is said to a caller without the token (the web handler says itself)
        if not self.authorized and self._fields is None:
            self._conn.refuse(401, "unauthorized")
            raise _Refused
        if self.parser.should_upgrade():
            self._switching()
        if self._length > self._limits.body:
            self._too_large()
        self._early = self._early_answer()
        if self._expect and self._early is None:
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _switching(self) -> None:
        """``CONNECT``, or ``Upgrade`` with ``Connection: upgrade``: llhttp takes what follows
        the head for another protocol, so the request is refused here, once, and the
        connection closed after the answer."""
        if self.parser.get_method() == b"CONNECT":
            self._conn.refuse(405, "CONNECT is not served here: POST JSON-RPC 2.0 requests "
                                   "to /", "Allow: GET, POST\r\n")
        else:
            protocol = self._upgrade.decode("latin-1")[:40]
            self._conn.refuse(400, f"protocol upgrades are not supported (Upgrade: "
                                   f"{protocol}): send the request without Upgrade")
        raise _Refused

    def _early_answer(self) -> bytes | None:
        """The answer to a request that is refused for its head alone, if it is."""
        if self._fields is not None:
            return None
        method = self.parser.get_method()
        path = b"".join(self._url).split(b"?", 1)[0]
        if path in self._conn.pages:
            return None if method == b"GET" else _plain(405, "use GET", "Allow: GET\r\n")
        if self._pages_only:
            return _plain(404, "not found: this port serves GET "
                          + " and ".join(p.decode("latin-1") for p in self._conn.pages))
        if path != b"/":
            return _plain(404, "not found: POST JSON-RPC 2.0 requests to /")
        if method != b"POST":
            return _plain(405, "use POST with a JSON-RPC 2.0 body", "Allow: POST\r\n")
        if self._ctype is not None and \
                self._ctype.split(b";")[0].strip().lower() != b"application/json":
            return _plain(415, "Content-Type must be application/json")
        return None

    def on_chunk_header(self) -> None:
        """A chunk's size has been read. If it is the last (size 0), headers may follow
        (the trailer section), which llhttp keeps as it keeps a request's head: they are
        counted against :attr:`Limits.head` until a body byte shows it was not the last."""
        self.head = 0

    def on_body(self, body: bytes) -> None:
        self.head = -1
        self._size += len(body)
        if self._size > self._limits.body:
            self._too_large()
        elif self._early is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.head = 0
        self._conn.arm(self._limits.idle_timeout, None)
        principal = self.principal or self._conn.local
        if self._behalf and principal is not None:
            principal = on_behalf(principal, self._behalf.decode("utf-8", "replace"))
        msg = _Message(self.parser.get_method(), self.parser.should_keep_alive(),
                       b"".join(self._body), self._early, b"".join(self._url), principal,
                       web=self._fields)
        self.reset()
        self._conn.queue(msg)

    def _too_large(self) -> None:
        self._conn.refuse(413, f"request body larger than {self._limits.body} bytes",
                          drain=True)
        raise _Refused


class _Connection(asyncio.Protocol):
    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._limits = server.limits
        self.pages = server.pages
        self._reader = _Reader(self, server.limits, server.authenticate,
                               server.handler is None, server.web is not None)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[_Message] = collections.deque()
        self._pending: asyncio.Task[None] | None = None
        self._tls: asyncio.Task[None] | None = None
        """The TLS handshake, while it runs."""
        self._loop = asyncio.get_running_loop()
        self.proven = server.authenticate is None
        """Whether the caller has shown a token (always, where none is needed)."""
        self.local: Principal | None = None
        """On a UNIX socket, the local user who connected."""
        self._proof_deadline = float("inf")
        self.deadline = self._loop.time() + self._limits.idle_timeout
        self.deadline_status: int | None = None
        """What to answer when :attr:`deadline` passes: 408 mid-request, nothing when idle."""
        self._closing = False
        self._discarding = False
        self._discarded = 0
        self._ignoring = False
        self._reading = True
        self._writing_paused = False
        self._stream: StreamWriter | None = None
        """The streamed answer this connection sends, once it sends one (its last)."""

    def arm(self, seconds: float, status: int | None) -> None:
        """Set the deadline that :meth:`HTTPServer._sweep` enforces (cheaper than a timer);
        never past the time a caller has to show the token. While a handler runs there is
        none (a pipelined request behind it must not have it cut off, or be answered 408
        before it): the next is set once it has answered. A stream has none while its
        client reads it."""
        if self._pending is not None:
            return
        if self._stream is not None and not self._writing_paused:
            self.deadline = float("inf")
            return
        self.deadline = min(self._loop.time() + seconds, self._proof_deadline)
        self.deadline_status = status

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tls = self._server.tls
        if not self._server.admit(self):
            self._closing = True
            if tls is None:
                self._transport.write(_plain(503, "too many connections",
                                             "Connection: close\r\n"))
                transport.close()
            else:  # nothing can be said before TLS
                self._transport.abort()
            return
        if not self.proven:
            self._proof_deadline = self._loop.time() + self._limits.handshake_timeout
            self.arm(self._limits.handshake_timeout, None)
        if tls is not None:
            _start_tls(self, tls)
        else:
            self.local = _peer(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._closing = True
        if self._stream is not None:
            self._stream.detach()
        if self._pending is not None:
            self._pending.cancel()
        self._reader.detach()

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; while a request head is read, in pieces that keep it within
        :attr:`Limits.head`. (The bytes after a request that ends inside a piece count
        toward the next head only from the next piece on: a head may pass the limit by
        one read before it is refused.)"""
        reader = self._reader
        while data and not (self._closing or self._ignoring):
            if self._discarding:
                self._discarded += len(data)
                if self._discarded > _MAX_DISCARD:
                    self.close()
                return
            if reader.head >= 0:
                room = self._limits.head - reader.head
                if room <= 0:
                    self.refuse(431, f"request line and headers larger than "
                                     f"{self._limits.head} bytes", drain=True)
                    continue
                piece, data = data[:room], data[room:]
                reader.head += len(piece)
            else:
                piece, data = data, b""
            self._feed(piece)

    def _feed(self, piece: bytes) -> None:
        try:
            self._reader.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:  # refused at its head: what follows is not HTTP
            if not (self._closing or self._discarding or self._ignoring):
                self.refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not (self._closing or self._discarding or self._ignoring):
                self.refuse(400, f"malformed HTTP request: {exc}")

    # -- what the reader asks for --------------------------------------------------------
    def prove(self) -> None:
        """The caller has shown the token: its connection is kept like any other."""
        if not self.proven:
            self.proven = True
            self._proof_deadline = float("inf")
            self._server.proven(self)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def queue(self, msg: _Message) -> None:
        self._queue.append(msg)
        self._read_if_keeping_up()
        self._answer_queued()

    # -- flow control --------------------------------------------------------------------
    def pause_writing(self) -> None:
        """The client reads its answers slower than they are made (the transport's buffer
        is past its high-water mark): answer and read nothing more until it catches up,
        which it has until the read deadline to do."""
        self._writing_paused = True
        if self._stream is not None:
            self._stream.pause()
        self._read_if_keeping_up()
        self.arm(self._limits.read_timeout, None)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._stream is not None:
            self._stream.resume()
        self._read_if_keeping_up()
        self.arm(self._limits.idle_timeout, None)
        self._answer_queued()

    def _read_if_keeping_up(self) -> None:
        """Read requests while few wait for their answers and the client reads those."""
        reading = not self._writing_paused and len(self._queue) <= _MAX_PIPELINED
        if reading != self._reading and self._transport is not None and not self._closing:
            self._reading = reading
            (self._transport.resume_reading if reading else self._transport.pause_reading)()

    def refuse(self, status: int, text: str, extra: str = "", drain: bool = False) -> None:
        """Answer the request being read with ``status``, after the answers to the requests
        before it, and read no more requests from this connection. With ``drain``, what
        the client is still sending is read and dropped (up to :data:`_MAX_DISCARD` bytes,
        until the read deadline), so that it can finish writing and read the answer,
        instead of failing on a broken pipe; without, the connection closes once answered.
        A caller without the token is answered 401, and its connection closed."""
        drain = drain and self._reader.authorized
        self._queue.append(_Message(b"", False, b"", _verdict(self._reader.authorized,
                                                               status, text, extra), drain=drain))
        self._discarding, self._ignoring = drain, not drain
        self._answer_queued()

    # -- answering -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; the server calls this too, at deadlines and shutdown."""
        self._closing = True
        if self._stream is not None:
            self._stream.end()
        if self._transport is not None:
            if self._tls is not None:
                self._transport.abort()
            else:
                self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once, saying nothing: to make room for another."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._pending is not None

    def _answer_queued(self) -> None:
        """Answer queued requests in order. A handler that completes without suspending
        (an async plugin method that needs no I/O, a handshake, an error) is answered
        right here, with no task; one that suspends continues in a task."""
        while self._queue and not (self._pending or self._closing or self._writing_paused):
            msg = self._queue.popleft()
            if len(self._queue) == _MAX_PIPELINED:
                self._read_if_keeping_up()
            if msg.early is not None:
                self._send(msg, msg.early)
                continue
            if msg.web is not None:  # for the web handler: see infrakit.rpc.web
                self._pending = self._loop.create_task(_web(self, msg, msg.web))
                return
            if msg.method == b"GET":
                page = _page(self.pages, msg.target)
                if isinstance(page, Stream):
                    self._streams(page)
                    return
                self._send(msg, page)
                continue
            with acting_as(msg.principal):  # the task below runs as its caller too
                coro = cast(BodyHandler, self._server.handler)(msg.body)  # None: refused early
                try:
                    step = coro.send(None)
                except StopIteration as done:
                    self._send(msg, _ok(done.value))
                    continue
                except Exception:
                    _handler_failed(self)
                    return
                self.deadline = float("inf")
                self._pending = self._loop.create_task(self._finish(msg, coro, step))

    def _streams(self, stream: Stream) -> None:
        """Answer with ``stream``, this connection's last answer, while the client reads."""
        if self._transport is not None and not self._closing:
            self._ignoring, self._stream = True, StreamWriter(self._transport, stream)
            self.arm(0, None)

    async def _finish(self, msg: _Message, coro: Coroutine[Any, Any, bytes | None],
                      step: Any) -> None:
        try:
            answer = await _resume(coro, step)
        except Exception:
            _handler_failed(self)
            return
        self._pending = None
        self.arm(self._limits.idle_timeout, None)
        self._send(msg, _ok(answer))
        self._answer_queued()

    def _send(self, msg: _Message, out: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(out)
        if msg.drain and self._transport.can_write_eof():  # not over TLS
            self._transport.write_eof()
            self.arm(self._limits.read_timeout, None)
        elif not msg.keep_alive or self._server.closing:
            self.close()


_MAX_PIPELINED = 16
_ACTOR = ACTOR_HEADER.lower().encode()
_TLS_SHUTDOWN = 2.0
"""Seconds a closed TLS connection waits for the peer's close_notify, reading and dropping
whatever else comes meanwhile."""
_MAX_DISCARD = 64 * 1024 * 1024
"""After a 413 or a 431, at most this much more is read and dropped before the connection
closes."""


def _expire(conn: _Connection) -> None:
    """``conn``'s deadline has passed: say so, if it is mid-request, and close it."""
    status = conn.deadline_status
    if status is not None and conn._tls is None and conn._transport is not None:
        conn._transport.write(_verdict(conn._reader.authorized, status,
                                       "request not received in time"))
    conn.close()


def _handler_failed(conn: _Connection) -> None:
    """The handler answers every error itself, so an exception out of it is a bug: log it
    and drop the connection rather than leave it waiting."""
    log.exception("request handler failed")
    conn.write(_plain(500, "internal error", "Connection: close\r\n"))
    conn.close()


def _start_tls(conn: _Connection, tls: ssl.SSLContext) -> None:
    """Start ``conn``'s TLS handshake at once, before anything can read the connection's
    bytes; it goes on in a task. It holds a place under the cap like any connection."""
    handshake = _handshake(conn, tls)
    with contextlib.suppress(StopIteration):
        conn._tls = conn._loop.create_task(_resume(handshake, handshake.send(None)))


async def _handshake(conn: _Connection, tls: ssl.SSLContext) -> None:
    """Secure ``conn``'s transport, or drop it."""
    raw = conn._transport
    assert raw is not None
    secured = await _secure(raw, conn, tls, conn._limits.handshake_timeout)
    conn._tls = None
    if secured is None or conn._closing:
        (secured or raw).abort()
        conn.connection_lost(None)  # which the transport may not say
        return
    conn._transport = secured


def _verdict(authorized: bool, status: int, text: str, extra: str = "") -> bytes:
    """An answer after which the connection closes; to a caller without the token, 401
    whatever was wrong (nothing else is said to it)."""
    if not authorized:
        status, text, extra = 401, "unauthorized", "WWW-Authenticate: Bearer\r\n"
    return _plain(status, text, "Connection: close\r\n" + extra)


async def _secure(raw: asyncio.Transport, protocol: asyncio.Protocol, tls: ssl.SSLContext,
                  timeout: float) -> asyncio.Transport | None:
    """``raw`` with TLS, server side, or None if the handshake failed, took longer than
    ``timeout`` or was cut off (by the sweeper, or to make room)."""
    options: dict[str, Any] = {"ssl_handshake_timeout": timeout}
    if sys.version_info >= (3, 11):
        options["ssl_shutdown_timeout"] = _TLS_SHUTDOWN
    loop = asyncio.get_running_loop()
    with contextlib.suppress(Exception):
        return await loop.start_tls(raw, protocol, tls, server_side=True, **options)
    return None


def _peer(transport: asyncio.Transport) -> Principal | None:
    """The local user at the other end of a UNIX socket, as ``admin``: whoever may open
    the socket (its directory's and its own mode say who) may do anything."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    return _local(int.from_bytes(creds[4:8], sys.byteorder))


@functools.lru_cache(maxsize=64)
def _local(uid: int) -> Principal:
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    return Principal(f"local:{name}", Role.ADMIN)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was answered early."""


async def _web(conn: _Connection, msg: _Message, fields: dict[str, str]) -> None:
    """Answer a request for the web handler: with a page, or a stream."""
    conn.deadline = float("inf")
    transport = conn._transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    request = Request(msg.method.decode("latin-1"), msg.target.decode("latin-1"), fields,
                      msg.body, str(peer[0]) if peer else "")
    try:
        answer = await cast(WebHandler, conn._server.web)(request)
    except Exception:
        _handler_failed(conn)
        return
    conn._pending = None
    if isinstance(answer, Stream):
        conn._streams(answer)
        return
    conn.arm(conn._limits.idle_timeout, None)
    keep_alive = msg.keep_alive and not conn._server.closing
    conn._send(msg, answer.encode(_REASONS.get(answer.status, "OK"), not keep_alive))
    conn._answer_queued()


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

    def __init__(self, handler: BodyHandler | None, pages: Pages,
                 limits: Limits | None = None, authenticate: Authenticate | None = None,
                 web: WebHandler | None = None) -> None:
        self.handler = handler
        """None on a port that serves its pages alone (a metrics port)."""
        self.pages = pages
        self.web = web
        """What answers the paths under :data:`~infrakit.rpc.web.PREFIX`, if anything."""
        self.limits = limits or Limits()
        self.authenticate = authenticate
        """Who shows an ``Authorization`` header; when set, every request must carry one
        that names somebody."""
        self.tls: ssl.SSLContext | None = None
        self.closing = False
        self._conns: set[_Connection] = set()
        self._unproven: dict[_Connection, None] = {}
        """Connections yet to show the token, oldest first."""
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def admit(self, conn: _Connection) -> bool:
        if self.closing:
            return False
        if self.authenticate is not None:
            self._make_room()
        if len(self._conns) >= self.limits.connections:
            return False
        self._conns.add(conn)
        if not conn.proven:
            self._unproven[conn] = None
        return True

    def _make_room(self) -> None:
        """Drop the connections that have waited longest without showing the token, while
        such connections hold half the cap, or the cap is reached."""
        share = max(1, self.limits.connections // 2)
        while self._unproven and (len(self._unproven) >= share
                                  or len(self._conns) >= self.limits.connections):
            oldest = next(iter(self._unproven))
            self.forget(oldest)
            oldest.abort()

    def proven(self, conn: _Connection) -> None:
        self._unproven.pop(conn, None)

    def forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        self._unproven.pop(conn, None)

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve on a bound UNIX socket, or on a bound TCP socket with ``tls``."""
        loop = asyncio.get_running_loop()
        # as many may wait to be accepted as may be served (asyncio's default is 100: a
        # combo calling itself more often at once was refused a connection)
        backlog = max(100, self.limits.connections)
        if sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock,
                                                         backlog=backlog)
        else:  # each connection starts its own TLS, so that its handshake is counted
            self.tls = tls
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock,
                                                    backlog=backlog)
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close connections whose read or idle deadline has passed."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        period = min(1.0, limits.read_timeout / 4, limits.idle_timeout / 4,
                     limits.handshake_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in [c for c in self._conns if c.deadline < now]:
                _expire(conn)

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
