"""The declarative table that ties a JSON-RPC method to a plugin method.

One ``Method`` says everything both ends need: the wire name, the request and result
structs, which Python method of the plugin object answers it, how the request becomes that
method's arguments, and how its return value becomes the result. The server and the
clients both read these tables, so the two ends can never disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import msgspec

from infrakit.spi.access import Role
from infrakit.spi.types import InterfaceSpec

Req = TypeVar("Req", bound=msgspec.Struct)
Res = TypeVar("Res", bound=msgspec.Struct)
T = TypeVar("T")

#: A plugin method may be a plain function or a coroutine function.
MaybeAwaitable: TypeAlias = T | Awaitable[T]


@dataclass(frozen=True)
class Method(Generic[Req, Res]):
    """One RPC method of one interface."""

    wire: str
    request: type[Req]
    result: type[Res]
    attr: str
    args: Callable[[Req], tuple[Any, ...]]
    """The plugin method's arguments, taken from a decoded request (server side)."""
    wrap: Callable[[Req, Any], Res]
    """The result struct, from the request and what the plugin method returned."""
    unwrap: Callable[[Res], Any]
    """What a client returns to its caller, taken from the result struct."""
    role: Role = Role.VIEWER
    """The least role a caller over TCP needs to call it (:func:`infrakit.spi.access.authorize`):
    every method that changes something says which."""
    single: Method[Any, Any] | None = None
    """A batch method: the one-item method it stands for. A plugin object
    without ``attr`` gets the batch method anyway: the runtime calls the one-item method
    once per item, concurrently, and an item's error answers that item, not the call."""
    items: Callable[[Req], list[tuple[Any, ...]]] | None = None
    """A batch method: the one-item method's arguments, for each item of a request (in the
    order of its request's fields, so that a client can also ``build`` them)."""
    pack: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    """A client's arguments as the request's fields, where the two differ (the inverse of
    ``args``)."""
    lift: Callable[[Any], Any] | None = None
    """A batch method whose items differ from the one-item method's answers: an item as
    the batch method gives it, from the one-item method's answer (for a client that falls
    back to one-item calls)."""

    def lifted(self, answers: list[Any]) -> list[Any]:
        """One-item answers as this batch method's items; errors as they are."""
        lift = self.lift
        if lift is None:
            return answers
        return [a if isinstance(a, BaseException) else lift(a) for a in answers]

    def build(self, type_name: str | None, args: tuple[Any, ...]) -> Req:
        """The request for a client call: ``args`` fill the fields after ``Type``, in order."""
        if self.pack is not None:
            args = self.pack(args)
        names = _field_names(self.request)
        if type_name is not None:
            return self.request(type=type_name, **dict(zip(names[1:], args, strict=True)))
        return self.request(**dict(zip(names, args, strict=True)))


@dataclass(frozen=True, eq=False)
class Interface:
    """An interface, its version and its methods, keyed by wire name."""

    spec: InterfaceSpec
    methods: dict[str, Method[Any, Any]]


@functools.cache
def _field_names(struct: type[msgspec.Struct]) -> list[str]:
    import msgspec.structs  # loaded on first use: `plugin ls` never needs it

    return [f.name for f in msgspec.structs.fields(struct)]


F = TypeVar("F", bound=Callable[..., Any])


def nonblocking(fn: F) -> F:
    """Mark a plain plugin method that never blocks (it only reads memory), so that the
    runtime calls it on the event loop instead of handing it to a thread."""
    fn.__infrakit_nonblocking__ = True  # type: ignore[attr-defined]
    return fn


def is_nonblocking(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "__infrakit_nonblocking__", False))


def nothing(_: Any) -> None:
    """``unwrap`` of a method whose result says only that it worked."""
    return None


def failure(value: object) -> str | None:
    """The error message of one item of a batch, or None when the item succeeded."""
    if isinstance(value, BaseException):
        return getattr(value, "message", None) or str(value)
    return None


def outcomes(values: list[Any], make: Callable[..., T],
             ok: Callable[[Any], dict[str, Any]]) -> list[T]:
    """The per-item results of a batch: ``make(**ok(value))`` for a value, and
    ``make(error=...)`` for an exception."""
    out = []
    for value in values:
        error = failure(value)
        out.append(make(error=error) if error is not None else make(**ok(value)))
    return out


def interface(spec: InterfaceSpec, *methods: Method[Any, Any]) -> Interface:
    """Build an :class:`Interface` from its methods."""
    return Interface(spec=spec, methods={m.wire: m for m in methods})
