"""``infrakit plugin start`` supervises what it starts: a plugin that dies is started again
and its log says so; one that stops cleanly, or is stopped, stays stopped; and nothing is
left running afterwards. Real plugin processes, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infrakit.rpc.lifecycle import read_pid
from infrakit.supervise import backoff, describe, supervisor_pid
from tests.conftest import Cli, Processes
from tests.helpers import PY, answers_handshake, pid_alive, supervisors_of, wait_until

Done = subprocess.CompletedProcess[str]


def ok(done: Done) -> Done:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\n" \
                                 f"stderr: {done.stderr}"
    return done


def never(predicate: Callable[[], object], seconds: float, what: str) -> None:
    """Fail if ``predicate`` becomes true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not predicate(), what
        time.sleep(0.02)


def gone(*pids: int) -> bool:
    return not any(pid_alive(p) for p in pids)


def log_of(home: Path, name: str) -> str:
    return (home / "logs" / f"{name}.log").read_text(errors="replace")


# -- the rules, without processes -----------------------------------------------------------


def test_backoff_doubles_from_1s_to_60s_and_starts_over_after_a_60s_run() -> None:
    delays: list[float] = []
    delay = None
    for _ in range(9):
        delay = backoff(delay, ran=0.5)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff(60, ran=59.9) == 60
    assert backoff(60, ran=60.0) == 1


def test_describe_says_how_a_process_ended() -> None:
    assert describe(signal.SIGKILL) == "was killed by signal 9 (SIGKILL)"
    assert describe(signal.SIGSEGV) == "was killed by signal 11 (SIGSEGV)"
    assert describe(3 << 8) == "exited with status 3"


def test_the_supervisor_loads_only_the_standard_library_it_needs() -> None:
    """One runs beside every plugin, so it leaves out the CLI and the plugin runtime."""
    done = subprocess.run([PY, "-c", "import sys, infrakit.supervise; print(*sys.modules)"],
                          capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    unwanted = {"click", "infrakit.cli", "infrakit.rpc", "asyncio", "msgspec", "subprocess",
                "socket", "pathlib", "typing", "re"}
    assert loaded & unwanted == set()


# -- the supervisor on its own --------------------------------------------------------------

#: A plugin in miniature: writes its pid, binds its socket, and exits with status 3 after
#: argv[2] seconds.
_FAILING = """
import os, socket, sys, time
sock = sys.argv[1]
with open(sock + ".pid", "w") as f:
    f.write(f"{os.getpid()}\\n")
if os.path.exists(sock):
    os.unlink(sock)
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen()
time.sleep(float(sys.argv[2]))
sys.exit(3)
"""


def _supervise(procs: Processes, sock: Path, first_delay: float,
               *command: str) -> subprocess.Popen[bytes]:
    """Run the supervisor as `plugin start` does, but as our child and with ``first_delay``."""
    sock.parent.mkdir(mode=0o700, exist_ok=True)
    log = procs.home / "logs" / f"{sock.name}.log"
    return procs.spawn([PY, "-m", "infrakit.supervise", "--first-delay", str(first_delay),
                        str(sock), "--", *command], log)


def test_restarts_back_off_and_each_says_why(procs: Processes, home: Path,
                                             plugins_dir: Path) -> None:
    script = home / "failing.py"
    script.write_text(_FAILING)
    sock = plugins_dir / "failing"
    proc = _supervise(procs, sock, 0.1, PY, str(script), str(sock), "0.2")
    log = home / "logs" / "failing.log"
    wait_until(lambda: "(restart 3)" in log.read_text(), 15, what="three restarts")
    lines = [line.split(" supervisor: ", 1)[1] for line in log.read_text().splitlines()]
    for n, (line, delay) in enumerate(zip(lines, ("0.1", "0.2", "0.4"), strict=False), 1):
        assert re.fullmatch(rf"failing \(pid \d+\) exited with status 3 after \d+\.\ds; "
                            rf"restarting in {delay}s \(restart {n}\)", line), line
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(10)
    assert supervisors_of(home) == [] and not sock.with_name(".failing.supervisor.pid").exists()


def test_a_second_supervisor_for_a_name_is_refused(procs: Processes, home: Path,
                                                   plugins_dir: Path) -> None:
    sock = plugins_dir / "flavor-vanilla"
    first = _supervise(procs, sock, 1, PY, "-m", "infrakit", "plugin", "run", "flavor-vanilla")
    wait_until(lambda: answers_handshake(sock), 15, what="flavor-vanilla to answer")
    second = _supervise(procs, sock, 1, PY, "-c", "pass")
    assert second.wait(10) == 1
    assert (f"supervisor: flavor-vanilla already has a supervisor (pid {first.pid})"
            in log_of(home, "flavor-vanilla"))
    assert supervisor_pid(sock) == first.pid


# -- plugin start and stop ------------------------------------------------------------------


def test_a_plugin_killed_with_sigkill_comes_back_and_the_log_says_so(
        cli: Cli, home: Path, plugins_dir: Path) -> None:
    sock = plugins_dir / "flavor-vanilla"
    out = ok(cli("plugin", "start", "flavor-vanilla")).stdout
    first, keeper = read_pid(sock), supervisor_pid(sock)
    assert first is not None and keeper is not None
    assert f"started flavor-vanilla (pid {first}), supervised by pid {keeper}" in out

    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: read_pid(sock) not in (None, first) and answers_handshake(sock), 10,
               what="a new flavor-vanilla to answer")
    took = time.monotonic() - killed
    assert took < 5, f"restarted after {took:.1f}s"
    second = read_pid(sock)
    assert second is not None and not pid_alive(first)
    assert re.search(rf"supervisor: flavor-vanilla \(pid {first}\) was killed by signal 9 "
                     r"\(SIGKILL\) after \d+\.\ds; restarting in 1s \(restart 1\)\n",
                     log_of(home, "flavor-vanilla"))
    # the socket is the plugin's: ls shows it, and who supervises it
    [entry] = json.loads(ok(cli("plugin", "ls", "-o", "json")).stdout)
    assert (entry["State"], entry["Pid"], entry["Supervisor"]) == ("running", second, keeper)

    assert f"stopped flavor-vanilla (pid {second})" in ok(cli("plugin", "stop",
                                                              "flavor-vanilla")).stdout
    assert gone(second, keeper)  # stop waits for both
    assert supervisors_of(home) == []
    assert sorted(p.name for p in plugins_dir.iterdir()) == []


def test_no_supervise_leaves_a_killed_plugin_dead(cli: Cli, home: Path,
                                                  plugins_dir: Path) -> None:
    sock = plugins_dir / "instance-file"
    out = ok(cli("plugin", "start", "--no-supervise", "instance-file")).stdout
    pid = read_pid(sock)
    assert pid is not None
    assert f"started instance-file (pid {pid}), log" in out
    assert supervisor_pid(sock) is None and supervisors_of(home) == []
    [entry] = json.loads(ok(cli("plugin", "ls", "-o", "json")).stdout)
    assert entry["Supervisor"] is None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gone(pid), 5, what="the plugin to die")
    # longer than a supervisor's first wait (1 s) before a restart
    never(lambda: read_pid(sock) not in (None, pid), 1.5, "the plugin was started again")
    assert "supervisor" not in log_of(home, "instance-file")


def test_a_plugin_that_exits_with_status_0_is_not_restarted(cli: Cli, home: Path,
                                                            plugins_dir: Path) -> None:
    """SIGTERM straight to the plugin (not through `plugin stop`): it stops cleanly, and
    its supervisor ends too, saying why."""
    sock = plugins_dir / "flavor-vanilla"
    ok(cli("plugin", "start", "flavor-vanilla"))
    pid, keeper = read_pid(sock), supervisor_pid(sock)
    assert pid is not None and keeper is not None
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: gone(pid, keeper), 10, what="the plugin and its supervisor to exit")
    assert re.search(rf"supervisor: flavor-vanilla \(pid {pid}\) exited with status 0 after "
                     r"\d+\.\ds; not restarting it\n", log_of(home, "flavor-vanilla"))
    assert sorted(p.name for p in plugins_dir.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_supervisor_stops_the_plugin_cleanly(
        cli: Cli, home: Path, plugins_dir: Path, sig: int) -> None:
    sock = plugins_dir / "flavor-vanilla"
    ok(cli("plugin", "start", "flavor-vanilla"))
    pid, keeper = read_pid(sock), supervisor_pid(sock)
    assert pid is not None and keeper is not None
    os.kill(keeper, sig)
    wait_until(lambda: gone(pid, keeper), 10, what="the plugin and its supervisor to exit")
    log = log_of(home, "flavor-vanilla")
    assert "plugin flavor-vanilla stopped" in log and "supervisor:" not in log
    assert sorted(p.name for p in plugins_dir.iterdir()) == []


def test_plugin_stop_force_kills_a_stuck_plugin_and_its_supervisor_lets_it_be(
        cli: Cli, home: Path, plugins_dir: Path) -> None:
    sock = plugins_dir / "flavor-vanilla"
    ok(cli("plugin", "start", "flavor-vanilla"))
    pid, keeper = read_pid(sock), supervisor_pid(sock)
    assert pid is not None and keeper is not None
    os.kill(pid, signal.SIGSTOP)  # deaf to SIGTERM until killed
    out = ok(cli("plugin", "stop", "--timeout", "0.5", "--force", "flavor-vanilla")).stdout
    assert out.strip() == f"killed flavor-vanilla (pid {pid})"
    assert gone(pid, keeper)
    assert "supervisor:" not in log_of(home, "flavor-vanilla")
    assert sorted(p.name for p in plugins_dir.iterdir()) == []


def test_a_plugin_that_fails_its_first_start_is_reported_and_not_retried(
        cli: Cli, home: Path, plugins_dir: Path) -> None:
    done = cli("plugin", "start", "group", env={"INFRAKIT_GROUP_POLL": "abc"})
    assert done.returncode == 1
    assert "group: exited with status 1: Error: INFRAKIT_GROUP_POLL: 'abc'" in done.stderr
    assert supervisors_of(home) == []  # gone before `plugin start` returned
    assert supervisor_pid(plugins_dir / "group") is None
    assert "supervisor" not in log_of(home, "group")


def test_a_plugin_that_does_not_answer_in_time_is_stopped_with_its_supervisor(
        cli: Cli, home: Path, plugins_dir: Path) -> None:
    done = cli("plugin", "start", "--wait", "0.1", "group")
    assert done.returncode == 3 and "did not answer within 0.1s" in done.stderr  # --wait
    wait_until(lambda: supervisors_of(home) == [], 10, what="the supervisor to exit")
    assert not (plugins_dir / "group.pid").exists()
    assert not answers_handshake(plugins_dir / "group")


def test_plugin_stop_during_a_wait_to_restart_stops_the_supervisor(
        procs: Processes, cli: Cli, home: Path, plugins_dir: Path) -> None:
    sock = plugins_dir / "flavor-vanilla"
    proc = _supervise(procs, sock, 30, PY, "-m", "infrakit", "plugin", "run", "flavor-vanilla")
    wait_until(lambda: answers_handshake(sock), 15, what="flavor-vanilla to answer")
    pid = read_pid(sock)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "restarting in 30s (restart 1)" in log_of(home, "flavor-vanilla"), 10,
               what="the supervisor to wait")
    # meanwhile the name is taken: a second start would only fight the restart
    done = cli("plugin", "start", "flavor-vanilla")
    assert done.returncode == 1
    assert f"flavor-vanilla: its supervisor (pid {proc.pid}) is restarting it" in done.stderr
    out = ok(cli("plugin", "stop", "flavor-vanilla")).stdout
    assert out.strip() == (f"flavor-vanilla was not running; stopped its supervisor (pid "
                           f"{proc.pid}), which was about to restart it; removed its stale files")
    assert proc.wait(5) == 0
    assert sorted(p.name for p in plugins_dir.iterdir()) == []
