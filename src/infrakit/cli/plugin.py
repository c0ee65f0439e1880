"""``infrakit plugin``: list, start, stop and run plugins."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from infrakit.cli.main import log_level
from infrakit.cli.output import emit, output_option
from infrakit.rpc.discovery import PluginInfo, list_plugins, probe
from infrakit.rpc.lifecycle import ensure_plugin_dir, is_live, read_pid
from infrakit.rpc.paths import infrakit_home, pid_path, plugin_dir, socket_path

if TYPE_CHECKING:
    import subprocess

POLL = 0.02


@click.group("plugin")
def command() -> None:
    """List, start, stop and run plugins."""


def _rows(infos: list[PluginInfo]) -> list[list[str]]:
    rows = []
    for info in infos:
        if info.state != "running" or not info.apis:
            rows.append([f"({info.state}{': ' + info.error if info.error else ''})",
                         str(info.path), info.name])
            continue
        for api in info.apis:
            types = info.types.get(str(api), ["."])
            for t in types:
                name = info.name if t == "." else f"{info.name}/{t}"
                rows.append([str(api), str(info.path), name])
    return rows


@command.command("ls")
@output_option()
def ls(output: str) -> None:
    """List the plugins in the plugin directory: one row per interface.

    A socket that nothing answers on (left by a killed plugin) is shown as stale.
    """
    infos = list_plugins()
    data = [{"Name": i.name, "Listen": str(i.path), "State": i.state, "Pid": i.pid,
             "Implements": [str(a) for a in i.apis], "Types": i.types,
             "Error": i.error or None} for i in infos]
    emit(data, output, ["INTERFACE", "LISTEN", "NAME"], lambda: _rows(infos))


def _kinds_help() -> str:
    from infrakit.cli.kinds import KINDS

    return "\n".join(f"  {k:<16} {v.summary}" for k, v in sorted(KINDS.items()))


class _KindsInHelp(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write("Kinds:\n" + _kinds_help() + "\n")


def _log_path(name: str) -> Path:
    return infrakit_home() / "logs" / f"{name}.log"


@command.command("start", cls=_KindsInHelp)
@click.argument("plugins", nargs=-1, required=True, metavar="KIND[:NAME]...")
@click.option("--wait", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for each plugin to answer its handshake.")
def start(plugins: tuple[str, ...], wait: float) -> None:
    """Start built-in plugins in the background and wait until each answers.

    NAME defaults to KIND. Each plugin logs to $INFRAKIT_HOME/logs/NAME.log.
    """
    from infrakit.cli.kinds import parse_kind

    try:
        wanted = [parse_kind(p) for p in plugins]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KIND") from None
    level = log_level()
    paths = [socket_path(name) for _, name in wanted]  # refuse bad paths before any change
    ensure_plugin_dir(plugin_dir())
    failed = []
    for (kind, name), path in zip(wanted, paths, strict=True):
        if is_live(path):
            failed.append(f"{name}: already running (pid {read_pid(path)}) at {path}")
            continue
        import subprocess

        log = _log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "infrakit", "--log", str(level), "plugin", "run",
                 f"{kind}:{name}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                close_fds=True,
            )
        error = _await_handshake(proc, path, wait)
        if error:
            failed.append(f"{name}: {error}: {_last_line(log)} (log {log})")
        else:
            click.echo(f"started {name} (pid {proc.pid}), log {log}")
    if failed:
        raise click.ClickException("could not start:\n  " + "\n  ".join(failed))


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing logged)"


def _await_handshake(proc: subprocess.Popen[bytes], path: Path, wait: float) -> str | None:
    """None once the plugin answers; the reason it did not otherwise."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return f"exited with status {code}"
        if path.exists() and probe(path, timeout=1.0).state == "running":
            return None
        time.sleep(POLL)
    proc.terminate()
    return f"did not answer within {wait:g}s"


@command.command("stop")
@click.argument("names", nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for each plugin to exit after SIGTERM.")
@click.option("--force", is_flag=True, help="Send SIGKILL to a plugin that does not exit "
              "in time, and clean up what it leaves.")
def stop(names: tuple[str, ...], timeout: float, force: bool) -> None:
    """Stop plugins cleanly: SIGTERM, then wait until they have removed their sockets."""
    failed = []
    for name in names:
        try:
            _stop_one(name, timeout, force)
        except click.ClickException as exc:
            failed.append(exc.message)
    if failed:
        raise click.ClickException("\n".join(failed))


def _stop_one(name: str, timeout: float, force: bool) -> None:
    path = socket_path(name)
    pid = read_pid(path)
    if not is_live(path):
        stale = [p for p in (path, pid_path(path)) if p.exists() or p.is_socket()]
        if not stale:
            from infrakit.rpc.discovery import running_names

            running = ", ".join(running_names()) or "none"
            raise click.ClickException(
                f"no plugin named {name!r} is running (running: {running})")
        for p in stale:
            p.unlink(missing_ok=True)
        click.echo(f"{name} was not running; removed its stale files")
        return
    if pid is None:
        raise click.ClickException(f"{name} is running but its pid file is unreadable")
    os.kill(pid, signal.SIGTERM)
    if _await_exit(path, timeout):
        click.echo(f"stopped {name} (pid {pid})")
        return
    if not force:
        raise click.ClickException(
            f"{name} (pid {pid}) did not stop within {timeout:g}s; use --force to kill it")
    os.kill(pid, signal.SIGKILL)
    if not _await_exit(path, 5.0):
        raise click.ClickException(f"{name} (pid {pid}) survived SIGKILL")
    for p in (path, pid_path(path)):
        p.unlink(missing_ok=True)
    click.echo(f"killed {name} (pid {pid})")


def _await_exit(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_live(path):
            return True
        time.sleep(POLL)
    return False


@command.command("run", cls=_KindsInHelp)
@click.argument("plugin", metavar="KIND[:NAME]")
def run(plugin: str) -> None:
    """Run one built-in plugin in the foreground until SIGINT or SIGTERM."""
    from infrakit.cli.kinds import parse_kind, serve_kind

    try:
        kind, name = parse_kind(plugin)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KIND") from None
    serve_kind(kind, name, log_level())
