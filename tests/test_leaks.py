"""The check that no instance process outlives its test (tests/leaks.py and the hooks in
tests/conftest.py): it finds a process by the session's marker and an instance ID, kills
its whole process group, and fails the teardown of the test that left it."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import leaks
from tests.helpers import PY, pid_alive, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def marker() -> str:
    """A marker of another session than this one: what is made here is this test's
    business, not the session's check's."""
    return leaks.new_marker()


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for proc in made:
        stop_process(proc, timeout=2)


def test_an_instance_of_the_session_is_found_and_killed_with_its_group(
        marker: str, spawned: list[subprocess.Popen[bytes]]) -> None:
    env = {**os.environ, leaks.MARKER: marker}
    # an instance as the process plugin starts one: its own session; it starts a child
    member = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & exec sleep 61"],
                              env={**env, "INFRAKIT_INSTANCE_ID": "proc-7"},
                              start_new_session=True)
    plugin = subprocess.Popen(["sleep", "62"], env=env)  # the marker, no instance ID
    stranger = subprocess.Popen(["sleep", "63"],  # an instance of another session
                                env={**os.environ, leaks.MARKER: leaks.new_marker(),
                                     "INFRAKIT_INSTANCE_ID": "proc-7"},
                                start_new_session=True)
    spawned += [member, plugin, stranger]

    def both() -> bool:  # the child started, and the shell has become sleep 61
        return {m.cmdline for m in leaks.members(marker)} == {"sleep 60", "sleep 61"}

    wait_until(both, 5, what="the instance and its child")
    found = leaks.members(marker)
    assert {m.instance for m in found} == {"proc-7"}
    assert member.pid in {m.pid for m in found}
    assert "instance proc-7: sleep 6" in leaks.report(found, "a test")

    leaks.kill(found)  # and reaps the instance: it is a child of this process
    wait_until(lambda: not any(pid_alive(m.pid) for m in found), 5, what="both to die")
    assert leaks.settled(marker) == []
    assert plugin.poll() is None and stranger.poll() is None


def test_nothing_found_costs_no_wait(marker: str) -> None:
    assert leaks.settled(marker, grace=10) == []


def test_a_test_that_leaves_an_instance_fails_at_its_teardown(tmp_path: Path) -> None:
    """A session of its own (a process of its own, with its own marker) whose first test
    leaves an instance running: that test's teardown fails naming it, the next test is
    not blamed, the session fails, and the instance is dead afterwards."""
    iid = f"proc-leak-{leaks.new_marker()}"
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import (pytest_configure, pytest_runtest_teardown,  # noqa\n"
        "                            pytest_sessionfinish, pytest_terminal_summary)\n")
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(f"""
        import os, subprocess

        def test_leaves_an_instance():
            subprocess.Popen(["sleep", "60"], start_new_session=True,
                             env={{**os.environ, "INFRAKIT_INSTANCE_ID": "{iid}"}})

        def test_clean():
            pass
        """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(leaks.MARKER)
    done = subprocess.run(
        [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "ERROR at teardown of test_leaves_an_instance" in out, out
    assert f"instance {iid}: sleep 60" in out, out
    assert "test_clean" not in out.split("short test summary")[-1], out
    assert "2 passed, 1 error" in out, out
    leftovers = [e for e in os.listdir("/proc") if e.isdigit()
                 and f"INFRAKIT_INSTANCE_ID={iid}".encode() in _environ(e)]
    assert leftovers == [], out


def _environ(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "environ").read_bytes()
    except OSError:
        return b""
