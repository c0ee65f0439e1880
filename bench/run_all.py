"""Run every benchmark in this directory, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

for script in ("cli_coldstart.py", "rpc_throughput.py", "server_baseline.py", "idle_rss.py",
               "group_converge.py", "group_steady.py", "process_group.py"):
    print(f"## {script}", flush=True)
    subprocess.run([sys.executable, "-m", f"bench.{script[:-3]}"], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
