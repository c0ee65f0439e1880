"""Peak resident memory (VmHWM) of each built-in plugin after start-up, a handshake and a
few calls, then a short idle period."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    infrakit = str(Path(sys.executable).parent / "infrakit")
    home = tempfile.mkdtemp(prefix="ikb", dir="/tmp")
    env = {**os.environ, "INFRAKIT_HOME": home}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    kinds = ["instance-file", "flavor-vanilla"]
    try:  # a plugin that fails to start must not leave those started before it
        subprocess.run([infrakit, "plugin", "start", *kinds], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for _ in range(3):
            subprocess.run([infrakit, "instance", "--name", "instance-file", "provision", "-"],
                           input=b'{"Tags": {"a": "b"}}', env=env, check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run([infrakit, "plugin", "ls"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        time.sleep(2)
        for kind in kinds:
            pid = int(Path(home, "plugins", f"{kind}.pid").read_text())
            print(f"{kind:16s} peak RSS (VmHWM) {vm_hwm_mb(pid):5.1f} MB")
    finally:
        subprocess.run([infrakit, "plugin", "stop", "--force", *kinds], env=env,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
