"""Typed clients, made from the method tables: every verb of an interface, blocking and
``async``, so that the two can never lack a verb or drift apart.

``InstanceClient(RPCClient(path), "ec2")`` can be handed to anything that expects an
instance plugin, so code cannot tell a remote plugin from a local one. Transport errors stop
here: a call raises :class:`~infrakit.spi.errors.CallFailed` when the plugin answered with
an error and :class:`~infrakit.spi.errors.Unreachable` when it did not answer, each naming
the plugin; an item of a batch verb carries the same errors as its value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from infrakit.rpc.client import AsyncRPCClient, PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.spi.calls import (
    AsyncFlavorAPI,
    AsyncGroupAPI,
    AsyncInstanceAPI,
    FlavorAPI,
    GroupAPI,
    InstanceAPI,
)
from infrakit.spi.errors import CallFailed, PluginError, Unreachable, Unsupported
from infrakit.spi.flavor import FLAVOR
from infrakit.spi.group import GROUP
from infrakit.spi.instance import INSTANCE
from infrakit.spi.methods import Interface, Method

R = TypeVar("R", contravariant=True)
C = TypeVar("C", covariant=True)


class ClientFactory(Protocol, Generic[R, C]):
    """A typed client's constructor: the connection, the plugin's type (``""`` for its
    default), and the name its errors give it (by default its socket's)."""

    def __call__(self, rpc: R, type_name: str = "", name: str = "") -> C: ...


class _Client:
    """What every typed client holds: the connection, the type, and whom errors name."""

    kind = ""
    """The interface's name, as errors say it: ``Instance``, ``Flavor``, ``Group``."""

    def __init__(self, rpc: RPCClient | AsyncRPCClient, type_name: str = "",
                 name: str = "") -> None:
        self.rpc, self.type = rpc, type_name
        where = getattr(rpc.path, "name", None) or str(rpc.path)
        self.name = name or (f"{where}/{type_name}" if type_name else where)

    def _fault(self, exc: Exception) -> Exception:
        """A transport error as the SPI's error that names this plugin; other values
        (an item's answer) as they are."""
        if isinstance(exc, RPCError) and exc.method_not_found:
            return Unsupported(self.name, self.kind, exc.message, exc.code)
        if isinstance(exc, RPCError):
            return CallFailed(self.name, self.kind, exc.message, exc.code)
        if isinstance(exc, PluginUnreachable):
            return Unreachable(self.name, self.kind, exc.reason)
        if isinstance(exc, PluginError) and not isinstance(exc, CallFailed | Unreachable):
            return CallFailed(self.name, self.kind, str(exc))  # a batch item's error
        return exc

    def _items(self, answers: list[Any]) -> list[Any]:
        return [self._fault(a) if isinstance(a, Exception) else a for a in answers]

    def _type(self, method: Method[Any, Any]) -> str | None:
        """The ``Type`` of a request, for the interfaces whose requests carry one."""
        return self.type if method.request.__struct_fields__[:1] == ("type",) else None


def _sync_verb(method: Method[Any, Any], batch: bool) -> Callable[..., Any]:
    def verb(self: _Client, *args: Any) -> Any:
        rpc, type_name = cast(RPCClient, self.rpc), self._type(method)
        try:
            if batch:
                return self._items(rpc.call_each(method, type_name, *args))
            return rpc.call(method, type_name, *args)
        except (RPCError, PluginUnreachable) as exc:
            raise self._fault(exc) from None

    return verb


def _async_verb(method: Method[Any, Any], batch: bool) -> Callable[..., Any]:
    async def verb(self: _Client, *args: Any) -> Any:
        rpc, type_name = cast(AsyncRPCClient, self.rpc), self._type(method)
        try:
            if batch:
                return self._items(await rpc.call_each(method, type_name, *args))
            return await rpc.call(method, type_name, *args)
        except (RPCError, PluginUnreachable) as exc:
            raise self._fault(exc) from None

    return verb


def _client_class(name: str, interface: Interface, make: Callable[..., Callable[..., Any]],
                  doc: str) -> type[_Client]:
    """A client class with one verb per method of ``interface``."""
    verbs: dict[str, Any] = {m.attr: make(m, m.single is not None)
                             for m in interface.methods.values()}
    for attr, verb in verbs.items():
        verb.__name__ = verb.__qualname__ = attr
    return type(name, (_Client,), {**verbs, "kind": interface.spec.name, "__doc__": doc,
                                   "__module__": __name__})


InstanceClient = cast(ClientFactory[RPCClient, InstanceAPI], _client_class(
    "InstanceClient", INSTANCE, _sync_verb, "A remote Instance/0.5.0 plugin."))
FlavorClient = cast(ClientFactory[RPCClient, FlavorAPI], _client_class(
    "FlavorClient", FLAVOR, _sync_verb, "A remote Flavor/0.1.0 plugin."))
GroupClient = cast(ClientFactory[RPCClient, GroupAPI], _client_class(
    "GroupClient", GROUP, _sync_verb, "A remote Group/0.1.0 plugin."))
AsyncInstanceClient = cast(ClientFactory[AsyncRPCClient, AsyncInstanceAPI], _client_class(
    "AsyncInstanceClient", INSTANCE, _async_verb,
    "A remote Instance/0.5.0 plugin, for asyncio code."))
AsyncFlavorClient = cast(ClientFactory[AsyncRPCClient, AsyncFlavorAPI], _client_class(
    "AsyncFlavorClient", FLAVOR, _async_verb, "A remote Flavor/0.1.0 plugin, for asyncio code."))
AsyncGroupClient = cast(ClientFactory[AsyncRPCClient, AsyncGroupAPI], _client_class(
    "AsyncGroupClient", GROUP, _async_verb, "A remote Group/0.1.0 plugin, for asyncio code."))
