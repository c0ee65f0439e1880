"""What the console's browser tests stand on: a manager with a TLS listener and a tokens
file of three roles, the process instance plugin and the vanilla flavor, and headless
Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, answers_handshake, require_engine, wait_until
from tests.test_manager_tcp import free_port, self_signed

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
"""Where the browser tests leave their screenshots (ignored by git)."""
TOKENS = {"ada": ("admin", "ada-token-0123456789abcdef"),
          "olive": ("operator", "olive-token-0123456789abcdef"),
          "vic": ("viewer", "vic-token-0123456789abcdef")}


def chromium_problem() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install {package} (scripts/install-system-deps.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


def browser() -> Any:
    """Headless Chromium, its console logged, trusting the test's self-signed certificate."""
    require_engine(chromium_problem())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.accept_insecure_certs = True
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@dataclass
class Stack:
    home: Path
    cli: Cli
    url: str
    """The console's root: https://127.0.0.1:PORT/ui/."""
    spec: Path

    def commit(self, size: int, sleep: str = "3600") -> str:
        self.spec.write_text(json.dumps({"ID": "web", "Properties": {
            "Allocation": {"Size": size}, "UpdatePause": "0s",
            "Instance": {"Plugin": "instance-process",
                         "Properties": {"Command": ["sleep", sleep], "StopGrace": 1}},
            "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}))
        done = self.cli("group", "commit", str(self.spec))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def destroy(self) -> None:
        """Destroy the group, if committed: its members are processes of the test's."""
        if self.spec.exists():
            self.cli("group", "destroy", "web")

    def member_pid(self, member: str) -> int:
        record = self.home / "instance-process" / "instance-process" / f"{member}.json"
        pid = int(json.loads(record.read_text())["PID"])
        assert pid > 1
        return pid

    def members(self) -> set[str]:
        """The group's members, as the manager says."""
        from infrakit.rpc.client import RPCClient
        from infrakit.rpc.typed import GroupClient

        with RPCClient(self.home / "plugins" / "group") as rpc:
            return {m.id for m in GroupClient(rpc).describe_status("web").members}

    def kill(self, member: str) -> None:
        os.kill(self.member_pid(member), signal.SIGKILL)


def start_stack(procs: Processes, home: Path, cli: Cli, start_plugin: StartPlugin,
                tmp_path: Path) -> Stack:
    tls = self_signed(tmp_path)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(json.dumps({"tokens": [
        {"name": name, "role": role, "token": token}
        for name, (role, token) in TOKENS.items()]}))
    tokens.chmod(0o600)
    start_plugin("instance-process")
    start_plugin("flavor-vanilla")
    port = free_port()
    env = {**os.environ, "INFRAKIT_GROUP_POLL": "0.5"}
    procs.spawn([PY, "-m", "infrakit", "manager", "--listen", str(port), "--tls-cert",
                 str(tls["cert"]), "--tls-key", str(tls["key"]), "--token-file", str(tokens)],
                home / "test-logs" / "manager.log", env=env)
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to serve")
    return Stack(home, cli, f"https://127.0.0.1:{port}/ui/", tmp_path / "web.json")


class Shots:
    """Screenshots of one test, numbered in the order taken."""

    def __init__(self, driver: Any, test: str) -> None:
        self.driver = driver
        self.directory = ARTIFACTS / test
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.count = 0

    def __call__(self, what: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.directory / f"{self.count:02d}-{what}.png"))


def driven(test: str) -> Iterator[tuple[Any, Shots]]:
    driver = browser()
    shots = Shots(driver, test)
    try:
        yield driver, shots
        logged = driver.get_log("browser")
    finally:
        driver.quit()
    (shots.directory / "browser-console.log").write_text(
        "".join(f"{entry['level']} {entry['message']}\n" for entry in logged))
    # the page's CSP forbids inline script and style: nothing of the page's may need them
    assert not [e for e in logged if "Content Security Policy" in e["message"]], logged


def log_in(driver: Any, stack: Stack, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(stack.url + "login")
    field = driver.find_element(By.ID, "token")
    field.send_keys(TOKENS[name][1])
    driver.find_element(By.ID, "login").click()
    wait_until(lambda: driver.current_url == stack.url, 10, what=f"{name} to log in")


def text_of(driver: Any, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("id", element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def seen(driver: Any, check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check`` held, polling the page."""
    start = time.monotonic()
    wait_until(check, timeout, interval=0.05, what=what)
    return time.monotonic() - start


class Cable:
    """A TCP relay on loopback between the browser and the console that a test can cut,
    as a network drop would: every connection through it is closed at once, and new ones
    are refused until it is joined again."""

    def __init__(self, port: int) -> None:
        import socket

        self._target = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._up = True
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: Any, sink: Any) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def cut(self) -> None:
        import socket

        self._up = False
        with self._lock:
            for end in self._open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                    end.close()
            self._open.clear()

    def join(self) -> None:
        self._up = True

    def close(self) -> None:
        self.cut()
        self._server.close()
