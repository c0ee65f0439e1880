"""Helpers shared by the tests: polling, raw HTTP over AF_UNIX, and process control.

Everything here talks to real processes over real UNIX sockets; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PY = sys.executable
JSON_HEADERS = {"Content-Type": "application/json"}


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a UNIX socket, sending ``Host: h`` like the Go client."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        super().__init__("h", timeout=timeout)
        self._path = os.fspath(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class HTTPAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    sock: Path, body: bytes | None = None, *, method: str = "POST", path: str = "/",
    headers: dict[str, str] | None = None, timeout: float = 10.0,
) -> HTTPAnswer:
    """One HTTP request on a fresh connection."""
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request(method, path, body, JSON_HEADERS if headers is None else headers)
        resp = conn.getresponse()
        data = resp.read()
        return HTTPAnswer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def post_json(sock: Path, payload: Any, timeout: float = 10.0) -> HTTPAnswer:
    return http_request(sock, json.dumps(payload).encode(), timeout=timeout)


def rpc(sock: Path, method: str, params: Any = None, rid: Any = 1, timeout: float = 10.0) -> Any:
    """Send one JSON-RPC request; return the whole decoded response envelope."""
    answer = post_json(
        sock, {"jsonrpc": "2.0", "method": method, "params": {} if params is None else params,
               "id": rid}, timeout)
    assert answer.status == 200, (answer.status, answer.body)
    return answer.json()


def result_of(sock: Path, method: str, params: Any = None) -> Any:
    """The ``result`` of a call that must succeed."""
    resp = rpc(sock, method, params)
    assert "error" not in resp, resp
    return resp["result"]


def error_of(sock: Path, method: str, params: Any = None, rid: Any = 1) -> dict[str, Any]:
    """The ``error`` of a call that must fail (checking the id is echoed)."""
    resp = rpc(sock, method, params, rid)
    assert "result" not in resp, resp
    assert resp["id"] == rid
    err: dict[str, Any] = resp["error"]
    return err


def answers_handshake(sock: Path) -> bool:
    """Whether a plugin answers ``Handshake.Implements`` on ``sock`` right now."""
    try:
        resp = rpc(sock, "Handshake.Implements", timeout=2.0)
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return "result" in resp


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists" until reaped; look at its state when we can
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int:
    """Signal a child, wait for it, SIGKILL it if it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process we started that is not our child (a ``plugin start`` daemon)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def supervisors_of(home: Path) -> list[int]:
    """The live supervisors (``python -m infrakit.supervise``) of plugins under ``home``,
    found by their command lines, whether or not they have written their pid files."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"infrakit.supervise" in args and any(
                a.startswith(os.fsencode(home) + b"/") for a in args):
            found.append(int(entry.name))
    return sorted(found)


@contextlib.contextmanager
def builtin_plugins(*kinds: str) -> Iterator[dict[str, Path]]:
    """Run built-in plugins in a private, short INFRAKIT_HOME for as long as the context
    lasts (for fixtures wider than one test); yields each kind's socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFRAKIT_")}
    with private_plugins(lambda home: {kind: [PY, "-m", "infrakit", "plugin", "run", kind]
                                       for kind in kinds}, env) as paths:
        yield paths


@contextlib.contextmanager
def private_plugins(commands: Callable[[Path], dict[str, list[str]]],
                    env: dict[str, str] | None = None) -> Iterator[dict[str, Path]]:
    """Run plugin processes, the commands that ``commands`` gives for a private, short
    INFRAKIT_HOME, until each answers on ``<home>/plugins/<name>``, for as long as the
    context lasts; yields each name's socket, and stops them and removes the home after."""
    home = Path(tempfile.mkdtemp(prefix="ik", dir="/tmp"))
    env = {**(os.environ if env is None else env), "INFRAKIT_HOME": str(home)}
    children: list[subprocess.Popen[bytes]] = []
    try:
        paths = {}
        for name, argv in commands(home).items():
            with open(home / f"{name}.log", "wb") as log:
                children.append(subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT))
            paths[name] = home / "plugins" / name
        for (name, path), proc in zip(paths.items(), children, strict=True):
            def ready(path: Path = path, proc: subprocess.Popen[bytes] = proc) -> bool:
                assert proc.poll() is None, f"plugin exited with {proc.returncode}"
                return path.exists() and answers_handshake(path)

            wait_until(ready, 15.0, what=f"{name} to answer")
        yield paths
    finally:
        for proc in children:
            stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


def shape(value: Any) -> Any:
    """The shape of a JSON value: keys and nesting kept, scalars replaced by their kind,
    ``null`` kept as ``None``; lists become the list of their elements' shapes."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


#: Maps whose keys are data, not field names: only their kind is compared.
FREE_FORM = frozenset({"Tags", "Properties", "Labels"})


def assert_same_shape(ours: Any, sample: Any, where: str = "$") -> None:
    """Same keys at every level and nulls exactly where the sample has them. Lists may
    differ in length; each of our elements must have the shape of the sample's first.
    Free-form maps (``Tags``, ``Properties``) need only be of the same kind."""
    if sample is None or ours is None:
        assert ours is None and sample is None, f"{where}: ours {ours!r}, sample {sample!r}"
        return
    if where.rsplit(".", 1)[-1] in FREE_FORM:
        assert type(ours) is type(sample), f"{where}: ours {ours!r}, sample {sample!r}"
        return
    if isinstance(sample, dict):
        assert isinstance(ours, dict), f"{where}: expected an object, got {ours!r}"
        assert set(ours) == set(sample), (
            f"{where}: keys differ: ours {sorted(ours)}, sample {sorted(sample)}")
        for key in sample:
            assert_same_shape(ours[key], sample[key], f"{where}.{key}")
        return
    if isinstance(sample, list):
        assert isinstance(ours, list), f"{where}: expected an array, got {ours!r}"
        if sample:
            for i, item in enumerate(ours):
                assert_same_shape(item, sample[0], f"{where}[{i}]")
        return
    assert shape(ours) == shape(sample), f"{where}: ours {ours!r}, sample {sample!r}"


def require_engine(problem: str | None) -> None:
    """Skip the test when a real engine it needs is missing (``problem`` says why), or
    fail it when the environment requires every engine (CI: ``INFRAKIT_REQUIRE_ENGINES=1``)."""
    if problem is None:
        return
    import pytest

    if os.environ.get("INFRAKIT_REQUIRE_ENGINES") == "1":
        pytest.fail(f"{problem} (INFRAKIT_REQUIRE_ENGINES=1)")
    pytest.skip(problem)


def i386_problem(directory: Path) -> str | None:
    """Why this kernel cannot run an i386 program, or None: it runs a tiny one from
    ``directory``, which the kernel refuses (ENOEXEC) without 32-bit support."""
    import errno

    from infrakit.images.tinyelf import hello32

    probe = directory / "i386-probe"
    probe.write_bytes(hello32(b""))
    probe.chmod(0o755)
    try:
        subprocess.run([probe], check=True, timeout=10)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            raise
        return ("this kernel cannot run i386 programs: it lacks CONFIG_IA32_EMULATION, "
                "or boots with ia32_emulation=false")
    finally:
        probe.unlink()
    return None
