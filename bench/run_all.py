"""Run every benchmark in this directory, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

failed = []
for script in ("cli_coldstart.py", "rpc_throughput.py", "server_baseline.py", "idle_rss.py",
               "group_converge.py", "group_steady.py", "metrics_scrape.py", "process_group.py",
               "manager_failover.py", "chaos_soak.py", "alert_eval.py",
               # these two need root, dockerd and busybox-static
               "docker_provision.py", "tiny_images.py",
               # this one needs qemu-system-x86, qemu-utils and linux-image-amd64
               "qemu_group.py"):
    print(f"## {script}", flush=True)
    done = subprocess.run([sys.executable, "-m", f"bench.{script[:-3]}"],
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        failed.append(script)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
