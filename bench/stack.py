"""Built-in plugins started in a throw-away INFRAKIT_HOME for one benchmark, as a user
starts them (``infrakit plugin start``), and stopped and removed after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
def plugin_stack(*kinds: str, poll: float, parent: str | None = None,
                 extra_env: dict[str, str] | None = None,
                 supervise: bool = True) -> Iterator[Stack]:
    """Start ``kinds`` with the group's poll interval ``poll`` (and ``extra_env`` in their
    environment), each under its supervisor unless ``supervise`` is False; stop them at
    the end."""
    infrakit = str(Path(sys.executable).parent / "infrakit")
    home = Path(tempfile.mkdtemp(prefix=".ikb", dir=parent or Path.home()))
    env = {**os.environ, **(extra_env or {}), "INFRAKIT_HOME": str(home),
           "INFRAKIT_GROUP_POLL": f"{poll:g}"}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    subprocess.run([infrakit, "plugin", "start", *kinds,
                    *([] if supervise else ["--no-supervise"])], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        yield Stack(home, env)
    finally:
        subprocess.run([infrakit, "plugin", "stop", *reversed(kinds)], env=env,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
