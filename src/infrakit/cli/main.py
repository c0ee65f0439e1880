"""The ``infrakit`` command: the root group, logging, and turning errors into messages.

Only what ``plugin ls`` and the instance verbs need is imported at start-up; everything
heavier is imported by the command that uses it.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import ClassVar

import click
from click.core import ParameterSource

from infrakit import __version__
from infrakit.cli.exits import ERROR, HELP, INTERRUPTED
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
        "template": "infrakit.cli.template",
        "ui": "infrakit.cli.ui",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._modules])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self._modules.get(cmd_name)
        if module is None:
            own = super().get_command(ctx, cmd_name)
            return _dressed(own) if own else _plugin_command(cmd_name)
        return _command_of(module)


def _set_log(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if ctx.get_parameter_source(str(param.name)) is ParameterSource.DEFAULT:
        return  # given nowhere: the level the root set (its default or $INFRAKIT_LOG) holds
    _state["log"] = value
    if value != DEFAULT_LOG:
        configure_logging(value)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if ctx.get_parameter_source(str(param.name)) is not ParameterSource.DEFAULT:
        _state["debug"] = value


def global_options(root: bool = False) -> list[click.Option]:
    """``--log`` and ``--debug``, which every command takes, before its sub-command or
    after it (``infrakit group ls --log 5``); the root's read the environment too."""
    return [
        click.Option(["--log", "global_log"], type=click.IntRange(0, 5), default=DEFAULT_LOG,
                     show_default=root, envvar="INFRAKIT_LOG" if root else None,
                     expose_value=False, callback=_set_log,
                     help="Log level: 0 is least verbose; 5 logs every request and response."
                     + ("" if root else " (Global: also before the command.)")),
        click.Option(["--debug", "global_debug"], is_flag=True,
                     envvar="INFRAKIT_DEBUG" if root else None, expose_value=False,
                     callback=_set_debug, help="Show a traceback when a command fails."
                     + ("" if root else " (Global.)")),
    ]


def _dressed(cmd: click.Command) -> click.Command:
    """``cmd`` and every command under it given the global options, and, for the
    parameters named in :data:`~infrakit.cli.complete.BY_PARAMETER`, their completion.
    Done where a command is loaded, so that every verb has them, whoever adds it."""
    if any(p.name == "global_log" for p in cmd.params):
        return cmd
    from infrakit.cli.complete import BY_PARAMETER

    for param in cmd.params:
        if param.name in BY_PARAMETER and isinstance(param.type, click.types.StringParamType):
            param.type = BY_PARAMETER[param.name]
    cmd.params.extend(global_options())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _dressed(sub)
    return cmd


def _command_of(module: str) -> click.Command:
    import importlib

    cmd = importlib.import_module(module).command
    assert isinstance(cmd, click.Command)
    return _dressed(cmd)


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


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             params=global_options(root=True), epilog=f"""{HELP}

\b
Shell completion (commands, options, group IDs, plugin names and kinds):
  bash  eval "$(infrakit completion bash)"     (in ~/.bashrc)
  zsh   eval "$(infrakit completion zsh)"      (in ~/.zshrc)
  fish  infrakit completion fish | source     (in ~/.config/fish/config.fish)""")
@click.version_option(__version__, "--version", prog_name="infrakit-py",
                      message="%(prog)s %(version)s", help="Print the version and exit.")
def cli() -> None:
    """Declarative, self-healing infrastructure over InfraKit plugins.

    Plugins are processes serving JSON-RPC on UNIX sockets in $INFRAKIT_PLUGINS_DIR
    (default: $INFRAKIT_HOME/plugins, and $INFRAKIT_HOME defaults to ~/.infrakit).
    """


@cli.command()
@click.option("--output", "-o", type=click.Choice(["table", "wide", "json", "yaml"]),
              default="table", show_default=True, help="How to print the versions (wide is "
              "the same as table: there is nothing more to show).")
@click.option("-y", "--yaml", "output", flag_value="yaml", help="Print YAML (the same as "
              "-o yaml).")
def version(output: str) -> None:
    """Print the version of infrakit-py and of the plugin APIs it speaks."""
    from infrakit.spi.event import EVENT_API
    from infrakit.spi.metadata import METADATA_API
    from infrakit.spi.types import FLAVOR_API, GROUP_API, INSTANCE_API

    apis = [str(api) for api in (INSTANCE_API, FLAVOR_API, GROUP_API, EVENT_API,
                                 METADATA_API)]
    if output in ("table", "wide"):
        click.echo(f"infrakit-py {__version__}")
        click.echo(f"APIs: {', '.join(apis)}")
        return
    from infrakit.cli.output import dump

    click.echo(dump({"Version": __version__, "APIs": apis}, output))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the script that makes SHELL complete infrakit's commands, options, group IDs,
    plugin names and plugin kinds; see `infrakit --help` for where to put it."""
    from click.shell_completion import get_completion_class

    make = get_completion_class(shell)
    assert make is not None  # every choice has one
    click.echo(make(cli, {}, "infrakit", "_INFRAKIT_COMPLETE").source())


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
    """Run the CLI; errors go to stderr, tracebacks only with --debug, and the exit status
    says which kind of failure it was (:mod:`infrakit.cli.exits`)."""
    try:
        status = cli.main(args=argv, prog_name="infrakit", standalone_mode=False)
        if isinstance(status, int) and status:  # a ctx.exit(N): click hands N back
            sys.exit(status)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ERROR)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _show(exc)
        sys.exit(ERROR if exc.exit_code == 0 else exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except BrokenPipeError:  # the reader had enough (`| head`): not a failure of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if _state["debug"] or os.environ.get("INFRAKIT_DEBUG"):
            raise
        _report(error_message(exc), error_code(exc), keep="")
        sys.exit(ERROR)
    finally:
        # Spare the exit the interpreter's last full collection, over every object the
        # imports made (none of them garbage): it is a fifth of a short command's CPU time.
        # The memory goes back to the system with the process.
        gc.freeze()


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
