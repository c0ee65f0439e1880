"""Connections from a plugin to the other plugins it calls (the group plugin to instance
and flavor plugins, the combo flavor to the flavors it composes)."""

from __future__ import annotations

from infrakit.rpc.client import AsyncRPCClient, PluginUnreachable
from infrakit.rpc.discovery import socket_of
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.paths import PluginPathError
from infrakit.rpc.typed import AsyncFlavorClient, AsyncInstanceClient
from infrakit.spi.errors import PluginError

CALL_TIMEOUT = 60.0


class PluginClients:
    """One keep-alive client per plugin socket, opened on first use."""

    def __init__(self, timeout: float = CALL_TIMEOUT) -> None:
        self._timeout = timeout
        self._rpcs: dict[str, AsyncRPCClient] = {}

    def _rpc(self, full_name: str) -> tuple[AsyncRPCClient, str]:
        try:
            found = socket_of(full_name)
        except PluginPathError as exc:
            raise PluginError(str(exc)) from None
        if found is None:
            raise PluginError(f"no plugin named {full_name!r} is running")
        path, type_name = found
        rpc = self._rpcs.get(str(path))
        if rpc is None:
            rpc = self._rpcs[str(path)] = AsyncRPCClient(path, self._timeout)
        return rpc, type_name

    def instance(self, name: str) -> AsyncInstanceClient:
        return AsyncInstanceClient(*self._rpc(name))

    def flavor(self, name: str) -> AsyncFlavorClient:
        return AsyncFlavorClient(*self._rpc(name))

    async def close(self) -> None:
        for rpc in self._rpcs.values():
            await rpc.close()
        self._rpcs.clear()


def explain(kind: str, name: str, exc: Exception) -> PluginError:
    """A fault of a plugin the group calls, as a message that names that plugin."""
    if isinstance(exc, RPCError):
        return PluginError(f"{kind} plugin {name!r}: {exc.message}")
    if isinstance(exc, PluginUnreachable):
        return PluginError(f"{kind} plugin {name!r} is not reachable: {exc.reason}")
    return PluginError(f"{kind} plugin {name!r}: {exc}")
