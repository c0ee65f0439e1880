"""Web pages beside JSON-RPC on one listener: every request whose path starts with
:data:`PREFIX` goes to a web handler (the console) instead of the plugin.

The JSON-RPC path of :mod:`infrakit.rpc.http` stays as it is; a request under the prefix is
read whole (its head's fields kept, which JSON-RPC requests never need), handed over as a
:class:`Request`, and answered with a :class:`Response` or a :class:`~infrakit.rpc.stream.
Stream` (server-sent events). Such a request carries no bearer token (a browser cannot send
one): the handler authenticates it itself, by its session cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from infrakit.rpc.stream import Stream

PREFIX = b"/ui/"
"""The paths a web handler answers."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    """The path and query, as sent."""
    headers: dict[str, str]
    """Header fields by lower-case name (a repeated field: its last value)."""
    body: bytes
    client: str
    """The peer's address (its host, without the port)."""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """Fields beyond Content-Length (Content-Type among them)."""

    def encode(self, reason: str, close: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {reason}",
                 *(f"{name}: {value}" for name, value in self.headers),
                 f"Content-Length: {len(self.body)}"]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


WebHandler = Callable[[Request], Awaitable[Response | Stream]]
