"""Finding plugins: list the sockets in the plugin directory and ask each what it is."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.lifecycle import read_pid
from infrakit.rpc.paths import (
    check_plugin_socket,
    check_private_dir,
    plugin_dir,
    socket_path,
    split_name,
)
from infrakit.spi.handshake import ImplementsResult, TypesResult
from infrakit.spi.types import InterfaceSpec

PROBE_TIMEOUT = 2.0


class PluginNotRunning(LookupError):
    """No live plugin answers under the name; the message lists those that do."""

    def __init__(self, name: str, running: list[str]) -> None:
        known = ", ".join(running) if running else "none"
        super().__init__(f"no plugin named {name!r} is running (running: {known})")
        self.name = name
        self.running = running


@dataclass
class PluginInfo:
    """What one socket in the plugin directory is."""

    name: str
    path: Path
    pid: int | None
    state: str
    """``running``, ``stale`` (nothing listens), or ``unresponsive`` (no answer in time)."""
    apis: list[InterfaceSpec] = field(default_factory=list)
    types: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""


def _sockets(directory: Path) -> list[Path]:
    """The sockets of ``directory``; refuses a directory another user controls."""
    try:
        check_private_dir(directory, "plugin directory", trust_root=True)
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)]


def probe(path: Path, timeout: float = PROBE_TIMEOUT) -> PluginInfo:
    """Handshake with one socket; never raises for a dead or odd plugin."""
    info = PluginInfo(name=path.name, path=path, pid=read_pid(path), state="running")
    with RPCClient(path, timeout) as rpc:
        try:
            info.apis = rpc.call_raw("Handshake.Implements", {}, ImplementsResult).apis
        except PluginUnreachable as exc:
            info.state = "unresponsive" if "no answer" in exc.reason else "stale"
            info.error = exc.reason
            return info
        except RPCError as exc:
            info.error = exc.message
            return info
        # plugins before InfraKit 0.5 do not answer Handshake.Types
        with contextlib.suppress(PluginUnreachable, RPCError):
            info.types = rpc.call_raw("Handshake.Types", {}, TypesResult).types
    return info


def list_plugins(directory: Path | None = None, timeout: float = PROBE_TIMEOUT) -> list[PluginInfo]:
    """Every socket in the plugin directory, probed, sorted by name."""
    return [probe(p, timeout) for p in _sockets(directory or plugin_dir())]


def running_names(directory: Path | None = None) -> list[str]:
    """Names of the plugins that answer."""
    return [i.name for i in list_plugins(directory) if i.state == "running"]


def socket_of(full_name: str, directory: Path | None = None) -> tuple[Path, str] | None:
    """The socket and type of ``name[/type]`` if a socket file is there; probes nothing, so
    it is safe to call from a server's event loop. Refuses (:class:`UntrustedPath`) a
    socket that another user owns or could have planted."""
    name, type_name = split_name(full_name)
    path = socket_path(name, directory)
    check_plugin_socket(path)
    try:
        return (path, type_name) if stat.S_ISSOCK(os.stat(path).st_mode) else None
    except FileNotFoundError:
        return None


def locate(full_name: str, directory: Path | None = None) -> tuple[Path, str]:
    """The socket and type of ``name[/type]``, or :class:`PluginNotRunning` listing the
    plugins that answer (which probes each one: for the CLI, not for servers)."""
    found = socket_of(full_name, directory)
    if found is None:
        raise PluginNotRunning(full_name, running_names(directory))
    return found
