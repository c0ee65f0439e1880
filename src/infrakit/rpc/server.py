"""Serve plugin objects as HTTP/1.1 JSON-RPC 2.0 on a UNIX socket.

A plugin author writes the verbs and calls :func:`serve`. This module owns the server's
life: it claims the socket, runs the plugin objects' ``start`` and ``stop`` hooks, answers
until SIGINT or SIGTERM, lets in-flight calls finish and removes the socket. What a request
means (the handshake, routing by ``Type``, threads for blocking methods, errors) is
:mod:`infrakit.rpc.dispatch`'s.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from infrakit.rpc import eventloop
from infrakit.rpc.dispatch import DEFAULT_WORKERS, HANDSHAKE_METHODS, Dispatcher, Plugins
from infrakit.rpc.http import HTTPServer, Limits, Page, Pages
from infrakit.rpc.lifecycle import SocketClaim, bind_tcp
from infrakit.rpc.metrics import metrics_page
from infrakit.rpc.paths import plugin_dir
from infrakit.rpc.stream import Stream
from infrakit.rpc.web import WebHandler
from infrakit.spi.tree import PathServed

if TYPE_CHECKING:
    from infrakit.rpc.tcp import TcpListener
    from infrakit.spi.methods import Interface

log = logging.getLogger("infrakit.rpc")

DEFAULT_GRACE = 10.0


def _served(instance: Plugins | None, flavor: Plugins | None, group: Plugins | None,
            event: Plugins | None = None,
            metadata: Plugins | None = None) -> dict[Interface, Plugins]:
    """The interface of each kind of plugin given; only those interfaces are imported, so
    that an instance plugin's process does not hold the flavor and group wire types."""
    served: dict[Interface, Plugins] = {}
    if event is not None:
        from infrakit.spi import event as ev

        served[ev.EVENT] = ev.served(_typed(event))
    if metadata is not None:
        from infrakit.spi import metadata as md

        served[md.METADATA] = md.served(_typed(metadata))
    if instance is not None:
        from infrakit.spi.instance import INSTANCE

        served[INSTANCE] = instance
    if flavor is not None:
        from infrakit.spi.flavor import FLAVOR

        served[FLAVOR] = flavor
    if group is not None:
        from infrakit.spi.group import GROUP

        served[GROUP] = group
    if not served:
        raise ValueError("serve() needs at least one of instance=, flavor=, group=, event= "
                         "or metadata=")
    return served


def _typed(plugins: Plugins) -> dict[str, object]:
    return dict(plugins) if isinstance(plugins, Mapping) else {".": plugins}


def _pages(name: str, dispatcher: Dispatcher, served: dict[Interface, Plugins]) -> Pages:
    """The socket's GET pages: its description, and its event stream if it has events."""
    info = msgspec.json.encode(
        {"Name": name, "Implements": dispatcher.apis, "Types": dispatcher.types,
         "Methods": sorted([*dispatcher.methods, *HANDSHAKE_METHODS])})
    pages: dict[bytes, Callable[[bytes], Page | Stream]] = {
        b"/info/api.json": lambda _query: Page(info), b"/metrics": metrics_page}
    topics = next((p for i, p in served.items() if i.spec.name == "Event"), None)
    if isinstance(topics, PathServed):
        from infrakit.rpc.broker import Broker

        broker = Broker(topics)
        broker.wire()
        pages[b"/events"] = broker.page
    return pages


class PluginServer:
    """A running server: created by :meth:`start`, ended by :meth:`close`."""

    def __init__(self, name: str, dispatcher: Dispatcher, claim: SocketClaim,
                 servers: list[HTTPServer], grace: float) -> None:
        self.name = name
        self.dispatcher = dispatcher
        self.claim = claim
        self._servers = servers
        """The UNIX socket's, then the TCP listener's and the metrics port's, if any."""
        self._grace = grace

    @property
    def path(self) -> Path:
        return self.claim.path

    @classmethod
    async def start(
        cls,
        name: str,
        *,
        instance: Plugins | None = None,
        flavor: Plugins | None = None,
        group: Plugins | None = None,
        event: Plugins | None = None,
        metadata: Plugins | None = None,
        directory: Path | None = None,
        limits: Limits | None = None,
        workers: int = DEFAULT_WORKERS,
        grace: float = DEFAULT_GRACE,
        tcp: TcpListener | None = None,
        metrics: tuple[str, int] | None = None,
        web: WebHandler | None = None,
    ) -> PluginServer:
        """Claim the socket and start answering on it (and on ``tcp``, if given, with
        ``web`` answering its paths under ``/ui/``; and ``GET /metrics`` alone, in plain
        HTTP, on the TCP address ``metrics``, if given)."""
        served = _served(instance, flavor, group, event, metadata)
        dispatcher = Dispatcher(served, workers)
        pages = _pages(name, dispatcher, served)
        servers = [HTTPServer(dispatcher.handle, pages, limits)]
        claim = SocketClaim(name, directory or plugin_dir())
        listening: list[socket.socket] = []
        try:
            if tcp is not None:  # refused before anything starts, if it cannot be had
                eventloop.require_tls("a TCP listener")
                tls = tcp.server_context()
                listening.append(tcp.bind())
            if metrics is not None:
                listening.append(bind_tcp(*metrics, "--metrics-listen"))
            await _hook(dispatcher.objects, "start")
            await servers[0].start(claim.bind())
            if tcp is not None:
                servers.append(HTTPServer(dispatcher.handle, pages, limits, tcp.tokens.bearer,
                                          web))
                await servers[-1].start(listening[0], tls)
                log.info("plugin %s listening on %s (TLS, token required: %s)", name,
                         tcp.url(), ", ".join(str(p) for p in tcp.tokens.principals))
            if metrics is not None:
                servers.append(HTTPServer(None, {b"/metrics": metrics_page}, limits))
                await servers[-1].start(listening[-1])
                log.info("plugin %s serving http://%s:%d/metrics", name, *metrics)
        except BaseException:
            for server in servers:
                await server.close(0)
            for sock in listening:
                sock.close()
            claim.release()
            dispatcher.close()
            raise
        log.info("plugin %s listening on %s", name, claim.path)
        return cls(name, dispatcher, claim, servers, grace)

    async def close(self) -> None:
        """Stop accepting, let in-flight calls finish within the grace period, clean up."""
        self.claim.unlink_socket()
        try:
            await asyncio.gather(*(server.close(self._grace) for server in self._servers))
            await _hook(self.dispatcher.objects, "stop")
        finally:
            self.dispatcher.close()
            self.claim.release()
            log.info("plugin %s stopped", self.name)


async def _hook(objects: list[object], name: str) -> None:
    """Await ``start()`` or ``stop()`` of every plugin object that defines it as a coroutine:
    ``start`` runs after the socket is claimed and before the first call is accepted (a
    group plugin resumes its groups there); ``stop`` after the last call has finished."""
    for obj in objects:
        hook = getattr(obj, name, None)
        if inspect.iscoroutinefunction(hook):
            await hook()


async def serve_async(name: str, *, stop: asyncio.Event | None = None, **kwargs: Any) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down cleanly. With
    a TCP listener, SIGHUP reads its tokens file again."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = {signal.SIGINT: stop.set, signal.SIGTERM: stop.set}
    tcp: TcpListener | None = kwargs.get("tcp")
    if tcp is not None:
        handled[signal.SIGHUP] = tcp.tokens.reload
    for sig, handler in handled.items():
        loop.add_signal_handler(sig, handler)
    server = await PluginServer.start(name, **kwargs)
    try:
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await server.close()


def serve(
    name: str,
    *,
    instance: Plugins | None = None,
    flavor: Plugins | None = None,
    group: Plugins | None = None,
    event: Plugins | None = None,
    metadata: Plugins | None = None,
    directory: Path | None = None,
    limits: Limits | None = None,
    workers: int = DEFAULT_WORKERS,
    grace: float = DEFAULT_GRACE,
    tcp: TcpListener | None = None,
    metrics: tuple[str, int] | None = None,
    web: WebHandler | None = None,
) -> None:
    """Serve plugin objects under ``name`` until SIGINT or SIGTERM.

    Each of ``instance``, ``flavor`` and ``group`` is one plugin object or a mapping from type
    name to plugin object (``"."`` is the default type; ``name/ec2`` reaches type ``ec2``).
    Methods may be plain or ``async``; plain ones run in a pool of ``workers`` threads.
    ``limits`` bounds body size, read deadlines and connections; ``grace`` is how long
    in-flight calls may take to finish after SIGINT or SIGTERM. ``tcp`` serves the same
    objects on a TCP port too, with TLS and a bearer token. ``metrics`` (host, port) serves
    ``GET /metrics`` alone on a TCP port, in plain HTTP, for a Prometheus server to scrape
    (the socket serves it too). ``web`` answers the requests under ``/ui/`` of the TCP listener
(the manager's console), which authenticates them itself.

    ``event`` (Event/0.1.0: see :class:`~infrakit.spi.event.EventPlugin`) and ``metadata``
    (Metadata/0.1.0: :class:`~infrakit.spi.metadata.MetadataPlugin`) are one object (the
    base, ``"."``) or a mapping from type name to object, where the first element of a
    topic or path names the type; events stream on ``GET /events?topic=``.
    """
    eventloop.run(serve_async(name, instance=instance, flavor=flavor, group=group,
                              event=event, metadata=metadata,
                              directory=directory, limits=limits, workers=workers, grace=grace,
                              tcp=tcp, metrics=metrics, web=web))
