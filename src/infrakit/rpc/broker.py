"""The event stream of a plugin socket, ``GET /events?topic=``, as the reference's broker
serves it (``pkg/broker/server``): what a plugin publishes goes to every stream subscribed
to its topic, as server-sent events.

A topic that ends in ``/`` (or the root: no topic, ``""`` or ``.``) subscribes to every
topic under it; any other topic to exactly that topic. A topic that ``Event.List`` does not
know is refused with 404 ``invalid topic: <topic>`` before anything streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from infrakit.rpc.http import Page
from infrakit.rpc.stream import Sink, Stream
from infrakit.spi.event import Event, Publish, sse_data
from infrakit.spi.tree import ROOT, PathServed, from_string, is_root

log = logging.getLogger("infrakit.rpc")

HEADERS = ("Access-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\n"
           "Connection: keep-alive\r\n")
"""Sent with the head of every stream, as the reference sends them."""


class Broker:
    """The subscribers of one socket's event stream, and the publishing to them."""

    def __init__(self, topics: PathServed) -> None:
        self._topics = topics
        self._subscribers: dict[int, tuple[str, Sink]] = {}
        self._next = 0

    def wire(self) -> None:
        """Hand each object that publishes events its publish function; a typed object's
        topics are put under its name."""
        objects = [(name, obj) for name, obj in self._topics.typed.items()]
        if self._topics.base is not None:
            objects.append(("", self._topics.base))
        for name, obj in objects:
            publish_on = getattr(obj, "publish_on", None)
            if callable(publish_on):
                publish_on(self.publisher(name))

    def publisher(self, namespace: str) -> Publish:
        return _Publisher(self, namespace)

    def wanted(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        """Send ``event`` to every stream whose topic it matches, encoded once."""
        if not self._subscribers:
            return
        key = "/" + event.topic
        chunk = sse_data(event)
        for topic, sink in list(self._subscribers.values()):
            if key == topic or (topic.endswith("/") and key.startswith(topic)):
                sink(chunk)

    def page(self, query: bytes) -> Page | Stream:
        """The answer to ``GET /events?topic=``."""
        topic = parse_qs(query.decode("latin-1")).get("topic", [""])[0].lstrip("/")
        if not self._valid(topic):
            return Page(f"invalid topic: {topic}\n".encode(), "text/plain; charset=utf-8",
                        404)
        key = "/" if topic in ("", ROOT) else "/" + topic
        return Stream(lambda sink: self._subscribe(key, sink), headers=HEADERS)

    def _valid(self, topic: str) -> bool:
        path = from_string(topic)
        return is_root(path) or _at_once(self._topics.list(path)) is not None

    def _subscribe(self, topic: str, sink: Sink) -> Callable[[], None]:
        self._next += 1
        key = self._next
        self._subscribers[key] = (topic, sink)
        log.debug("event stream opened on %s (%d open)", topic, len(self._subscribers))
        return lambda: self._subscribers.pop(key, None) and None


class _Publisher:
    """Publishes the events of one object, under its type name."""

    def __init__(self, broker: Broker, namespace: str) -> None:
        self._broker = broker
        self._prefix = f"{namespace}/" if namespace else ""

    def __call__(self, event: Event) -> None:
        event.topic = self._prefix + event.topic
        self._broker.publish(event)

    def wanted(self) -> bool:
        return self._broker.wanted()


def _at_once(coro: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that never suspends: ``event_topics`` answers from memory
    (a page answers in the event loop, at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("Event.List suspended: a plugin's event_topics must answer at once")
