"""Turn a JSON-RPC request body into its answer by calling the plugin object that serves it.

The dispatcher holds the method tables (which plugin method answers which RPC method, for
which type), decides how each method runs (on the event loop, in a task, in the thread
pool), fans batch calls out over one-item methods, and maps exceptions to JSON-RPC errors.
It knows nothing of sockets, HTTP or the server's lifecycle: :mod:`infrakit.rpc.server`
owns those.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from infrakit.rpc import jsonrpc
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.metrics import STATS, UNKNOWN_METHOD
from infrakit.spi.access import authorize, current_actor
from infrakit.spi.errors import Forbidden, PluginError
from infrakit.spi.handshake import (
    DEFAULT_TYPE,
    ImplementsResult,
    LegacyImplementsResult,
    TypesResult,
)
from infrakit.spi.methods import Interface, Method, is_nonblocking
from infrakit.spi.tree import PathServed
from infrakit.spi.types import mebibytes

log = logging.getLogger("infrakit.rpc")

HANDSHAKE_METHODS = ("Handshake.Implements", "Handshake.Types", "Plugin.Implements")

DEFAULT_WORKERS = 16

MAX_ITEMS = 10_000
"""Items one call of a batch method may carry (the group sends at most 500 a call)."""
MAX_ANSWER = 64 * 1024 * 1024
"""Bytes the answer to one call of a batch method may come to."""
COPIED_TO_EACH = frozenset({"Flavor.PrepareEach"})
"""Batch methods whose answer to each item may hold a copy of the parameters the items
share: a flavor copies the Init and Tags of its Properties into every spec it prepares.
(A health verdict or an instance ID holds none of them.)"""

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


def _objects(plugins: Plugins) -> list[object]:
    """The plugin objects given, those behind a :class:`PathServed` too."""
    if isinstance(plugins, PathServed):
        return plugins.objects
    return list(_by_type(plugins).values())


def _by_type(plugins: Plugins) -> dict[str, object]:
    if isinstance(plugins, PathServed):  # routes by path, not by Type: served as one
        return {"": plugins}
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
            self.types[str(iface.spec)] = plugins.types if isinstance(plugins, PathServed) \
                else sorted(DEFAULT_TYPE if t == "" else t for t in objs)
            for wire, method in iface.methods.items():
                targets, fanned = _targets(method, objs)
                if targets:
                    self._methods[wire] = _Bound(
                        method, msgspec.json.Decoder(method.request), targets,
                        {t: _mode(f) for t, f in targets.items()}, fanned,
                    )
        self.apis = [iface.spec for iface in served]
        self._served = {iface.spec.name for iface in served} | {"Handshake"}
        self.objects = list({id(o): o for p in served.values() for o in _objects(p)}.values())
        """Every plugin object served, once each: the targets of the lifecycle hooks."""
        self.methods = sorted(self._methods)
        self._known = frozenset((*self._methods, *HANDSHAKE_METHODS))
        """The methods counted by name in the metrics; any other is counted as unknown."""
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
        started = time.perf_counter()
        try:
            req = jsonrpc.parse_request(body)
        except RPCError as exc:
            out: bytes | None = jsonrpc.encode_error(exc.data, exc.code, exc.message)
            STATS.answer(UNKNOWN_METHOD, False, time.perf_counter() - started)
        else:
            out, ok = await self._answer(req)
            STATS.answer(req.method if req.method in self._known else UNKNOWN_METHOD, ok,
                          time.perf_counter() - started)
        if debug:
            log.debug("response: %s", (out or b"")[:4096].decode(errors="replace"))
        return out

    async def _answer(self, req: jsonrpc.Request) -> tuple[bytes | None, bool]:
        """The answer, and whether it is a result (not an error)."""
        if req.id is msgspec.UNSET:  # a notification: run it, answer nothing
            try:
                await self._call(req)
            except Exception as exc:
                log.warning("notification %s failed: %s", req.method, exc)
                return None, False
            return None, True
        try:
            out = jsonrpc.encode_result(req.id, await self._call(req))
        except RPCError as exc:
            return jsonrpc.encode_error(req.id, exc.code, exc.message, exc.data), False
        except Exception as exc:  # a result that cannot be encoded, or a bug of ours
            log.exception("%s: cannot answer", req.method)
            return jsonrpc.encode_error(req.id, jsonrpc.INTERNAL_ERROR,
                                        f"Internal error: {type(exc).__name__}: {exc}"), False
        bound = self._methods.get(req.method)
        if len(out) > MAX_ANSWER and bound is not None and bound.method.items is not None:
            return jsonrpc.encode_error(
                req.id, jsonrpc.INVALID_PARAMS, f"{req.method}: the answer would be "
                f"{mebibytes(len(out))}, over the limit of {mebibytes(MAX_ANSWER)}: send fewer "
                "items per call"), False
        return out, True

    async def _call(self, req: jsonrpc.Request) -> Any:
        hand = self._handshake.get(req.method)
        if hand is not None:
            return hand()
        bound = self._methods.get(req.method)
        if bound is None:  # in the reference's words, with the standard code
            what = "method" if req.method.split(".")[0] in self._served else "service"
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f'rpc: can\'t find {what} "{req.method}"')
        principal = current_actor()
        if principal is not None:
            try:
                authorize(principal, bound.method)
            except Forbidden as exc:
                raise RPCError(Forbidden.code, str(exc)) from None
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
        items = _batch(bound.method, params) if bound.method.items is not None else []
        if key in bound.fanned:  # only batch methods fan out
            values = await asyncio.gather(*(self._item(req.method, target, mode, a)
                                            for a in items))
            return bound.method.wrap(params, values)
        try:
            value = await self._invoke(target, mode, bound.method.args(params))
            return bound.method.wrap(params, value)
        except Exception as exc:
            code = Forbidden.code if isinstance(exc, Forbidden) else jsonrpc.APPLICATION_ERROR
            raise RPCError(code, str(_failure(req.method, exc))) from None

    async def _invoke(self, target: Callable[..., Any], mode: Mode,
                      args: tuple[Any, ...]) -> Any:
        """Call a plugin method the way its mode says."""
        if mode is Mode.INLINE:
            return target(*args)
        loop = asyncio.get_running_loop()
        if mode is Mode.TASK:
            return await loop.create_task(target(*args))
        # in a copy of the caller's context: the thread runs as the call's caller too
        return await loop.run_in_executor(self._pool, functools.partial(
            contextvars.copy_context().run, target, *args))

    async def _item(self, batch: str, target: Callable[..., Any], mode: Mode,
                    args: tuple[Any, ...]) -> Any:
        """One item of a batch call made of one-item calls: its value, or its error as a
        :class:`PluginError`, so that one item's failure does not fail the others."""
        try:
            return await self._invoke(target, mode, args)
        except Exception as exc:
            return _failure(batch, exc)


def _batch(method: Method[Any, Any], params: msgspec.Struct) -> list[tuple[Any, ...]]:
    """The items of a batch call: each one's arguments for the one-item method. Refused
    (-32602, naming the limit) past :data:`MAX_ITEMS`; and, for a method of
    :data:`COPIED_TO_EACH`, when the parameters the items share, copied into each answer,
    would come to more than :data:`MAX_ANSWER` (124 KB of ``Flavor.PrepareEach`` once made
    an answer of 200 MB)."""
    assert method.items is not None
    # the items are the last field that is a list (``Properties`` may be one too)
    field, count = next(((wire, len(value)) for name, wire in reversed(list(zip(
        params.__struct_fields__, params.__struct_encode_fields__, strict=True)))
        if isinstance(value := getattr(params, name), list)), ("Items", 0))
    if count > MAX_ITEMS:  # before a tuple is made for each
        raise RPCError(jsonrpc.INVALID_PARAMS,
                       f"Invalid params: `params.{field}` has {count} items, more than "
                       f"the {MAX_ITEMS} a call may carry: send them in several calls")
    items = method.items(params)
    if not items or method.wire not in COPIED_TO_EACH:
        return items
    first, rest = items[0], items[1:]
    shared = sum(len(msgspec.json.encode(arg)) for k, arg in enumerate(first)
                 if all(item[k] is arg for item in rest))
    if shared * len(items) > MAX_ANSWER:
        raise RPCError(jsonrpc.INVALID_PARAMS,
                       f"Invalid params: `params.{field}` has {len(items)} items, each handed "
                       f"the same {mebibytes(shared)} of other parameters, which could make "
                       f"an answer of {mebibytes(shared * len(items))}, over the limit of "
                       f"{mebibytes(MAX_ANSWER)}: send fewer items per call")
    return items


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
