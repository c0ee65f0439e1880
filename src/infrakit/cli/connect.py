"""Opening a client to a named plugin for one command, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from infrakit.cli.main import trace_hook
from infrakit.rpc.client import PluginUnreachable, Remote, RPCClient
from infrakit.rpc.discovery import PluginNotRunning, locate, running_names
from infrakit.rpc.paths import PluginPathError
from infrakit.spi.errors import PluginError, Unreachable


@contextmanager
def plugin_client(name: str, timeout: float, remote: Remote | None = None
                  ) -> Iterator[tuple[RPCClient, str]]:
    """A client of plugin ``name[/type]`` and its type, or of the manager at ``remote``;
    closes it afterwards."""
    if remote is not None:
        rpc = RPCClient(remote.url, timeout, trace_hook(), remote)
        try:
            yield rpc, ""
        except (PluginUnreachable, Unreachable) as exc:
            raise click.ClickException(f"the manager at {remote.url} is not answering: "
                                       f"{exc.reason}") from None
        finally:
            rpc.close()
        return
    try:
        path, type_name = locate(name)
    except (PluginNotRunning, PluginPathError) as exc:
        raise click.ClickException(str(exc)) from None
    rpc = RPCClient(path, timeout, trace_hook())
    try:
        yield rpc, type_name
    except (PluginUnreachable, Unreachable) as exc:
        running = ", ".join(n for n in running_names() if n != name) or "none"
        raise click.ClickException(
            f"plugin {name!r} is not answering at {path}: {exc.reason} (running: {running})"
        ) from None
    finally:
        rpc.close()


def remote_options() -> list[click.Option]:
    """``--url`` and what a call to a manager's TCP listener needs."""
    return [
        click.Option(["--url"], default="", envvar="INFRAKIT_MANAGER_URL",
                     metavar="https://HOST:PORT/",
                     help="Talk to the manager listening there (see `infrakit manager "
                          "--listen`) instead of a local plugin socket."),
        click.Option(["--token-file"], default="", envvar="INFRAKIT_MANAGER_TOKEN_FILE",
                     metavar="FILE", help="With --url: the managers' bearer token."),
        click.Option(["--tls-ca"], default="", envvar="INFRAKIT_TLS_CA", metavar="FILE",
                     help="With --url: the certificate (or CA) to trust."),
    ]


def remote_of(url: str, token_file: str, tls_ca: str) -> Remote | None:
    """The :class:`Remote` these options describe, or None without ``url``."""
    if not url:
        return None
    from infrakit.rpc.tcp import remote

    try:
        return remote(url, token_file, tls_ca)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


def timeout_option(calls_plugins: bool = False) -> click.Option:
    """``--timeout``; for a plugin that calls other plugins (``calls_plugins``), the
    default outlasts its own calls, so that a plugin that hangs is named by the answer."""
    if not calls_plugins:
        return click.Option(["--timeout"], type=click.FloatRange(min=0.1), default=30.0,
                            show_default=True, envvar="INFRAKIT_TIMEOUT",
                            help="Seconds to wait for the plugin's answer to each call.")
    from infrakit.settings import waiting_timeout

    return click.Option(["--timeout"], type=click.FloatRange(min=0.1), default=waiting_timeout,
                        show_default="twice INFRAKIT_CALL_TIMEOUT (60) + 15",
                        envvar="INFRAKIT_TIMEOUT",
                        help="Seconds to wait for the answer to each call: longer than the "
                        "group's own calls to its plugins, so that one that hangs is named.")
