"""The ``infrakit`` command: the root group, logging, and turning errors into messages.

Only what ``plugin ls`` and the instance verbs need is imported at start-up; everything
heavier is imported by the command that uses it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import ClassVar

import click

from infrakit import __version__
from infrakit.rpc.logs import configure_logging

DEFAULT_LOG = 4
TRACE_LOG = 5

_state = {"debug": False, "log": DEFAULT_LOG}


def log_level() -> int:
    """The ``--log`` level given to this command."""
    return _state["log"]


def trace_hook() -> Callable[[str], None] | None:
    """At ``--log 5``, a hook that prints every request and response to stderr."""
    if _state["log"] < TRACE_LOG:
        return None
    from infrakit.cli.output import printable

    return lambda line: click.echo(printable(line), err=True)


class _LazyGroup(click.Group):
    """Loads each sub-command's module only when that sub-command runs."""

    _modules: ClassVar[dict[str, str]] = {
        "plugin": "infrakit.cli.plugin",
        "instance": "infrakit.cli.instance",
        "flavor": "infrakit.cli.flavor",
        "group": "infrakit.cli.group",
        "manager": "infrakit.cli.manager",
        "image": "infrakit.cli.image",
        "explain": "infrakit.cli.explain",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._modules])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self._modules.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name) or _plugin_command(cmd_name)
        return _command_of(module)


def _command_of(module: str) -> click.Command:
    import importlib

    cmd = importlib.import_module(module).command
    assert isinstance(cmd, click.Command)
    return cmd


_BY_INTERFACE = {"Group": "infrakit.cli.group", "Instance": "infrakit.cli.instance",
                 "Flavor": "infrakit.cli.flavor"}


def _plugin_command(name: str) -> click.Command | None:
    """``infrakit NAME VERB ...`` for a running plugin NAME (``instance-file``,
    ``flavor-vanilla/web``), as the reference's CLI has it: the verbs of the interface it
    implements, aimed at it, as ``infrakit instance --name NAME VERB ...`` would be."""
    from infrakit.rpc.discovery import probe, socket_of
    from infrakit.rpc.paths import PluginPathError, UntrustedPath

    try:
        found = socket_of(name)
    except UntrustedPath:
        raise
    except PluginPathError:
        return None
    if found is None:
        return None
    info = probe(found[0])
    module = next((_BY_INTERFACE[api.name] for api in info.apis if api.name in _BY_INTERFACE),
                  None)
    if module is None:
        return None
    base = _command_of(module)
    assert isinstance(base, click.Group) and base.callback is not None
    callback = base.callback
    return click.Group(
        name, commands=base.commands, help=f"{base.help} (aimed at the plugin {name!r})",
        params=[p for p in base.params if p.name != "name"],
        callback=lambda **kwargs: callback(name=name, **kwargs))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log", "log_level", type=click.IntRange(0, 5), default=DEFAULT_LOG,
              show_default=True,
              envvar="INFRAKIT_LOG", help="Log level: 0 is least verbose; 5 logs every "
              "request and response.")
@click.option("--debug", is_flag=True, envvar="INFRAKIT_DEBUG",
              help="Show a traceback when a command fails.")
def cli(log_level: int, debug: bool) -> None:
    """Declarative, self-healing infrastructure over InfraKit plugins.

    Plugins are processes serving JSON-RPC on UNIX sockets in $INFRAKIT_PLUGINS_DIR
    (default: $INFRAKIT_HOME/plugins, and $INFRAKIT_HOME defaults to ~/.infrakit).
    """
    _state["debug"] = debug
    _state["log"] = log_level
    if log_level != DEFAULT_LOG:
        configure_logging(log_level)


@cli.command()
def version() -> None:
    """Print the version of infrakit-py and of the plugin APIs it speaks."""
    from infrakit.spi.types import FLAVOR_API, GROUP_API, INSTANCE_API

    click.echo(f"infrakit-py {__version__}")
    click.echo(f"APIs: {INSTANCE_API}, {FLAVOR_API}, {GROUP_API}")


def error_message(exc: BaseException) -> str:
    """What the user reads for an error: the reason as a sentence, with no traceback and
    no protocol detail (the JSON-RPC code is in ``-o json``'s answer, for scripts)."""
    from infrakit.rpc.jsonrpc import RPCError

    if isinstance(exc, RPCError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    """The JSON-RPC code a plugin answered with, when the error is its answer."""
    from infrakit.rpc.jsonrpc import RequestTooLarge, RPCError
    from infrakit.spi.errors import CallFailed

    if isinstance(exc, RequestTooLarge):  # refused here: the plugin never saw it
        return None
    if isinstance(exc, RPCError | CallFailed):
        return exc.code
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors go to stderr with exit status 1, tracebacks only with --debug."""
    try:
        cli.main(args=argv, prog_name="infrakit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _show(exc)
        sys.exit(1 if exc.exit_code == 0 else exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader had enough (`| head`): not a failure of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if _state["debug"] or os.environ.get("INFRAKIT_DEBUG"):
            raise
        _report(error_message(exc), error_code(exc), keep="")
        sys.exit(1)


def _show(exc: click.ClickException) -> None:
    """Print a command's error. Its message may quote what a plugin or a file said: what
    a terminal would act on is escaped, save the new lines the command put there itself."""
    if isinstance(exc, click.UsageError):  # with the usage; it quotes only the arguments
        exc.show()
        return
    from infrakit.cli.output import NL

    _report(exc.format_message(), None, keep=NL)


def _report(message: str, code: int | None, keep: str) -> None:
    """An error on stderr: a sentence, with what a terminal would act on escaped but for
    ``keep``; or, for a command asked for ``-o json`` or ``-o yaml``, a document a script
    can read: ``{"Error": ..., "Code": ...}``, with the JSON-RPC code the plugin answered,
    if a plugin's answer is the error."""
    from infrakit.cli.output import chosen_format, dump, printable

    fmt = chosen_format()
    if fmt in ("json", "yaml"):
        click.echo(dump({"Error": message, "Code": code}, fmt), err=True)
        return
    click.echo(f"Error: {printable(message, keep=keep)}", err=True)
