"""Stacks that several test files start the same way: a local manager over instance-file
and flavor-vanilla, and the reference's own binaries (built from its v0.5 tag)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Processes, StartPlugin
from tests.helpers import PY, answers_handshake, require_engine, wait_until

REFERENCE = Path("/work/orig/src/github.com/docker/infrakit/build")
"""The reference's binaries, built from its v0.5 tag."""


def reference_binary(name: str) -> Path:
    """The reference's binary ``name``; skips (fails under INFRAKIT_REQUIRE_ENGINES=1) if
    it is not built."""
    binary = REFERENCE / name
    require_engine(None if os.access(binary, os.X_OK) else
                   f"the reference's {name} is not built at {binary}")
    return binary


def start_local_manager(procs: Processes, start_plugin: StartPlugin, home: Path) -> None:
    """instance-file, flavor-vanilla and a manager leading on the default store."""
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    procs.spawn([PY, "-m", "infrakit", "manager"], home / "test-logs" / "manager.log")
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to lead")


def start_reference_group(procs: Processes, start_plugin: StartPlugin, home: Path,
                          plugins_dir: Path) -> subprocess.Popen[bytes]:
    """instance-file and flavor-vanilla (ours) under the reference's group plugin."""
    group = reference_binary("infrakit-group-default")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    log = home / "test-logs" / "group.log"
    proc = procs.spawn([str(group), "--poll-interval", "200ms"], log,
                       env={**os.environ, "INFRAKIT_PLUGINS_DIR": str(plugins_dir)})
    procs.wait_ready("group", plugins_dir / "group", proc, log)
    return proc
