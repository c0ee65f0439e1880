"""Built-in plugins started in a throw-away INFRAKIT_HOME for one benchmark, as a user
starts them (``infrakit plugin start``), and stopped and removed after it.

A benchmark destroys what it made, even when it fails half-way: when the stack ends, every
group the group plugin still manages is destroyed before the plugins stop, and then no
instance process of this home may be left (process instances outlive their plugin by
design: they would run on after the benchmark). One that is left is killed, and the
benchmark fails, naming it."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.errors import PluginError, Unreachable
from tests import leaks

PARENT_HELP = ("where INFRAKIT_HOME is made (by default, as ~/.infrakit is, in the home "
               "directory): plugins that write files run at the speed of this file system")


@dataclass(frozen=True)
class Stack:
    home: Path
    env: dict[str, str]

    def socket(self, name: str) -> Path:
        return self.home / "plugins" / name

    def pid(self, name: str) -> int:
        return int((self.home / "plugins" / f"{name}.pid").read_text())


@contextmanager
def cleaning_up(cleanup: Callable[[], list[str]]) -> Iterator[None]:
    """Run ``cleanup`` after the block, whether the block failed or not. What it could not
    clean up (the problems it returns) fails a block that succeeded; after a block that
    failed it is printed, and the block's own error stands."""
    try:
        yield
    except BaseException:
        for problem in cleanup():
            print(problem, file=sys.stderr, flush=True)
        raise
    problems = cleanup()
    if problems:
        raise SystemExit("\n".join(problems))


@contextmanager
def plugin_stack(*kinds: str, poll: float, parent: str | None = None,
                 extra_env: dict[str, str] | None = None,
                 supervise: bool = True, infrakit: str | None = None,
                 options: dict[str, list[str]] | None = None) -> Iterator[Stack]:
    """Start ``kinds`` with the group's poll interval ``poll`` (and ``extra_env`` in their
    environment), each under its supervisor unless ``supervise`` is False, by the command
    ``infrakit`` (by default this environment's; another checkout's to compare with it),
    given the options of ``plugin start`` in ``options`` (by kind), if any;
    at the end, destroy the groups left, stop the plugins, and check that no instance
    process is left."""
    infrakit = infrakit or str(Path(sys.executable).parent / "infrakit")
    home = Path(tempfile.mkdtemp(prefix=".ikb", dir=parent or Path.home()))
    env = {**os.environ, **(extra_env or {}), "INFRAKIT_HOME": str(home),
           "INFRAKIT_GROUP_POLL": f"{poll:g}"}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    stack = Stack(home, env)

    def cleanup() -> list[str]:
        problems = destroy_groups(stack) if "group" in kinds else []
        subprocess.run([infrakit, "plugin", "stop", "--force", *reversed(kinds)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        left = instance_processes(home)
        leaks.kill(left)
        shutil.rmtree(home, ignore_errors=True)
        return problems + ([leaks.report(left, "the benchmark")] if left else [])

    with cleaning_up(cleanup):
        # in the block: when one fails to start, those started before it are stopped
        if options:  # each with its own options
            for kind in kinds:
                subprocess.run([infrakit, "plugin", "start", kind, *options.get(kind, []),
                                *([] if supervise else ["--no-supervise"])], env=env,
                               check=True, stdout=subprocess.DEVNULL)
        else:
            subprocess.run([infrakit, "plugin", "start", *kinds,
                            *([] if supervise else ["--no-supervise"])], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        yield stack


def destroy_groups(stack: Stack, name: str = "group",
                   why: str = "left by the benchmark") -> list[str]:
    """Destroy every group the group plugin ``name`` still manages: those a benchmark that
    failed half-way did not get to destroy itself. Returns what could not be destroyed.
    When the plugin does not answer (never started, or killed), nothing is destroyed: then
    members that are processes are found by :func:`instance_processes`, and the others
    (files, containers, VMs of moto) go with the home or the engine."""
    try:
        with RPCClient(stack.socket(name), timeout=300) as conn:
            group = GroupClient(conn)
            left = [spec.id for spec in group.inspect_groups()]
            problems = []
            for gid in left:
                print(f"destroying group {gid}, {why}", file=sys.stderr)
                try:
                    group.destroy_group(gid)
                except PluginError as exc:
                    problems.append(f"cannot destroy group {gid}: {exc}")
            return problems
    except (OSError, PluginUnreachable, Unreachable) as exc:
        print(f"the groups left, if any, cannot be destroyed: {exc}", file=sys.stderr)
        return []


def instance_processes(home: Path) -> list[leaks.Member]:
    """The living instance processes made by plugins of this home (each has the plugin's
    environment, so this ``INFRAKIT_HOME``), after a second's grace for those being
    killed."""
    return leaks.settled_with(f"INFRAKIT_HOME={home}")


def wait(predicate: Callable[[], bool], timeout: float = 120.0) -> float:
    """Seconds until ``predicate`` holds, polled every 10 ms; the bench ends if it never
    does within ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit("timed out")
        time.sleep(0.01)
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_calls(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str],
                expect: bytes, calls: int) -> tuple[float, list[float]]:
    """``calls`` keep-alive POSTs of ``body`` on ``conn``: calls a second, and each call's
    seconds (sorted); each answer must be 200 and hold ``expect``."""
    lat = []
    started = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.request("POST", "/", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        lat.append(time.perf_counter() - t0)
        assert resp.status == 200 and expect in data, data
    elapsed = time.perf_counter() - started
    conn.close()
    return calls / elapsed, sorted(lat)
