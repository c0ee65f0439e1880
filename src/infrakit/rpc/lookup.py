"""The plugin lookup of a process that calls other plugins over their sockets (the group
plugin calls instance and flavor plugins, the combo flavor the flavors it composes)."""

from __future__ import annotations

from infrakit.rpc.client import DEFAULT_CONNECTIONS, AsyncRPCClient, load_async_client
from infrakit.rpc.discovery import socket_of
from infrakit.rpc.paths import PluginPathError
from infrakit.rpc.typed import AsyncFlavorClient, AsyncInstanceClient
from infrakit.settings import CALL_TIMEOUT
from infrakit.spi.calls import AsyncFlavorAPI, AsyncInstanceAPI
from infrakit.spi.errors import PluginError


class SocketPlugins:
    """A :class:`~infrakit.spi.calls.PluginLookup` over the plugin directory: one
    keep-alive connection per plugin socket, opened on first use. A call waits
    ``timeout`` seconds for its answer (by default ``INFRAKIT_CALL_TIMEOUT``); at most
    ``connections`` calls to one plugin are in flight at once, the others wait their turn
    (0: no cap, for a caller whose calls may call back into it, as a combo's may)."""

    def __init__(self, timeout: float | None = None,
                 connections: int = DEFAULT_CONNECTIONS) -> None:
        self._timeout = CALL_TIMEOUT.read() if timeout is None else timeout
        self._connections = connections
        self._rpcs: dict[str, AsyncRPCClient] = {}
        load_async_client()  # as the process starts, not in its first call

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
            rpc = self._rpcs[str(path)] = AsyncRPCClient(path, self._timeout,
                                                         connections=self._connections)
        return rpc, type_name

    def instance(self, name: str) -> AsyncInstanceAPI:
        return AsyncInstanceClient(*self._rpc(name), name=name)

    def flavor(self, name: str) -> AsyncFlavorAPI:
        return AsyncFlavorClient(*self._rpc(name), name=name)

    async def close(self) -> None:
        for rpc in self._rpcs.values():
            await rpc.close()
        self._rpcs.clear()
