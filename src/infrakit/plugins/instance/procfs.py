"""What ``/proc`` tells of the processes an instance plugin started, and the tail of a log
they wrote: shared by the plugins whose instances are local processes (``process``,
``qemu``), which must know a process by its pid *and* its start time (a pid is reused) and
find their instances again after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

OUTPUT_LINES = 20
"""The lines of output an ended instance's report carries."""


class ProcessRecordBase(msgspec.Struct, rename="pascal", kw_only=True):
    """What a plugin's record of an instance that is a local process starts with: the
    instance, and the process it is, known by its pid and the kernel's start time of that
    pid (``/proc/PID/stat`` field 22), since a pid is reused."""

    id: str = msgspec.field(name="ID")
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    tags: dict[str, str] = {}
    pid: int = msgspec.field(name="PID")
    start_ticks: int
    started: float


def stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) of a process, or None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


def alive(pid: int, start_ticks: int) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``start_ticks``: a
    zombie counts as stopped (a process that exited may stay one for a while)."""
    found = stat(pid) if pid > 1 else None
    return found is not None and found[1] == start_ticks and found[0] not in "ZX"


def carrying(variable: str) -> list[int]:
    """The processes whose environment holds ``variable`` (``NAME=value``)."""
    marker = variable.encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.append(int(entry.name))
    return found


def tail(log: Path, lines: int = OUTPUT_LINES) -> list[str]:
    """The last ``lines`` lines of a log (read from its last 8 KiB, never through a link)."""
    try:
        with open(os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            data = f.read()
    except OSError:
        return []
    return [line.decode(errors="replace") for line in data.splitlines()[-lines:]]
