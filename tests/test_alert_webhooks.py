"""A manager POSTs its groups' alerts to webhooks in Alertmanager's format: firing when a
condition has lasted its time, resolved when it ends, retried when the receiver fails, and
sent only by the leader. A real manager process, real plugin processes and a real group;
the receiver is a small HTTP server on 127.0.0.1 in the test."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, answers_handshake, wait_until

POLL = "0.2"
NEVER = "0001-01-01T00:00:00Z"
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it, and answers
    HTTP ``failure`` to the first ``failing`` of them."""

    def __init__(self, failing: int = 0, failure: int = 500) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failing = failing
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fail = received.failing > 0
                received.failing -= fail
                if not fail:
                    received.bodies.append(body)
                self.send_response(failure if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"

    def alerts(self, name: str, status: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(body, alert) for each alert named ``name`` received with ``status``."""
        return [(body, a) for body in list(self.bodies) for a in body["alerts"]
                if a["labels"]["alertname"] == name and a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def start_manager(procs: Processes, home: Path, receiver: Receiver, log: str,
                  lead: bool = True) -> Any:
    proc = procs.spawn([PY, "-m", "infrakit", "manager", "--alert-webhook", receiver.url,
                        "--alert-for", "1"], home / "test-logs" / log,
                       env=None)
    if lead:
        wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
                   what="the manager to lead")
    return proc


def commit(home: Path, command: str, size: int = 2) -> None:
    props = {"Allocation": {"Size": size},
             "Instance": {"Plugin": "instance-process",
                          "Properties": {"Command": command, "StopGrace": 1}},
             "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}
    with RPCClient(home / "plugins" / "group", timeout=30) as rpc:
        GroupClient(rpc).commit_group(GroupSpec(id="web", properties=props), False)


def converged(home: Path) -> bool:
    with RPCClient(home / "plugins" / "group", timeout=30) as rpc:
        return GroupClient(rpc).describe_status("web").converged


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", POLL)
    monkeypatch.setenv("INFRAKIT_CALL_TIMEOUT", "3")


@pytest.mark.usefixtures("env")
def test_a_crash_loop_fires_in_alertmanagers_format_then_resolves_once_fixed(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path,
        receivers: list[Receiver]) -> None:
    start_plugin("instance-process")
    start_plugin("flavor-vanilla")
    receiver = Receiver(failing=1)  # the first POST fails: it is tried again
    receivers.append(receiver)
    start_manager(procs, home, receiver, "manager.log")
    try:
        commit(home, "echo starting; exit 2")
        [(body, firing)] = wait_until(
            lambda: receiver.alerts("InfrakitGroupCrashLooping", "firing"), 30,
            what="the crash loop to fire")
        assert body["version"] == "4" and body["status"] == "firing"
        assert body["groupKey"] == '{}:{alertname="InfrakitGroupCrashLooping", group="web"}'
        assert body["groupLabels"] == {"alertname": "InfrakitGroupCrashLooping",
                                       "group": "web"}
        assert body["truncatedAlerts"] == 0
        assert firing["labels"] == {"alertname": "InfrakitGroupCrashLooping", "group": "web",
                                    "severity": "critical"}
        assert firing["annotations"]["summary"] == "Group web is crash looping"
        words = firing["annotations"]["description"]
        assert "keep dying or failing to launch" in words
        assert "exited with status 2" in words and "last output: starting" in words
        assert "`infrakit group events web`" in words
        assert re.fullmatch(RFC3339, firing["startsAt"]) and firing["endsAt"] == NEVER
        log = (home / "test-logs" / "manager.log").read_text()
        assert "the receiver answered HTTP 500" in log and "trying again" in log
        assert "s3cret" not in log, "the webhook's query string reached the log"

        commit(home, "sleep 600")  # fixed: a new config launches at once
        [(body, resolved)] = wait_until(
            lambda: receiver.alerts("InfrakitGroupCrashLooping", "resolved"), 30,
            what="the crash loop to resolve")
        assert body["status"] == "resolved"
        assert resolved["fingerprint"] == firing["fingerprint"]
        assert resolved["startsAt"] == firing["startsAt"]
        assert re.fullmatch(RFC3339, resolved["endsAt"])
        assert len(receiver.alerts("InfrakitGroupCrashLooping", "firing")) == 1
    finally:
        cli("group", "destroy", "web")


@pytest.mark.usefixtures("env")
def test_only_the_leader_sends_and_its_successor_takes_over(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path,
        receivers: list[Receiver]) -> None:
    start_plugin("instance-process")
    flavor = start_plugin("flavor-vanilla")
    first, second = Receiver(), Receiver()
    receivers += [first, second]
    leader = start_manager(procs, home, first, "m1.log")
    start_manager(procs, home, second, "m2.log", lead=False)
    wait_until(lambda: "waiting to lead" in (home / "test-logs" / "m2.log").read_text(), 15,
               what="the second manager to wait")
    try:
        commit(home, "sleep 600", size=1)
        wait_until(lambda: converged(home), 15, what="the group to converge")
        flavor.proc.send_signal(signal.SIGTERM)
        flavor.proc.wait(10)
        [(_, down)] = wait_until(lambda: first.alerts("InfrakitPluginDown", "firing"), 20,
                                 what="the plugin to be alerted on as down")
        assert down["labels"] == {"alertname": "InfrakitPluginDown", "group": "web",
                                  "plugin": "flavor-vanilla", "seen_by": "group",
                                  "severity": "critical"}
        assert down["annotations"]["summary"] == "Plugin flavor-vanilla is not reachable"
        assert "Group web cannot reach plugin flavor-vanilla" in \
            down["annotations"]["description"]
        assert "no plugin named 'flavor-vanilla' is running" in \
            down["annotations"]["description"]
        assert second.bodies == [], "a manager that does not lead sent alerts"

        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        wait_until(lambda: second.alerts("InfrakitPluginDown", "firing"), 30,
                   what="the new leader to send what still fires")
        start_plugin("flavor-vanilla")
        [(body, _)] = wait_until(lambda: second.alerts("InfrakitPluginDown", "resolved"), 20,
                                 what="the plugin down alert to resolve")
        assert body["status"] == "resolved"
    finally:
        cli("group", "destroy", "web")
