"""What makes the console's pages live: the group plugin's event stream (``GET /events?
topic=group/``), followed once per process, turned into a ``changed`` server-sent event
for each browser that shows the group concerned.

A browser is told only *that* its page changed, not what: it then fetches the parts of the
page again, so that what it shows is always what the plugin says now, never a page patched
from events of which some were missed. The same goes for a stream that drops: when the
browser's stream comes back, the page fetches everything again (``console.js``); when the
console's own stream from the plugin comes back, every browser is told that everything
changed. A burst of events (a rolling update of a thousand members) reaches each browser as
at most one ``changed`` per :data:`COALESCE` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from infrakit.rpc.client import RPCClient
from infrakit.rpc.events import Notice, Subscription
from infrakit.rpc.stream import Sink, Stream
from infrakit.spi.group import EVENT_TYPE

log = logging.getLogger("infrakit.console")

COALESCE = 0.2
"""Seconds over which the events for one browser are gathered into one ``changed``."""
CHANGED = b"event: changed\ndata: -\n\n"
RESUBSCRIBE = 2.0
"""Seconds before the plugin's event stream is asked for again after it was refused."""
HEADERS = "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n"


class _Viewer:
    """One browser's stream: the group it shows ("" for all) and its pending event."""

    def __init__(self, group: str, sink: Sink, loop: asyncio.AbstractEventLoop) -> None:
        self.group = group
        self._sink = sink
        self._loop = loop
        self._due: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        if self._due is None:
            self._due = self._loop.call_later(COALESCE, self._send)

    def _send(self) -> None:
        self._due = None
        self._sink(CHANGED)

    def close(self) -> None:
        if self._due is not None:
            self._due.cancel()


class Live:
    """The browsers' event streams, fed from the group plugin's socket at ``socket``."""

    def __init__(self, socket: Path) -> None:
        self._socket = socket
        self._viewers: set[_Viewer] = set()
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()

    def stream(self, group: str) -> Stream:
        """The answer to a browser's ``GET /ui/live`` for ``group`` ("" for every group)."""
        return Stream(lambda sink: self._attach(group, sink), headers=HEADERS)

    def _attach(self, group: str, sink: Sink) -> Callable[[], None]:
        viewer = _Viewer(group, sink, asyncio.get_running_loop())
        self._viewers.add(viewer)
        sink(b": live\n\n")  # the head goes out now: the browser's stream is open
        self._follow()

        def detach() -> None:
            viewer.close()
            self._viewers.discard(viewer)

        return detach

    def changed(self, group: str | None) -> None:
        """Events came for ``group`` (None: for any, or some were missed)."""
        for viewer in list(self._viewers):
            if group is None or not viewer.group or viewer.group == group:
                viewer.poke()

    def _follow(self) -> None:
        """Start following the plugin's events, once, in a thread of its own."""
        if self._follower is None:
            loop = asyncio.get_running_loop()
            self._follower = threading.Thread(target=self._run, args=(loop,),
                                              name="console-events", daemon=True)
            self._follower.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the plugin's events until :meth:`close`; subscribe again a while after
        the plugin refuses the topic (it has no group yet, or is not up yet)."""
        while not self._stop.is_set():
            subscription = Subscription(RPCClient(self._socket), EVENT_TYPE + "/")
            try:
                self._relay(subscription, loop)
            finally:
                subscription.close()
            self._stop.wait(RESUBSCRIBE)

    def _relay(self, subscription: Subscription, loop: asyncio.AbstractEventLoop) -> None:
        prefix = EVENT_TYPE + "/"
        while not self._stop.is_set():
            item = subscription.get(1.0)
            if item is None or (isinstance(item, Notice) and item.state == "lost"):
                continue
            group: str | None = None
            if isinstance(item, Notice):
                log.info("the group plugin's event stream: %s %s", item.state, item.reason)
            else:
                group = item.topic.removeprefix(prefix).rpartition("/")[0]
            if loop.is_closed():
                return
            loop.call_soon_threadsafe(self.changed, group)
            if isinstance(item, Notice) and item.state in ("unsupported", "invalid"):
                return
