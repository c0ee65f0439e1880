"""A client of a plugin's event stream (``GET /events?topic=``, server-sent events), for
commands that follow what happens (``group describe -w``, ``group events --follow``).

The stream is read in a thread of its own, which hands each event, and each change of the
stream's state, to the caller through :meth:`Subscription.get`. Transport errors stay here:
a stream that drops is reconnected every :data:`RETRY` seconds, and the caller is told, in
words, that it was lost and when it is back. A plugin without an event stream (404 on
``/events``, as from a plugin of the reference that serves no events) or a topic it does
not know ends the subscription with a :class:`Notice` saying which.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import msgspec

from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.spi.event import Event

RETRY = 1.0
"""Seconds between two attempts to reconnect a stream that dropped."""
QUEUED = 10_000
"""Events held for a caller that does not take them; more are dropped (a caller that
redraws on events needs only to know that there were some)."""

_decode = msgspec.json.Decoder(Event).decode


@dataclass(frozen=True)
class Notice:
    """A change of the stream's state: ``lost`` (it will be reconnected), ``back``
    (reconnected: what happened meanwhile was missed), ``unsupported`` (the plugin has no
    event stream) or ``invalid`` (the plugin does not know the topic): the last two end
    the subscription."""

    state: Literal["lost", "back", "unsupported", "invalid"]
    reason: str = ""


class Subscription:
    """The events of one topic of a plugin, as they come; :meth:`close` ends it."""

    def __init__(self, rpc: RPCClient, topic: str) -> None:
        self._rpc = rpc
        self.topic = topic
        self._queue: queue.Queue[Event | Notice] = queue.Queue(QUEUED)
        self._closed = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._lost = False
        """The stream dropped and the caller was told; it is told again once it is back."""
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> Event | Notice | None:
        """The next event or notice, or None if none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:  # wakes the reader up
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _put(self, item: Event | Notice) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(item)

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                reason = self._follow()
            except (OSError, http.client.HTTPException, PluginUnreachable) as exc:
                reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            finally:
                if self._conn is not None:
                    self._conn.close()
            if reason is None or self._closed.is_set():
                return
            if not self._lost:
                self._put(Notice("lost", reason))
                self._lost = True
            self._closed.wait(RETRY)

    def _follow(self) -> str | None:
        """Read the stream until it ends; the reason it ended, or None for an answer that
        ends the subscription."""
        conn = self._conn = self._rpc.connection(None)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._rpc.remote is not None:
            headers["Authorization"] = f"Bearer {self._rpc.remote.token}"
        conn.request("GET", "/events?topic=" + quote(self.topic, safe=""), headers=headers)
        if self._lost:
            self._put(Notice("back"))
            self._lost = False
        resp = conn.getresponse()  # the head comes with the first event
        if resp.status != 200 or "event-stream" not in (resp.getheader("Content-Type") or ""):
            text = resp.read(200).decode(errors="replace").strip()
            invalid = resp.status == 404 and text.startswith("invalid topic")
            self._put(Notice("invalid" if invalid else "unsupported",
                             text if invalid else f"HTTP {resp.status} on /events"))
            return None
        for line in resp:
            _, data, payload = line.partition(b"data:")
            if data:
                with contextlib.suppress(msgspec.DecodeError):
                    self._put(_decode(payload.removeprefix(b" ").strip()))
        return "the plugin ended the stream"
