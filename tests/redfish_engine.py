"""Private Redfish BMCs for the tests and the benchmark of ``instance-redfish``: the
sushy-tools emulator (fake driver, extended by ``tests/redfish_emulator.py``) on a free
loopback port, each with its own state directory, its own password file and its own pool
of systems; and a loopback HTTP server of boot images, which the emulator downloads on
InsertMedia as a real BMC would."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers import stop_process
from tests.moto_engine import free_port

START_TIMEOUT = 30.0
USER = "admin"
PASSWORD = "redfish-secret-7d1c"
"""Distinctive, so that a test can tell it appears nowhere the plugin writes."""
LAUNCHER = Path(__file__).with_name("redfish_emulator.py")


def redfish_problem() -> str | None:
    """Why the emulator cannot run here, or None."""
    for module in ("sushy", "sushy_tools", "bcrypt", "flask"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'infrakit-py[redfish]' sushy-tools)"
    return None


def system(name: str, cpus: int, memory_gib: int, model: str = "Emulated 1000",
           sku: str = "EMU-1") -> dict[str, Any]:
    """One system of a pool, powered off."""
    return {"uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.infrakit.test")),
            "name": name, "power_state": "Off", "external_notifier": False,
            "nics": [{"mac": "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3)),
                      "ip": "127.0.0.1"}],
            "cpus": cpus, "memory_gib": memory_gib, "model": model, "sku": sku}


@dataclass
class Emulator:
    """A running emulator."""

    url: str
    proc: subprocess.Popen[bytes]
    state: Path
    systems: list[dict[str, Any]]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import base64

        conn = http.client.HTTPConnection("127.0.0.1", int(self.url.rsplit(":", 1)[1]),
                                          timeout=30)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None,
                         headers)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status < 300, f"{method} {path}: {resp.status} {data!r}"
            return json.loads(data) if data else None
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def power(self, name: str) -> str:
        """A system's power state, as the BMC reports it."""
        return str(self.get(f"/redfish/v1/Systems/{self.uuid(name)}")["PowerState"])

    def reset(self, name: str, kind: str) -> None:
        """Power a system on or off behind the plugin's back."""
        self._call("POST", f"/redfish/v1/Systems/{self.uuid(name)}/Actions/"
                   "ComputerSystem.Reset", {"ResetType": kind})

    def media(self, name: str) -> str | None:
        """The image in a system's virtual CD, if any."""
        cd = self.get(f"/redfish/v1/Systems/{self.uuid(name)}/VirtualMedia/Cd")
        return cd.get("Image") or None

    def uuid(self, name: str) -> str:
        return next(str(s["uuid"]) for s in self.systems if s["name"] == name)

    def counts(self) -> dict[str, int]:
        """Requests served since the last :meth:`zero`, by method and kind of resource."""
        return dict(self._call("GET", "/emulator/counts"))

    def zero(self) -> None:
        self._call("DELETE", "/emulator/counts")


def _answers(url: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=2)
    try:
        conn.request("GET", "/redfish/v1/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _config(state: Path, port: int, systems: list[dict[str, Any]], feature_set: str,
            expand: bool, power_delay: tuple[float, float]) -> Path:
    import bcrypt

    auth = state / "htpasswd"
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    auth.write_text(f"{USER}:{digest}\n")
    config = state / "emulator.conf"
    config.write_text("\n".join([
        "SUSHY_EMULATOR_FAKE_DRIVER = True",
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
        f"SUSHY_EMULATOR_STATE_DIR = {str(state / 'state')!r}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}",
        f"SUSHY_EMULATOR_FEATURE_SET = {feature_set!r}",
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}",
        f"SIZED_EXPAND = {expand!r}",
        f"SIZED_POWER_DELAY = {power_delay!r}",
        ""]))
    return config


@contextlib.contextmanager
def emulator(systems: list[dict[str, Any]], *, feature_set: str = "full",
             expand: bool = True,
             power_delay: tuple[float, float] = (0.2, 1.0)) -> Iterator[Emulator]:
    """An emulator of ``systems`` on a free loopback port, with a state directory of its
    own (the emulator's default one outlives it and is shared); stopped and removed at the
    end."""
    state = Path(tempfile.mkdtemp(prefix="redfish-bmc-"))
    port = free_port()
    config = _config(state, port, systems, feature_set, expand, power_delay)
    env = {**os.environ, "TMPDIR": str(state)}  # where it keeps downloaded images
    env.pop("SUSHY_EMULATOR_CONFIG", None)
    log = state / "emulator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), str(config)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the emulator exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not answer in {START_TIMEOUT:g} s")
            time.sleep(0.05)
        yield Emulator(url, proc, state, systems)
    finally:
        stop_process(proc)
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class Images:
    """A loopback HTTP server of boot images: ``url(name)`` serves a small ISO."""

    root: Path
    base: str = ""
    served: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        path = self.root / name
        if not path.exists():
            path.write_bytes(b"CD001" + name.encode() + bytes(2048))
        return f"{self.base}/{name}"


@contextlib.contextmanager
def image_server() -> Iterator[Images]:
    root = Path(tempfile.mkdtemp(prefix="redfish-images-"))
    images = Images(root)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            images.served.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    images.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="images", daemon=True)
    thread.start()
    try:
        yield images
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(root, ignore_errors=True)
