"""Instance processes that outlive the test that made them.

The process instance plugin runs each instance in a session of its own, with the plugin's
environment plus ``INFRAKIT_INSTANCE_ID``, so that instances outlive the plugin: a test
that stops its plugins without destroying what they made leaves processes running after
the suite. To find them, the session puts a marker of its own in ``os.environ`` before any
test runs; every plugin a test starts inherits it and hands it on to its instances. A
living process whose environment holds both the marker and ``INFRAKIT_INSTANCE_ID`` is an
instance made during this session, wherever it runs from.

The marker's name does not start with ``INFRAKIT_``: some fixtures give their plugins the
caller's environment without the ``INFRAKIT_`` variables (the user's settings), and the
marker must survive that.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass

MARKER = "IKPY_TEST_SESSION"
_INSTANCE = b"INFRAKIT_INSTANCE_ID="


def new_marker() -> str:
    """A value for :data:`MARKER` that no other session has."""
    return f"{os.getpid()}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Member:
    """A living instance process."""

    pid: int
    start_ticks: int
    """The kernel's start time of ``pid``: with it, a reused pid is not taken for it."""
    instance: str
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} instance {self.instance}: {self.cmdline}"


def _start_ticks(pid: int) -> int | None:
    """Start time of a living process (not a zombie), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def members(marker: str) -> list[Member]:
    """Every living process that carries ``MARKER=marker`` and an instance ID."""
    return instances_with(f"{MARKER}={marker}")


def instances_with(variable: str) -> list[Member]:
    """Every living instance process (one with an instance ID) whose environment holds
    ``variable`` (``NAME=value``), e.g. the ``INFRAKIT_HOME`` of its plugin."""
    mark = variable.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if mark not in raw or _INSTANCE not in raw:  # the cheap test first
            continue
        environ = raw.split(b"\0")
        if mark not in environ:
            continue
        instance = next((v[len(_INSTANCE):] for v in environ if v.startswith(_INSTANCE)), None)
        pid = int(entry.name)
        ticks = _start_ticks(pid)
        if instance is None or ticks is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = "?"
        found.append(Member(pid, ticks, instance.decode(errors="replace"), cmdline))
    return found


def settled(marker: str, grace: float = 1.0) -> list[Member]:
    """The instance processes of the session ``marker`` still living after ``grace``
    seconds: one killed a moment ago (a leftover the plugin sent SIGKILL as it forgot its
    instance) may not have died yet, and is not a leak. Returns at once when there is
    none."""
    return settled_with(f"{MARKER}={marker}", grace)


def settled_with(variable: str, grace: float = 1.0) -> list[Member]:
    """:func:`instances_with` ``variable`` that still live after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    found = instances_with(variable)
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = instances_with(variable)
    return found


def kill(found: list[Member]) -> None:
    """SIGKILL each process group of ``found`` (each instance leads its own), and reap
    those that are children of this process (plugins run in the test process)."""
    own = os.getpgrp()
    for member in found:
        if _start_ticks(member.pid) != member.start_ticks:
            continue  # died meanwhile: the pid may be another process's now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(member.pid)
            if group == own:
                os.kill(member.pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
    for member in found:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(member.pid, os.WNOHANG)


def report(found: list[Member], where: str) -> str:
    lines = [f"{len(found)} instance process(es) outlived {where} (now killed):"]
    lines += [f"  {m}" for m in sorted(found, key=lambda m: (m.instance, m.pid))]
    return "\n".join(lines)
