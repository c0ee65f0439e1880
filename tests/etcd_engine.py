"""A private etcd for tests: one member on 127.0.0.1 ports, data in a temp dir, stopped
and removed at the end (Debian's etcd-server package)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def etcd_problem() -> str | None:
    """Why a private etcd cannot run here, or None."""
    return None if shutil.which("etcd") else "etcd is not installed (Debian: etcd-server)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_etcd() -> Iterator[str]:
    """Start an etcd member; yields its client URL."""
    data = Path(tempfile.mkdtemp(prefix="iketcd", dir="/tmp"))
    client, peer = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client}"
    log = open(data / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["etcd", "--name", "t", "--data-dir", str(data / "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("etcd did not start: "
                                   + (data / "etcd.log").read_text()[-2000:])
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
