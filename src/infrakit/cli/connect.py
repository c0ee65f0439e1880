"""Opening a client to a named plugin for one command, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from infrakit.cli.main import trace_hook
from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.discovery import PluginNotRunning, locate, running_names
from infrakit.rpc.paths import PluginPathError


@contextmanager
def plugin_client(name: str, timeout: float) -> Iterator[tuple[RPCClient, str]]:
    """A client of plugin ``name[/type]`` and its type; closes it afterwards."""
    try:
        path, type_name = locate(name)
    except (PluginNotRunning, PluginPathError) as exc:
        raise click.ClickException(str(exc)) from None
    rpc = RPCClient(path, timeout, trace_hook())
    try:
        yield rpc, type_name
    except PluginUnreachable as exc:
        running = ", ".join(n for n in running_names() if n != name) or "none"
        raise click.ClickException(
            f"plugin {name!r} is not answering at {path}: {exc.reason} (running: {running})"
        ) from None
    finally:
        rpc.close()


def timeout_option() -> click.Option:
    return click.Option(["--timeout"], type=click.FloatRange(min=0.1), default=30.0,
                        show_default=True, envvar="INFRAKIT_TIMEOUT",
                        help="Seconds to wait for the plugin's answer to each call.")
