"""Shared fixtures: a short INFRAKIT_HOME, real plugin processes, and the CLI; and the
check that no instance process outlives the test that made it (see tests/leaks.py).

AF_UNIX socket paths are limited to 107 bytes, so every home is a short directory under
/tmp rather than pytest's (long) ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.lifecycle import is_locked
from tests import leaks
from tests.etcd_engine import etcd_problem, private_etcd
from tests.helpers import (
    PY,
    answers_handshake,
    require_engine,
    stop_pid,
    stop_process,
    supervisors_of,
    wait_until,
)
from tests.moto_engine import MotoServer, moto_problem, moto_server

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # a suite started in the background by a shell has SIGINT ignored, and so would every
    # process it starts: the tests that press Ctrl-C on a CLI could not
    signal.signal(signal.SIGINT, signal.default_int_handler)

# -- no instance process outlives its test ---------------------------------------------------

_leaked_at_the_end: list[leaks.Member] = []


def pytest_configure(config: pytest.Config) -> None:
    # before any test starts a plugin: every process started from here on inherits it
    os.environ[leaks.MARKER] = leaks.new_marker()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a test and the fixtures torn down with it (a module's or the session's too,
    after the last test that uses them), no instance process made meanwhile may live on.
    Each one found is killed, and the test's teardown fails, naming them."""
    where = f"{item.nodeid} and its fixtures"
    try:
        yield
    except BaseException:
        found = leaks.settled(os.environ[leaks.MARKER])
        if found:  # the teardown failed already: say it beside that error
            leaks.kill(found)
            item.add_report_section("teardown", "leaked instances", leaks.report(found, where))
        raise
    found = leaks.settled(os.environ[leaks.MARKER])
    if found:
        leaks.kill(found)
        pytest.fail(leaks.report(found, where), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The last word: anything made since the last test's teardown (by a thread or a
    process still running then) fails the session."""
    found = leaks.settled(os.environ[leaks.MARKER])
    if found:
        leaks.kill(found)
        _leaked_at_the_end.extend(found)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _leaked_at_the_end:
        terminalreporter.section("leaked instance processes", sep="=", red=True, bold=True)
        terminalreporter.line(leaks.report(_leaked_at_the_end, "the test session"))


#: Variables of the caller's environment that would change what the tests see.
_CLEARED = ("INFRAKIT_PLUGINS_DIR", "INFRAKIT_LOG", "INFRAKIT_DEBUG", "INFRAKIT_TIMEOUT")


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, short ``$INFRAKIT_HOME``; its plugin directory is ``home/plugins``."""
    path = Path(tempfile.mkdtemp(prefix="ik", dir="/tmp"))
    monkeypatch.setenv("INFRAKIT_HOME", str(path))
    for var in _CLEARED:
        monkeypatch.delenv(var, raising=False)
    try:
        yield path
    finally:
        # plugins started in the background by `plugin start` are not our children. First
        # their supervisors, which pass SIGTERM on and restart nothing after it ...
        for pid in supervisors_of(path):
            stop_pid(pid)
        # ... then any plugin left, by the pids they wrote in this (private) plugin directory
        plugins = path / "plugins"
        if plugins.is_dir():
            for pid_file in plugins.glob("*.pid"):
                # only a live server holds the lock on its pid file: never signal a pid
                # left behind by a dead plugin (the number may belong to someone else now)
                if not is_locked(pid_file.with_suffix("")):
                    continue
                try:
                    pid = int(pid_file.read_text().strip())
                except (OSError, ValueError):
                    continue
                stop_pid(pid)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def plugins_dir(home: Path) -> Path:
    return home / "plugins"


@dataclass
class Plugin:
    """A plugin process this test started."""

    name: str
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid_file(self) -> Path:
        return self.path.with_name(self.path.name + ".pid")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Processes:
    """Every child process a test starts; all are stopped at teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], log: Path, env: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, **kwargs)
        self.children.append(proc)
        return proc

    def wait_ready(self, name: str, path: Path, proc: subprocess.Popen[bytes], log: Path,
                   timeout: float = 15.0) -> Plugin:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"plugin {name} exited with {proc.returncode}:\n"
                    f"{log.read_text(errors='replace')}")
            return path.exists() and answers_handshake(path)

        wait_until(ready, timeout, what=f"plugin {name} to answer on {path}")
        return Plugin(name, path, proc, log)

    def stop_all(self) -> None:
        for proc in self.children:
            stop_process(proc)


@pytest.fixture
def procs(home: Path) -> Iterator[Processes]:
    p = Processes(home)
    try:
        yield p
    finally:
        p.stop_all()


StartPlugin = Callable[..., Plugin]


@pytest.fixture
def start_plugin(procs: Processes, plugins_dir: Path) -> StartPlugin:
    """Start a built-in plugin (``plugin run KIND:NAME``) and wait until it answers."""

    def start(kind: str, name: str | None = None, *extra: str) -> Plugin:
        name = name or kind
        log = procs.home / "test-logs" / f"{name}.log"
        proc = procs.spawn([PY, "-m", "infrakit", *extra, "plugin", "run", f"{kind}:{name}"],
                           log)
        return procs.wait_ready(name, plugins_dir / name, proc, log)

    return start


StartScript = Callable[[str, str], Plugin]


@pytest.fixture
def start_script(procs: Processes, plugins_dir: Path) -> StartScript:
    """Write a plugin program ``source`` and run it with this Python; it gets the plugin
    directory as ``sys.argv[1]`` and must serve under ``name``."""

    def start(source: str, name: str) -> Plugin:
        script = procs.home / f"{name}_plugin.py"
        script.write_text(source)
        log = procs.home / "test-logs" / f"{name}.log"
        proc = procs.spawn([PY, str(script), str(plugins_dir)], log)
        return procs.wait_ready(name, plugins_dir / name, proc, log)

    return start


@pytest.fixture
def instance_file(start_plugin: StartPlugin) -> Path:
    """The socket of a running ``instance-file`` plugin."""
    return start_plugin("instance-file").path


@pytest.fixture
def flavor_vanilla(start_plugin: StartPlugin) -> Path:
    """The socket of a running ``flavor-vanilla`` plugin."""
    return start_plugin("flavor-vanilla").path


Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def cli(home: Path) -> Cli:
    """Run ``python -m infrakit ARGS`` in the test's environment; text mode, never raises."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        return subprocess.run(
            [PY, "-m", "infrakit", *args], input=input, capture_output=True, text=True,
            env=full_env, cwd=cwd or home, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    return run


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """The client URL of a private etcd member, started once for the session."""
    require_engine(etcd_problem())
    with private_etcd() as url:
        yield url


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto's EC2 server on loopback, started once for the session."""
    require_engine(moto_problem())
    try:
        server = moto_server()
        running = server.__enter__()
    except RuntimeError as exc:
        require_engine(f"moto's server cannot start: {exc}")
        raise
    try:
        yield running
    finally:
        server.__exit__(None, None, None)
