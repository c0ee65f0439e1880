"""Event/0.1.0: the topics a plugin publishes events on, as the reference serves them.

The only RPC method is ``Event.List``, the topics under a topic. The events themselves go
out over a stream on the plugin's socket (``GET /events?topic=``, server-sent events), which
the runtime serves: a plugin that publishes events implements :class:`EventPlugin`, and the
runtime hands it the function that publishes one (``PublishOn`` in the reference).
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Protocol

import msgspec

from infrakit.spi.methods import MaybeAwaitable, Method, interface
from infrakit.spi.tree import PathServed, list_topics, parse_path
from infrakit.spi.types import InterfaceSpec, Wire

EVENT_API = InterfaceSpec(name="Event", version="0.1.0")

ZERO_TIME = "0001-01-01T00:00:00Z"
"""What the reference sends as ``Received`` (its client fills it in)."""


class Event(Wire, kw_only=True):
    """One event: ``Topic`` is relative to the plugin and starts with the typed object's
    name (``group/cattle/provisioned``)."""

    topic: str
    type: str = ""
    id: str = msgspec.field(default="", name="ID")
    timestamp: str = ZERO_TIME
    received: str = ZERO_TIME
    data: Any = None
    error: str = ""
    """Set only by a client: why the stream could not be had (``http-status:404``)."""


class Publish(Protocol):
    """What the runtime hands a plugin to publish its events with, on the event loop."""

    def __call__(self, event: Event) -> None:
        """Send ``event`` to the subscribers of its topic."""
        ...

    def wanted(self) -> bool:
        """Whether anyone follows the events now: a plugin need not make them if not."""
        ...


class EventPlugin(Protocol):
    """What a plugin that publishes events implements; ``event_topics`` may be ``async``."""

    def event_topics(self, topic: list[str]) -> MaybeAwaitable[list[str] | None]:
        """The topics right under ``topic`` (relative to this object; ``[]`` is its
        root): ``[]`` for a topic with none under it, None for an unknown topic."""
        ...

    def publish_on(self, publish: Publish) -> None:
        """Keep ``publish``: the runtime calls this once, before the first call."""
        ...


def timestamp(seconds: float) -> str:
    """A time as Go's RFC3339Nano in UTC prints it (trailing zeros of the fraction cut)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def sse_data(event: Event) -> bytes:
    """The event as the reference's broker writes it: ``data: <json>\\n\\n``, the JSON
    being Go's ``MarshalIndent(v, "", "")`` with its newlines removed (``": "`` after a key,
    a bare ``,`` between members, ``<>&`` escaped), keys in the struct's order, Type and
    Data left out when empty. (A float that is a whole number keeps its ``.0``.)"""
    fields: dict[str, Any] = {"Topic": event.topic}
    if event.type:
        fields["Type"] = event.type
    fields.update(ID=event.id, Timestamp=event.timestamp, Received=event.received)
    if event.data is not None:
        fields["Data"] = event.data
    # one member a line, indented by depth: the lines joined again are Go's text (a JSON
    # string holds no raw new line); <, > and & appear only in strings, which Go escapes
    lines = msgspec.json.format(msgspec.json.encode(fields), indent=1)
    return b"data: " + _GO_ESCAPES.sub(lambda m: _GO_ESCAPED[m[0]],
                                       _INDENT.sub(b"", lines)) + b"\n\n"


_INDENT = re.compile(rb"\n *")
_GO_ESCAPES = re.compile(rb"[<>&]")
_GO_ESCAPED = {b"<": rb"\u003c", b">": rb"\u003e", b"&": rb"\u0026"}


class TopicRequest(Wire, kw_only=True):
    topic: Any = msgspec.UNSET
    """A slash path, read as the reference reads it (see :mod:`infrakit.spi.tree`)."""


class NodesResult(Wire, kw_only=True):
    nodes: list[str] | None


def served(objects: dict[str, object]) -> PathServed:
    """The Event objects of one socket, by type name, as one served object."""
    return PathServed(objects, list_topics)


EVENT = interface(
    EVENT_API,
    Method("Event.List", TopicRequest, NodesResult, "list", lambda r: (parse_path(r.topic),),
           lambda r, v: NodesResult(nodes=v), lambda res: res.nodes),
)
