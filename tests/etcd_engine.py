"""Private etcd for tests: one member, or a cluster of several, on 127.0.0.1 ports with data
in a temp dir, stopped and removed at the end (Debian's etcd-server package). Members of a
cluster can be stopped and started again, to take quorum away and give it back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def etcd_problem() -> str | None:
    """Why a private etcd cannot run here, or None."""
    return None if shutil.which("etcd") else "etcd is not installed (Debian: etcd-server)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    names: list[str]
    urls: list[str]
    peers: list[str]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, i: int, state: str = "new") -> None:
        """Start member ``i`` (again, with ``state="existing"``) on its own data."""
        cluster = ",".join(f"{n}={p}" for n, p in zip(self.names, self.peers, strict=True))
        with open(self.root / f"{self.names[i]}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                ["etcd", "--name", self.names[i], "--data-dir", str(self.root / self.names[i]),
                 "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
                 "--listen-peer-urls", self.peers[i],
                 "--initial-advertise-peer-urls", self.peers[i],
                 "--initial-cluster", cluster, "--initial-cluster-state", state],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.kill()
        proc.wait()

    def wait_healthy(self, i: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.urls[i]}/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        return
            except OSError:
                pass
            proc = self.procs.get(i)
            if proc is None or proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / f"{self.names[i]}.log").read_text()[-2000:]
                raise RuntimeError(f"etcd member {self.names[i]} is not healthy: {log}")
            time.sleep(0.05)


@contextmanager
def private_etcd_cluster(size: int = 3) -> Iterator[Cluster]:
    """Start ``size`` members that form one cluster; yields it once every member is
    healthy."""
    root = Path(tempfile.mkdtemp(prefix="iketcd", dir="/tmp"))
    cluster = Cluster(root, [f"m{i}" for i in range(size)],
                      [f"http://127.0.0.1:{_free_port()}" for _ in range(size)],
                      [f"http://127.0.0.1:{_free_port()}" for _ in range(size)])
    try:
        for i in range(size):
            cluster.start(i)
        for i in range(size):
            cluster.wait_healthy(i)
        yield cluster
    finally:
        for i in list(cluster.procs):
            cluster.stop(i)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def private_etcd() -> Iterator[str]:
    """Start a one-member etcd; yields its client URL."""
    with private_etcd_cluster(1) as cluster:
        yield cluster.urls[0]
