"""Serve plugin objects as HTTP/1.1 JSON-RPC 2.0 on a UNIX socket.

A plugin author writes the verbs and calls :func:`serve`. The runtime answers the
handshake, routes typed sub-plugins by the ``Type`` field, runs blocking methods in a
bounded thread pool so the event loop never blocks, turns exceptions into JSON-RPC errors,
and owns the socket's life from claim to removal.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import signal
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from infrakit.rpc import jsonrpc
from infrakit.rpc.http import HTTPServer, Limits
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.lifecycle import SocketClaim
from infrakit.rpc.paths import plugin_dir
from infrakit.rpc.tcp import TcpListener
from infrakit.spi.errors import PluginError
from infrakit.spi.flavor import FLAVOR
from infrakit.spi.group import GROUP
from infrakit.spi.handshake import (
    DEFAULT_TYPE,
    ImplementsResult,
    LegacyImplementsResult,
    TypesResult,
)
from infrakit.spi.instance import INSTANCE
from infrakit.spi.methods import Interface, Method, is_nonblocking

log = logging.getLogger("infrakit.rpc")

HANDSHAKE_METHODS = ("Handshake.Implements", "Handshake.Types", "Plugin.Implements")

DEFAULT_GRACE = 10.0
DEFAULT_WORKERS = 16

#: One plugin object, or several keyed by type name (``"."`` or ``""`` is the default type).
Plugins = object | Mapping[str, object]


@dataclass(frozen=True)
class _Bound:
    """One RPC method bound to the plugin object that answers it."""

    method: Method[Any, Any]
    decoder: msgspec.json.Decoder[Any]
    targets: dict[str, Callable[..., Any]]
    """Plugin method per type name; ``""`` is the default type."""
    modes: dict[str, Mode]
    """How each target runs: see :class:`Mode`."""
    fanned: frozenset[str] = frozenset()
    """Types whose target is the one-item method of a batch method: called once per item."""


class Mode(enum.Enum):
    """How a plugin method is run."""

    INLINE = "inline"
    """Marked :func:`~infrakit.spi.methods.nonblocking`: called on the event loop."""
    TASK = "task"
    """``async def``: awaited in a task of its own, so that it sees ``current_task()``."""
    THREAD = "thread"
    """Any other plain method: in the bounded thread pool, so that it cannot block."""


def _mode(fn: Callable[..., Any]) -> Mode:
    if inspect.iscoroutinefunction(fn):
        return Mode.TASK
    return Mode.INLINE if is_nonblocking(fn) else Mode.THREAD


def _by_type(plugins: Plugins) -> dict[str, object]:
    if isinstance(plugins, Mapping):
        return {("" if k in ("", DEFAULT_TYPE) else k): v for k, v in plugins.items()}
    return {"": plugins}


class Dispatcher:
    """Turns a request body into a response body. Knows nothing of sockets or HTTP."""

    def __init__(
        self,
        served: Mapping[Interface, Plugins],
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="plugin")
        self._methods: dict[str, _Bound] = {}
        self.types: dict[str, list[str]] = {}
        for iface, plugins in served.items():
            objs = _by_type(plugins)
            self.types[str(iface.spec)] = sorted(DEFAULT_TYPE if t == "" else t for t in objs)
            for wire, method in iface.methods.items():
                targets, fanned = _targets(method, objs)
                if targets:
                    self._methods[wire] = _Bound(
                        method, msgspec.json.Decoder(method.request), targets,
                        {t: _mode(f) for t, f in targets.items()}, fanned,
                    )
        self.apis = [iface.spec for iface in served]
        self.objects = list({id(o): o for p in served.values() for o in _by_type(p).values()}
                            .values())
        """Every plugin object served, once each: the targets of the lifecycle hooks."""
        self.methods = sorted(self._methods)
        self._handshake: dict[str, Callable[[], msgspec.Struct]] = {
            "Handshake.Implements": lambda: ImplementsResult(apis=self.apis),
            "Handshake.Types": lambda: TypesResult(types=self.types),
            "Plugin.Implements": lambda: LegacyImplementsResult(interfaces=self.apis),
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def handle(self, body: bytes) -> bytes | None:
        """Answer one request body; ``None`` for a notification, which gets no answer."""
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("request: %s", body[:4096].decode(errors="replace"))
        try:
            req = jsonrpc.parse_request(body)
        except RPCError as exc:
            out: bytes | None = jsonrpc.encode_error(exc.data, exc.code, exc.message)
        else:
            out = await self._answer(req)
        if debug:
            log.debug("response: %s", (out or b"")[:4096].decode(errors="replace"))
        return out

    async def _answer(self, req: jsonrpc.Request) -> bytes | None:
        if req.id is msgspec.UNSET:  # a notification: run it, answer nothing
            try:
                await self._call(req)
            except Exception as exc:
                log.warning("notification %s failed: %s", req.method, exc)
            return None
        try:
            return jsonrpc.encode_result(req.id, await self._call(req))
        except RPCError as exc:
            return jsonrpc.encode_error(req.id, exc.code, exc.message, exc.data)
        except Exception as exc:  # a result that cannot be encoded, or a bug of ours
            log.exception("%s: cannot answer", req.method)
            return jsonrpc.encode_error(req.id, jsonrpc.INTERNAL_ERROR,
                                        f"Internal error: {type(exc).__name__}: {exc}")

    async def _call(self, req: jsonrpc.Request) -> Any:
        hand = self._handshake.get(req.method)
        if hand is not None:
            return hand()
        bound = self._methods.get(req.method)
        if bound is None:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {req.method!r}")
        params = jsonrpc.decode_params(bound.decoder, req)
        type_name = getattr(params, "type", "")
        key = "" if type_name in ("", DEFAULT_TYPE) else type_name
        target = bound.targets.get(key)
        if target is None:
            known = ", ".join(repr(t or DEFAULT_TYPE) for t in bound.targets)
            raise RPCError(
                jsonrpc.APPLICATION_ERROR,
                f"Type: no {req.method.split('.')[0]} plugin of type {type_name!r} here"
                f" (types served: {known})",
            )
        mode = bound.modes[key]
        if key in bound.fanned:
            assert bound.method.items is not None  # only batch methods fan out
            items = bound.method.items(params)
            values = await asyncio.gather(*(self._item(req.method, target, mode, a)
                                            for a in items))
            return bound.method.wrap(params, values)
        try:
            value = await self._invoke(target, mode, bound.method.args(params))
            return bound.method.wrap(params, value)
        except Exception as exc:
            raise RPCError(jsonrpc.APPLICATION_ERROR, str(_failure(req.method, exc))) from None

    async def _invoke(self, target: Callable[..., Any], mode: Mode,
                      args: tuple[Any, ...]) -> Any:
        """Call a plugin method the way its mode says."""
        if mode is Mode.INLINE:
            return target(*args)
        loop = asyncio.get_running_loop()
        if mode is Mode.TASK:
            return await loop.create_task(target(*args))
        return await loop.run_in_executor(self._pool, functools.partial(target, *args))

    async def _item(self, batch: str, target: Callable[..., Any], mode: Mode,
                    args: tuple[Any, ...]) -> Any:
        """One item of a batch call made of one-item calls: its value, or its error as a
        :class:`PluginError`, so that one item's failure does not fail the others."""
        try:
            return await self._invoke(target, mode, args)
        except Exception as exc:
            return _failure(batch, exc)


def _failure(method: str, exc: Exception) -> PluginError:
    """A plugin method's exception as the error its caller gets: a :class:`PluginError`
    as it is (its message is for the user), anything else logged and named."""
    if isinstance(exc, PluginError):
        return exc
    log.exception("%s failed", method)
    return PluginError(f"{method} failed: {type(exc).__name__}: {exc}")


def _targets(method: Method[Any, Any],
             objs: dict[str, object]) -> tuple[dict[str, Callable[..., Any]], frozenset[str]]:
    """The plugin method answering ``method`` for each type, and the types where that is
    the one-item method standing in for a batch method the object does not define."""
    targets: dict[str, Callable[..., Any]] = {}
    fanned = set()
    for t, obj in objs.items():
        fn = getattr(obj, method.attr, None)
        single = method.single.attr if method.single else ""
        one = getattr(obj, single, None) if single else None
        if callable(fn) and not (callable(one) and _overrides(obj, single, method.attr)):
            targets[t] = fn
        elif callable(one):
            targets[t] = one
            fanned.add(t)
    return targets, frozenset(fanned)


def _overrides(obj: object, single: str, batch: str) -> bool:
    """Whether ``obj``'s class redefines the one-item method below the class that defines
    the batch method: a subclass that overrides ``healthy`` of a flavor whose base class
    has ``healthy_each`` means its own ``healthy`` to answer every item."""
    mro = type(obj).__mro__
    where = {name: next((i for i, c in enumerate(mro) if name in vars(c)), len(mro))
             for name in (single, batch)}
    return where[single] < where[batch]


def _served(instance: Plugins | None, flavor: Plugins | None,
            group: Plugins | None) -> dict[Interface, Plugins]:
    served = {iface: p for iface, p in ((INSTANCE, instance), (FLAVOR, flavor), (GROUP, group))
              if p is not None}
    if not served:
        raise ValueError("serve() needs at least one of instance=, flavor= or group=")
    return served


class PluginServer:
    """A running server: created by :meth:`start`, ended by :meth:`close`."""

    def __init__(self, name: str, dispatcher: Dispatcher, claim: SocketClaim,
                 servers: list[HTTPServer], grace: float) -> None:
        self.name = name
        self.dispatcher = dispatcher
        self.claim = claim
        self._servers = servers
        """The UNIX socket's, then the TCP listener's if there is one."""
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
        directory: Path | None = None,
        limits: Limits | None = None,
        workers: int = DEFAULT_WORKERS,
        grace: float = DEFAULT_GRACE,
        tcp: TcpListener | None = None,
    ) -> PluginServer:
        """Claim the socket and start answering on it (and on ``tcp``, if given)."""
        dispatcher = Dispatcher(_served(instance, flavor, group), workers)
        info = msgspec.json.encode(
            {"Name": name, "Implements": dispatcher.apis, "Types": dispatcher.types,
             "Methods": sorted([*dispatcher.methods, *HANDSHAKE_METHODS])})
        servers = [HTTPServer(dispatcher.handle, lambda: info, limits)]
        claim = SocketClaim(name, directory or plugin_dir())
        listening = None
        try:
            if tcp is not None:  # refused before anything starts, if it cannot be had
                tls, listening = tcp.server_context(), tcp.bind()
            await _hook(dispatcher.objects, "start")
            await servers[0].start(claim.bind())
            if tcp is not None and listening is not None:
                servers.append(HTTPServer(dispatcher.handle, lambda: info, limits, tcp.token))
                await servers[1].start(listening, tls)
                log.info("plugin %s listening on %s (TLS, token required)", name, tcp.url())
        except BaseException:
            for server in servers:
                await server.close(0)
            if listening is not None:
                listening.close()
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
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await PluginServer.start(name, **kwargs)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()


def serve(
    name: str,
    *,
    instance: Plugins | None = None,
    flavor: Plugins | None = None,
    group: Plugins | None = None,
    directory: Path | None = None,
    limits: Limits | None = None,
    workers: int = DEFAULT_WORKERS,
    grace: float = DEFAULT_GRACE,
    tcp: TcpListener | None = None,
) -> None:
    """Serve plugin objects under ``name`` until SIGINT or SIGTERM.

    Each of ``instance``, ``flavor`` and ``group`` is one plugin object or a mapping from type
    name to plugin object (``"."`` is the default type; ``name/ec2`` reaches type ``ec2``).
    Methods may be plain or ``async``; plain ones run in a pool of ``workers`` threads.
    ``limits`` bounds body size, read deadlines and connections; ``grace`` is how long
    in-flight calls may take to finish after SIGINT or SIGTERM. ``tcp`` serves the same
    objects on a TCP port too, with TLS and a bearer token.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        run = asyncio.run
    else:
        run = uvloop.run
    run(serve_async(name, instance=instance, flavor=flavor, group=group, directory=directory,
                    limits=limits, workers=workers, grace=grace, tcp=tcp))
