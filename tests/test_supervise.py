"""``infrakit plugin start`` supervises what it starts: a plugin that dies is started again
and its log says so; one that stops cleanly, or is stopped, stays stopped; and nothing is
left running afterwards. Real plugin processes, real sockets, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from infrakit.supervise import backoff, describe, supervisor_pid
from tests.conftest import Processes
from tests.helpers import PY, answers_handshake, supervisors_of, wait_until


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
