"""Calls a manager passes on to another: a follower to the leader, or a manager sharing
groups to the one that leads the group a call is about. It reaches the other manager on
its socket when both run on one machine, else on its TCP listener (TLS, and the managers'
token), and keeps each connection alive for the next call."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infrakit.manager.leader_info import LeaderInfo
from infrakit.rpc.client import AsyncRPCClient, Remote
from infrakit.rpc.typed import AsyncGroupClient
from infrakit.spi.errors import CallFailed, PluginError, Unreachable


def who(manager: LeaderInfo, role: str = "the leader") -> str:
    return f"{role} (pid {manager.pid} on {manager.host})"


class Forwarder:
    """Connections to other managers, one per manager, and the calls made on them."""

    def __init__(self, remote: Callable[[str], Remote | None]) -> None:
        """``remote`` says how to reach another manager's TCP listener, if this one may."""
        self.remote = remote
        self._clients: dict[str, AsyncRPCClient] = {}

    async def call(self, to: LeaderInfo, attr: str, args: tuple[Any, ...],
                   role: str = "the leader") -> Any:
        """``attr`` of Group/0.1.0 (or our extensions) on manager ``to``; its own error
        is relayed as it gave it."""
        name = who(to, role)
        key = to.address if to.address and to.host == socket.gethostname() else to.url
        rpc = self._clients.get(key)
        if rpc is None:
            rpc = self._clients[key] = self._connect(to, name)
        try:
            return await getattr(AsyncGroupClient(rpc, name=name), attr)(*args)
        except CallFailed as exc:  # the other manager's own answer
            raise PluginError(exc.reason) from None
        except Unreachable as exc:
            raise PluginError(f"{name} did not answer: {exc.reason}") from None

    async def keep_only(self, managers: list[LeaderInfo]) -> None:
        """Close the connections to every manager but ``managers`` (those that are gone)."""
        keep = {m.address for m in managers} | {m.url for m in managers}
        for key in [k for k in self._clients if k not in keep]:
            await self._clients.pop(key).close()

    async def close(self) -> None:
        await self.keep_only([])

    def _connect(self, to: LeaderInfo, name: str) -> AsyncRPCClient:
        if to.address and to.host == socket.gethostname():
            return AsyncRPCClient(Path(to.address), forwards=True)
        if not to.url:
            raise PluginError(f"{name} runs on another machine and has no TCP listener; "
                              "start managers with --listen to forward between machines")
        remote = self.remote(to.url)
        if remote is None:
            raise PluginError(f"{name} listens on {to.url}, but this manager has no "
                              "--tls-cert/--tls-ca and --token-file to call it with")
        return AsyncRPCClient(to.url, remote=remote, forwards=True)
