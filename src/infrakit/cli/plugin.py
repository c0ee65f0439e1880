"""``infrakit plugin``: list, start, stop and run plugins."""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from infrakit.cli.complete import PluginKind, PluginName
from infrakit.cli.exits import WaitTimeout
from infrakit.cli.main import log_level
from infrakit.cli.output import TABLES, emit, emit_ids, output_option, quiet_option
from infrakit.cli.setting_option import setting_option
from infrakit.rpc.discovery import PluginInfo, list_plugins, probe
from infrakit.rpc.lifecycle import ensure_plugin_dir, is_live, read_pid
from infrakit.rpc.paths import (
    PluginPathError,
    UntrustedPath,
    check_plugin_socket,
    infrakit_home,
    make_secret_dir,
    pid_path,
    plugin_dir,
    socket_path,
)
from infrakit.settings import METRICS_LISTEN, listen_text
from infrakit.supervise import Running, find_supervisor, supervisor_pid

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

POLL = 0.02


@click.group("plugin")
def command() -> None:
    """List, start, stop and run plugins."""


def _rows(infos: list[PluginInfo], extra: list[list[str]] | None = None) -> list[list[str]]:
    """A row per interface of each plugin; ``extra``: columns to add to each plugin's rows
    (``-o wide``), one list per plugin."""
    rows = []
    for n, info in enumerate(infos):
        more = extra[n] if extra is not None else []
        if info.state != "running" or not info.apis:
            rows.append([f"({info.state}{': ' + info.error if info.error else ''})",
                         str(info.path), info.name, *more])
            continue
        for api in info.apis:
            types = info.types.get(str(api), ["."])
            for t in types:
                name = info.name if t == "." else f"{info.name}/{t}"
                rows.append([str(api), str(info.path), name, *more])
    return rows


@command.command("ls")
@quiet_option("Print rows without column headers (as the reference's CLI does); with -o "
              "json or yaml, only the plugins' names.")
@output_option()
def ls(quiet: bool, output: str) -> None:
    """List the plugins in the plugin directory: one row per interface.

    A socket that nothing answers on (left by a killed plugin) is shown as stale. -o wide
    adds the plugin's STATE, PID and SUPERVISOR: the pid of the process that restarts it
    if it dies (- if it was started with --no-supervise or by `plugin run`), as -o json
    and yaml give them.
    """
    infos = list_plugins()
    supervisors = [supervisor_pid(i.path) for i in infos]
    data = [{"Name": i.name, "Listen": str(i.path), "State": i.state, "Pid": i.pid,
             "Supervisor": sup, "Implements": [str(a) for a in i.apis], "Types": i.types,
             "Error": i.error or None} for i, sup in zip(infos, supervisors, strict=True)]
    if quiet and output not in TABLES:
        emit_ids([i.name for i in infos], output)
        return
    wide = output == "wide"
    emit(data, output, ["INTERFACE", "LISTEN", "NAME",
                        *(["STATE", "PID", "SUPERVISOR"] if wide else [])],
         lambda: _rows(infos, [[i.state, _pid(i.pid), _pid(sup)]
                               for i, sup in zip(infos, supervisors, strict=True)]
                       if wide else None), quiet)


def _pid(pid: int | None) -> str:
    return str(pid) if pid else "-"


def _kinds_help() -> str:
    from infrakit.cli.kinds import KINDS

    return "\n".join(f"  {k:<16} {v.summary}" + (f" (the [{v.extra}] extra)" if v.extra else "")
                     for k, v in sorted(KINDS.items()))


class _KindsInHelp(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write("Kinds:\n" + _kinds_help() + "\n")


def _log_path(name: str) -> Path:
    return infrakit_home() / "logs" / f"{name}.log"


@command.command("start", cls=_KindsInHelp)
@click.argument("plugins", nargs=-1, required=True, metavar="KIND[:NAME]...",
                type=PluginKind())
@click.option("--wait", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for each plugin to answer its handshake (exit status 3 "
              "when none of those that failed did anything but not answer in time).")
@click.option("--supervise/--no-supervise", default=True, show_default=True,
              help="Run each plugin under a supervisor that restarts it when it crashes or "
              "is killed (after 1s, doubling to 60s while it keeps failing), saying so in "
              "its log. --no-supervise starts the plugin alone: once dead, it stays dead.")
@setting_option(METRICS_LISTEN, "metrics_listen")
def start(plugins: tuple[str, ...], wait: float, supervise: bool,
          metrics_listen: tuple[str, int] | None) -> None:
    """Start built-in plugins in the background and wait until each answers.

    NAME defaults to KIND. Each plugin logs to $INFRAKIT_HOME/logs/NAME.log. A plugin
    that exits with status 0 (as on `infrakit plugin stop`) is not restarted. Every
    plugin serves GET /metrics on its socket; --metrics-listen gives one plugin a TCP
    port for it too.
    """
    from infrakit.cli.kinds import check_installed, parse_kind
    from infrakit.extras import MissingExtra

    try:
        wanted = [parse_kind(p) for p in plugins]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KIND") from None
    try:  # all refused before any starts: a half-started set helps nobody
        for kind in dict.fromkeys(kind for kind, _ in wanted):
            check_installed(kind)
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    if metrics_listen is not None and len(wanted) > 1:
        raise click.UsageError(f"{METRICS_LISTEN.option}: one port serves one plugin: start "
                               "the plugins one at a time to give each its own port")
    env = {**os.environ, METRICS_LISTEN.env: listen_text(metrics_listen)}
    level = log_level()
    paths = [socket_path(name) for _, name in wanted]  # refuse bad paths before any change
    _logs_for_me_alone()
    ensure_plugin_dir(plugin_dir())
    failed, timeouts = [], 0
    for (kind, name), path in zip(wanted, paths, strict=True):
        if is_live(path):
            failed.append(f"{name}: already running (pid {read_pid(path)}) at {path}")
            continue
        keeper = supervisor_pid(path)
        if keeper is not None:
            failed.append(f"{name}: its supervisor (pid {keeper}) is restarting it; see "
                          f"{_log_path(name)}, or stop both with `infrakit plugin stop {name}`")
            continue
        log = _log_path(name)
        try:
            proc = _spawn([sys.executable, "-m", "infrakit", "--log", str(level), "plugin",
                           "run", f"{kind}:{name}"], path if supervise else None, log, env)
        except click.ClickException as exc:
            failed.append(f"{name}: {exc.message}")
            continue
        error = _await_handshake(proc, path, wait)
        if error:
            failed.append(f"{name}: {error[0]}: {_last_line(log)} (log {log})")
            timeouts += error[1]
        elif supervise:
            click.echo(f"started {name} (pid {read_pid(path)}), supervised by pid {proc.pid}, "
                       f"log {log}")
        else:
            click.echo(f"started {name} (pid {proc.pid}), log {log}")
    if failed:  # all for want of time: the --wait timeout's own status
        fault = WaitTimeout if timeouts == len(failed) else click.ClickException
        raise fault("could not start:\n  " + "\n  ".join(failed))


def _logs_for_me_alone() -> None:
    """$INFRAKIT_HOME and its logs/ made 0700, or closed to others if they were open to
    them (at ``--log 5`` a plugin logs every request, secrets in specs included); saying
    so on stderr. Another user's is refused."""
    home = infrakit_home()
    try:
        for directory, what in ((home, "INFRAKIT_HOME"), (home / "logs", "log directory")):
            note = make_secret_dir(directory, what)
            if note:
                click.echo(f"note: {note}", err=True)
    except PluginPathError as exc:
        raise click.ClickException(str(exc)) from None


def _open_log(log: Path) -> int:
    """A plugin's log, opened to append to: made 600, or closed to others if it was open
    to them; never written through a link, nor if another user owns it."""
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise click.ClickException(f"log {log} is a symbolic link: refusing to write "
                                       "through it; remove it") from None
        raise
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise click.ClickException(f"log {log} (owner uid {st.st_uid}, mode {mode:o}) is not "
                                   "a file of yours: refusing to write to it")
    if mode & 0o077:
        os.fchmod(fd, 0o600)
        click.echo(f"note: log {log} was open to others (mode {mode:o}): made it mode 600",
                   err=True)
    return fd


def _spawn(command: list[str], supervised: Path | None, log: Path,
           env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` detached with environment ``env``, logging to ``log``; under a
    supervisor (see :mod:`infrakit.supervise`) watching the socket ``supervised``, unless
    that is None."""
    import subprocess

    if supervised is not None:
        command = [sys.executable, "-m", "infrakit.supervise", str(supervised), "--", *command]
    out = _open_log(log)
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True, env=env)
    finally:
        os.close(out)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing logged)"


def _await_handshake(proc: subprocess.Popen[bytes], path: Path,
                     wait: float) -> tuple[str, bool] | None:
    """None once the plugin answers; otherwise the reason it did not, and whether that was
    for want of time."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return f"exited with status {code}", False
        if path.exists() and probe(path, timeout=1.0).state == "running":
            return None
        time.sleep(POLL)
    proc.terminate()
    return f"did not answer within {wait:g}s", True


@command.command("stop")
@click.argument("names", nargs=-1, type=PluginName())
@click.option("--all", "every", is_flag=True, help="Stop every plugin in the plugin directory.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for each plugin to exit after SIGTERM.")
@click.option("--force", is_flag=True, help="Send SIGKILL to a plugin that does not exit "
              "in time, and clean up what it leaves.")
def stop(names: tuple[str, ...], every: bool, timeout: float, force: bool) -> None:
    """Stop plugins cleanly: SIGTERM, then wait until they have removed their sockets."""
    if every == bool(names):
        raise click.UsageError("give the NAMES of the plugins to stop, or --all")
    if every:
        from infrakit.rpc.discovery import list_plugins

        names = tuple(i.name for i in list_plugins())
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
    try:
        check_plugin_socket(path)  # no signal to a pid that another user wrote
    except UntrustedPath as exc:
        raise click.ClickException(str(exc)) from None
    keeper = find_supervisor(path)
    try:
        if is_live(path):
            _stop_live(name, path, keeper, timeout, force)
        else:
            _stop_dead(name, path, keeper, timeout, force)
    finally:
        if keeper is not None:
            keeper.close()


def _stop_live(name: str, path: Path, keeper: Running | None, timeout: float,
               force: bool) -> None:
    pid = read_pid(path)
    if pid is None:
        raise click.ClickException(f"{name} is running but its pid file is unreadable")
    # A supervised plugin is stopped through its supervisor, which passes the SIGTERM on and
    # then does not restart it, even if the plugin dies of it (as it does early in its start).
    if keeper is None or not _signal(keeper.pid, signal.SIGTERM):
        os.kill(pid, signal.SIGTERM)
    if _await(lambda: not is_live(path), timeout):
        _await_supervisor(name, keeper, force)
        click.echo(f"stopped {name} (pid {pid})")
        return
    if not force:
        raise click.ClickException(
            f"{name} (pid {pid}) did not stop within {timeout:g}s; use --force to kill it")
    os.kill(pid, signal.SIGKILL)
    if not _await(lambda: not is_live(path), 5.0):
        raise click.ClickException(f"{name} (pid {pid}) survived SIGKILL")
    _await_supervisor(name, keeper, force)
    for p in (path, pid_path(path)):
        p.unlink(missing_ok=True)
    click.echo(f"killed {name} (pid {pid})")


def _stop_dead(name: str, path: Path, keeper: Running | None, timeout: float,
               force: bool) -> None:
    """Clean up after a plugin that is not running, and stop its supervisor if it has one
    (it is waiting to restart the plugin, or restarting it)."""
    said = f"{name} was not running"
    if keeper is not None:
        _signal(keeper.pid, signal.SIGTERM)
        _await_supervisor(name, keeper, force, timeout)
        said += f"; stopped its supervisor (pid {keeper.pid}), which was about to restart it"
    stale = [p for p in (path, pid_path(path)) if p.exists() or p.is_socket()]
    if not stale and keeper is None:
        from infrakit.rpc.discovery import running_names

        running = ", ".join(running_names()) or "none"
        raise click.ClickException(f"no plugin named {name!r} is running (running: {running})")
    for p in stale:
        p.unlink(missing_ok=True)
    click.echo(said + ("; removed its stale files" if stale else ""))


def _await_supervisor(name: str, keeper: Running | None, force: bool,
                      timeout: float = 5.0) -> None:
    """Wait for a supervisor that has been asked to stop, or whose plugin has stopped, to
    exit, so that nothing is left running; it exits once it has the plugin's status."""
    if keeper is None or _await(keeper.exited, timeout):
        return
    if not force:
        raise click.ClickException(
            f"{name}: its supervisor (pid {keeper.pid}) did not exit within {timeout:g}s; "
            "use --force to kill it")
    _signal(keeper.pid, signal.SIGKILL)
    if not _await(keeper.exited, 5.0):
        raise click.ClickException(f"{name}: its supervisor (pid {keeper.pid}) survived SIGKILL")


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if it has already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _await(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(POLL)
    return False


@command.command("run", cls=_KindsInHelp)
@click.argument("plugin", metavar="KIND[:NAME]", type=PluginKind())
def run(plugin: str) -> None:
    """Run one built-in plugin in the foreground until SIGINT or SIGTERM."""
    from infrakit.cli.kinds import parse_kind, serve_kind

    try:
        kind, name = parse_kind(plugin)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KIND") from None
    serve_kind(kind, name, log_level())
