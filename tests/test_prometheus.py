"""A real Prometheus server scrapes a group plugin's ``--metrics-listen`` port every second,
and its query API sees what the group lives through: three healthy members, two after one
is killed, three again once its replacement is healthy.

The members are process instances that open their port two seconds after they start, with
a TCP health probe: a replacement is "starting", not healthy, for those two seconds (and
the death of a member within its grace holds the next launch for a second), so the gap
lasts several scrapes, without a sleep in the test."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Plugin, Processes, StartPlugin
from tests.helpers import require_engine, wait_until
from tests.test_member_failures import HTTP, POLL, Stack, with_session_killed

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: group
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus server on loopback, scraping one target; its HTTP query API."""

    def __init__(self, procs: Processes, workdir: Path, target: int) -> None:
        workdir.mkdir()
        config = workdir / "prometheus.yml"
        config.write_text(SCRAPE_CONFIG.format(port=target))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = procs.spawn(
            [str(shutil.which("prometheus")), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            workdir / "prometheus.log")
        wait_until(self._ready, 20, interval=0.1, what="Prometheus to be ready")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:
            return answer.read()

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "Prometheus exited"
        try:
            self._get("/-/ready")
        except OSError:
            return False
        return True

    def query(self, expr: str) -> float | None:
        """The value of an instant query with one series, or None when it has none."""
        answer = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})))
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin,
          home: Path) -> Iterator[tuple[Stack, int]]:
    """The plugins of a group of process instances, the group's metrics on a TCP port."""
    require_engine(None if shutil.which("prometheus") else
                   "prometheus is not installed (Debian package prometheus)")
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", str(POLL))
    port = free_port()

    def start(kind: str, name: str | None = None, *extra: str) -> Plugin:
        if kind != "group":
            return start_plugin(kind, name, *extra)
        with monkeypatch.context() as m:
            m.setenv("INFRAKIT_METRICS_LISTEN", f"127.0.0.1:{port}")
            return start_plugin(kind, name, *extra)

    s = Stack(start, home)
    try:
        yield s, port
    finally:
        s.close()


def test_prometheus_sees_a_killed_member_missing_until_its_replacement_is_healthy(
        stack: tuple[Stack, int], procs: Processes, home: Path) -> None:
    group, port = stack
    prometheus = Prometheus(procs, home / "prometheus", port)
    group.commit(3, f"sleep 2; exec {HTTP}", {"TCP": "127.0.0.1:{{ .Properties.Ports.http }}"},
                 HealthGrace=30)

    def healthy() -> float | None:
        return prometheus.query('infrakit_group_members{group="web",state="healthy"}')

    wait_until(lambda: healthy() == 3, 20, interval=0.2, what="Prometheus to see 3 healthy")
    assert prometheus.query('infrakit_group_desired_members{group="web"}') == 3
    assert prometheus.query('infrakit_group_converged{group="web"}') == 1
    victim = sorted(group.alive())[0]
    pid = json.loads((group.state / f"{victim}.json").read_text())["PID"]
    assert pid > 1
    with_session_killed(pid)
    wait_until(lambda: healthy() == 2, 10, interval=0.2, what="Prometheus to see 2 healthy")
    wait_until(lambda: healthy() == 3, 20, interval=0.2, what="Prometheus to see 3 again")
    assert prometheus.query('infrakit_group_member_deaths_total{group="web"}') == 1
    assert prometheus.query(
        'infrakit_group_provisions_total{group="web",reason="replacement"}') == 1
    assert prometheus.query('infrakit_plugin_up{plugin="instance-process"}') == 1
    assert victim not in group.alive()
