"""Memory, CPU and pids limits for a process instance, through Linux cgroups (v2, or the
v1 memory, cpu and pids hierarchies).

A limit that cannot be enforced is an error, never a silent no-op: a user who asks for
64 MB of memory must not get an unlimited process.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec

from infrakit.spi.errors import PluginError
from infrakit.spi.types import Wire

CPU_PERIOD_US = 100_000


class Limits(Wire, kw_only=True, forbid_unknown_fields=True):
    memory_mb: int | None = msgspec.field(default=None, name="MemoryMB")
    cpus: float | None = msgspec.field(default=None, name="CPUs")
    pids: int | None = None

    def check(self) -> None:
        for name, value in (("MemoryMB", self.memory_mb), ("CPUs", self.cpus),
                            ("Pids", self.pids)):
            if value is not None and value <= 0:
                raise PluginError(f"Properties.Limits.{name}: must be positive")

    def wanted(self) -> dict[str, str]:
        """Controller name -> the setting, for the limits that are set."""
        out = {}
        if self.memory_mb is not None:
            out["memory"] = str(self.memory_mb * 1024 * 1024)
        if self.cpus is not None:
            out["cpu"] = str(int(self.cpus * CPU_PERIOD_US))
        if self.pids is not None:
            out["pids"] = str(self.pids)
        return out


def cgroup_root() -> Path:
    """Where cgroups are mounted: ``$INFRAKIT_CGROUP_ROOT``, else ``/sys/fs/cgroup``."""
    return Path(os.environ.get("INFRAKIT_CGROUP_ROOT", "/sys/fs/cgroup"))


_V2_FILES = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
_V1_FILES = {"memory": "memory.limit_in_bytes", "pids": "pids.max",
             "cpu": "cpu.cfs_quota_us"}


def _unavailable(root: Path, controllers: list[str], why: str) -> PluginError:
    return PluginError(f"Properties.Limits: cgroups are not available here ({why} under "
                       f"{root}), so the {', '.join(controllers)} limit cannot be enforced; "
                       "remove Limits or run where cgroups are mounted and writable")


def check_available(limits: Limits) -> None:
    """Refuse limits this machine cannot enforce."""
    wanted = list(limits.wanted())
    if not wanted:
        return
    root = cgroup_root()
    if (root / "cgroup.controllers").exists():
        have = (root / "cgroup.controllers").read_text().split()
        missing = [c for c in wanted if c not in have]
        if missing:
            raise _unavailable(root, missing, "no such controller")
        if not os.access(root, os.W_OK):
            raise _unavailable(root, wanted, "not writable")
        return
    missing = [c for c in wanted if not (root / c / "cgroup.procs").exists()]
    if missing:
        raise _unavailable(root, missing, "no such hierarchy")
    unwritable = [c for c in wanted if not os.access(root / c, os.W_OK)]
    if unwritable:
        raise _unavailable(root, unwritable, "not writable")


def create(plugin: str, instance: str, limits: Limits) -> list[str]:
    """Make the instance's cgroups with its limits; returns their directories, into whose
    ``cgroup.procs`` the instance writes its own pid before it runs anything. ``plugin``
    must name this plugin's state uniquely on the machine; an empty cgroup left by a crash
    is reused."""
    wanted = limits.wanted()
    if not wanted:
        return []
    check_available(limits)
    root = cgroup_root()
    made: list[str] = []
    try:
        if (root / "cgroup.controllers").exists():
            parent = root / f"infrakit-{plugin}"
            parent.mkdir(exist_ok=True)
            enable = " ".join(f"+{c}" for c in wanted)
            for level in (root, parent):
                (level / "cgroup.subtree_control").write_text(enable)
            group = _fresh(parent / instance)
            made.append(str(group))
            for controller, value in wanted.items():
                setting = f"{value} {CPU_PERIOD_US}" if controller == "cpu" else value
                (group / _V2_FILES[controller]).write_text(setting)
        else:
            for controller, value in wanted.items():
                group = _fresh(root / controller / "infrakit" / plugin / instance)
                made.append(str(group))
                if controller == "cpu":
                    (group / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (group / _V1_FILES[controller]).write_text(value)
    except OSError as exc:
        remove(made)
        raise PluginError(f"Properties.Limits: cannot set up cgroups under {root}: "
                          f"{exc.strerror}") from None
    return made


def existing(plugin: str, instance: str) -> list[str]:
    """The cgroups :func:`create` makes for ``instance`` that are there: those of an
    instance whose record was lost."""
    root = cgroup_root()
    made = [root / f"infrakit-{plugin}" / instance]
    made += [root / controller / "infrakit" / plugin / instance for controller in _V1_FILES]
    return [str(group) for group in made if group.is_dir()]


def _fresh(group: Path) -> Path:
    group.mkdir(parents=True, exist_ok=True)
    if (group / "cgroup.procs").read_text().strip():
        raise PluginError(f"Properties.Limits: cgroup {str(group)!r} already holds processes")
    return group


def remove(groups: list[str], wait: float = 2.0) -> None:
    """Remove the instance's cgroups once their processes are gone (a cgroup empties a
    moment after its last process is reaped)."""
    deadline = time.monotonic() + wait
    for group in groups:
        while True:
            try:
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
    with contextlib.suppress(OSError):  # v1: the per-plugin parents, when empty
        for group in groups:
            os.rmdir(os.path.dirname(group))
