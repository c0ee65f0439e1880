"""RPC throughput of the file instance plugin: `Instance.DescribeInstances` calls per second
from one client on one keep-alive connection, with 10 instances, and the latency
percentiles.

The client is a plain `http.client` loop over AF_UNIX with a prebuilt body, so the figure
measures the plugin, not our client.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.stack import timed_calls

BODY = (b'{"jsonrpc":"2.0","method":"Instance.DescribeInstances",'
        b'"params":{"Type":"","Tags":{},"Properties":false},"id":1}')


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("h")
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        self.sock = sock


def run(sock: str, calls: int) -> tuple[float, list[float]]:
    conn = UnixConnection(sock)
    headers = {"Content-Type": "application/json"}
    return timed_calls(conn, BODY, headers, b'"Descriptions"', calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    infrakit = str(Path(sys.executable).parent / "infrakit")
    home = tempfile.mkdtemp(prefix="ikb", dir="/tmp")
    env = {**os.environ, "INFRAKIT_HOME": home}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    try:
        subprocess.run([infrakit, "plugin", "start", "instance-file"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for i in range(10):
            subprocess.run([infrakit, "instance", "--name", "instance-file", "provision", "-"],
                           input=f'{{"Tags": {{"n": "{i}"}}}}'.encode(), env=env, check=True,
                           stdout=subprocess.DEVNULL)
        sock = os.path.join(home, "plugins", "instance-file")
        run(sock, 2000)  # warm up
        for r in range(args.rounds):
            rps, lat = run(sock, args.calls)
            pct = {p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1e3 for p in (50, 99)}
            print(f"round {r + 1}: {rps:7.0f} calls/s  p50 {pct[50]:.3f} ms  p99 {pct[99]:.3f} ms"
                  f"  max {lat[-1] * 1e3:.2f} ms  (n={args.calls}, 10 instances)")
    finally:
        subprocess.run([infrakit, "plugin", "stop", "--force", "instance-file"], env=env,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
