"""Streamed answers on a plugin socket: a ``GET`` page that stays open and sends chunks as
they come (server-sent events on ``/events``), as the reference's broker does.

The head goes out with the first chunk, not before (a subscriber to a quiet topic gets no
bytes at all, as from the reference); each chunk is one HTTP chunk, and the chunks of one
burst (one turn of the event loop) go out in one write. A client that does not
read holds at most the transport's buffer and :data:`BACKLOG` bytes of chunks (older ones are
skipped past that), and a chunk that could not be sent within :data:`SLOW_CONSUMER` seconds
is skipped, as the reference's broker skips a subscriber it waited a second for. (So a burst
of more than about a megabyte in one go, some 4,000 events, reaches a client cut to what
fits.) The server ends every stream with the last chunk when
it closes, with the head first if no chunk went before.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("infrakit.rpc.http")

BACKLOG = 1024 * 1024
"""Bytes of chunks kept for a client whose transport's buffer is full; older ones are
skipped past that."""
SLOW_CONSUMER = 1.0
"""Seconds a chunk waits for a client that does not read before it is skipped."""

Sink = Callable[[bytes], None]


@dataclass(frozen=True)
class Stream:
    """The answer to a ``GET`` page that streams: ``attach`` is called with the function
    that sends one chunk, and returns the function that stops sending (called once the
    client has left or the server closes)."""

    attach: Callable[[Sink], Callable[[], None]]
    ctype: str = "text/event-stream"
    headers: str = ""
    """Header lines beyond Content-Type and Transfer-Encoding, each ending in CRLF."""


class StreamWriter:
    """One connection's streamed answer."""

    def __init__(self, transport: asyncio.Transport, stream: Stream) -> None:
        self._transport = transport
        self._head: bytes | None = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {stream.ctype}\r\n{stream.headers}"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
        self._backlog: collections.deque[tuple[float, bytes]] = collections.deque()
        self._held = 0
        """Bytes in the backlog."""
        self._framed: list[bytes] = []
        """Chunks framed and not yet written (see :meth:`_write`)."""
        self._unwritten = 0
        """Their bytes: past :data:`BACKLOG`, chunks wait in the backlog instead."""
        self.paused = False
        self.skipped = 0
        """Chunks this client did not get because it did not read them in time."""
        self._detach = stream.attach(self.send)

    def send(self, chunk: bytes) -> None:
        if self._transport.is_closing():
            return
        if self.paused or self._unwritten > BACKLOG:
            self._backlog.append((time.monotonic(), chunk))
            self._held += len(chunk)
            while self._held > BACKLOG:
                self._held -= len(self._backlog.popleft()[1])
                self.skipped += 1
            return
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        """Frame ``chunk``; the chunks framed in one turn of the event loop (a burst of
        events) go out in one write, not one system call each."""
        if not self._framed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._framed += (f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n")
        self._unwritten += len(chunk)

    def _flush(self) -> None:
        """Write what was framed; then what waited, if the client keeps up after all."""
        framed, self._framed, self._unwritten = self._framed, [], 0
        head, self._head = self._head, None
        if framed and not self._transport.is_closing():
            self._transport.write(b"".join((head or b"", *framed)))
        if self._backlog and not self.paused:
            self.resume()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """The client reads again: send what waited, less what waited too long."""
        self.paused = False
        oldest = time.monotonic() - SLOW_CONSUMER
        while self._backlog and not self.paused:
            sent, chunk = self._backlog.popleft()
            self._held -= len(chunk)
            if sent < oldest:
                self.skipped += 1
            else:
                self._write(chunk)

    def end(self) -> None:
        """Stop sending, and end the answer with the last chunk (after the head, if no
        chunk went before it), so that the client sees the stream end, not break."""
        self.detach()
        self._backlog.clear()
        self._framed.append(b"0\r\n\r\n")
        self._flush()

    def detach(self) -> None:
        detach, self._detach = self._detach, lambda: None
        detach()
        if self.skipped:
            log.info("a streamed answer ended; its client missed %d chunks it did not read "
                     "in time", self.skipped)
            self.skipped = 0
