"""``GET /metrics`` of real plugin processes: on the socket of every plugin, and on the TCP
port ``--metrics-listen`` gives; the calls a plugin answered, the groups a group plugin
keeps, and the leadership of a manager, in the Prometheus text format."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec, Spec
from tests.conftest import Cli, StartPlugin
from tests.helpers import http_request, rpc, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(sock: Path) -> Samples:
    answer = http_request(sock, method="GET", path="/metrics", headers={})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, b"{}" if method == "POST" else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_plugin_counts_the_calls_it_answers_by_method_and_outcome(
        instance_file: Path) -> None:
    with RPCClient(instance_file) as conn:
        client = InstanceClient(conn)
        for i in range(3):
            client.provision(Spec(tags={"n": str(i)}))
    assert "error" in rpc(instance_file, "Instance.Destroy", {"Instance": "no-such"})
    assert "error" in rpc(instance_file, "No.Such", {})
    samples = scrape(instance_file)
    assert value(samples, "infrakit_rpc_calls_total", method="Instance.Provision",
                 outcome="ok") == 3
    assert value(samples, "infrakit_rpc_calls_total", method="Instance.Destroy",
                 outcome="error") == 1
    # a method the plugin does not serve is counted, but not by the name the caller sent
    assert value(samples, "infrakit_rpc_calls_total", method="unknown", outcome="error") == 1
    assert not any(labels and ("method", "No.Such") in labels for _, labels in samples)
    assert value(samples, "infrakit_rpc_call_seconds_count", method="Instance.Provision") == 3
    assert value(samples, "infrakit_rpc_call_seconds_bucket", method="Instance.Provision",
                 le="+Inf") == 3
    assert (value(samples, "infrakit_rpc_call_seconds_sum", method="Instance.Provision")
            or 0) > 0
    # only GET: a POST to the page is refused, saying so
    assert http_request(instance_file, b"{}", path="/metrics").status == 405


def test_the_metrics_port_serves_the_page_alone_in_plain_http(
        start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("INFRAKIT_METRICS_LISTEN", str(port))
    plugin = start_plugin("flavor-vanilla")
    rpc(plugin.path, "Flavor.Validate", {"Properties": {}, "Allocation": {"Size": 1}})
    status, body = get(port)
    assert status == 200
    samples = parse(body.decode())
    assert value(samples, "infrakit_rpc_calls_total", method="Flavor.Validate",
                 outcome="ok") == 1
    status, body = get(port, "/", "POST")  # read-only: no call reaches the plugin
    assert status == 404 and b"this port serves GET /metrics" in body
    assert get(port, "/info/api.json")[0] == 404
    assert value(parse(get(port)[1].decode()), "infrakit_rpc_calls_total",
                 method="Flavor.Validate", outcome="ok") == 1


def test_a_bad_or_taken_metrics_port_is_refused_naming_the_option(cli: Cli) -> None:
    bad = cli("plugin", "start", "instance-file", "--metrics-listen", "localhost:http")
    assert bad.returncode == 2
    assert "--metrics-listen: 'localhost:http' is not [HOST:]PORT" in bad.stderr
    from_env = cli("plugin", "start", "instance-file",
                   env={"INFRAKIT_METRICS_LISTEN": "70000"})
    assert "INFRAKIT_METRICS_LISTEN: '70000' is not [HOST:]PORT" in from_env.stderr
    several = cli("plugin", "start", "instance-file", "flavor-vanilla", "--metrics-listen",
                  "9999")
    assert "--metrics-listen: one port serves one plugin" in several.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("plugin", "start", "--no-supervise", "instance-file", "--metrics-listen",
                  str(port))
    assert out.returncode == 1
    assert f"--metrics-listen: cannot listen on 127.0.0.1:{port}: Address already in use" \
        in out.stderr


def test_a_group_plugin_exports_its_groups_and_its_calls_to_other_plugins(
        instance_file: Path, flavor_vanilla: Path, start_plugin: StartPlugin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    group = start_plugin("group").path
    props = {"Allocation": {"Size": 3}, "Instance": {"Plugin": "instance-file"},
             "Flavor": {"Plugin": "flavor-vanilla"}}
    with RPCClient(group) as conn:
        client = GroupClient(conn)
        client.commit_group(GroupSpec(id="web", properties=props), False)
        wait_until(lambda: value(scrape(group), "infrakit_group_members", group="web",
                                 state="healthy") == 3, 10, what="3 healthy members")
        victim = (client.describe_group("web").instances or [])[0].id
        client.destroy_instances("web", [victim], False)
        wait_until(lambda: value(scrape(group), "infrakit_group_provisions_total",
                                 group="web", reason="replacement") == 1, 10,
                   what="the replacement to be counted")
        events = [(e.kind, e.reason) for e in client.events("web", None, None, 100)]
    samples = scrape(group)
    assert value(samples, "infrakit_group_provisions_total", group="web",
                 reason="scale-out") == 3
    assert value(samples, "infrakit_group_destroys_total", group="web",
                 reason="by request") == 1
    # the same words in the history as in the labels
    assert ("destroyed", "by request") in events
    assert ("provisioned", "replacement: back to 3 members") in events
    assert sum(kind == "provisioned" and reason.startswith("scale-out: ")
               for kind, reason in events) == 3
    wait_until(lambda: value(scrape(group), "infrakit_group_converged", group="web") == 1, 10,
               what="the group to converge again")
    samples = scrape(group)
    assert value(samples, "infrakit_group_desired_members", group="web") == 3
    for state, count in (("healthy", 3), ("unhealthy", 0), ("starting", 0), ("unknown", 0),
                         ("outdated", 0)):
        assert value(samples, "infrakit_group_members", group="web", state=state) == count
    assert value(samples, "infrakit_group_update", group="web", state="idle") == 1
    assert value(samples, "infrakit_group_update", group="web", state="halted") == 0
    assert value(samples, "infrakit_group_breaker_open", group="web") == 0
    assert value(samples, "infrakit_group_backoff", group="web") == 0
    assert value(samples, "infrakit_group_launch_failures_total", group="web") == 0
    assert abs((value(samples, "infrakit_group_last_reconcile_timestamp_seconds", group="web")
                or 0) - time.time()) < 5
    assert (value(samples, "infrakit_group_reconcile_seconds_count") or 0) >= 2
    assert value(samples, "infrakit_plugin_up", plugin="instance-file") == 1
    assert (value(samples, "infrakit_plugin_call_seconds_count", plugin="instance-file",
                  method="Instance.ProvisionEach") or 0) >= 2
    assert (value(samples, "infrakit_plugin_call_seconds_count", plugin="flavor-vanilla",
                  method="Flavor.HealthyEach") or 0) >= 1
    assert not any(name.startswith("infrakit_manager_") for name, _ in samples)


def test_a_group_plugin_says_when_a_plugin_it_calls_is_down(
        flavor_vanilla: Path, start_plugin: StartPlugin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    instance = start_plugin("instance-file")
    group = start_plugin("group").path
    props = {"Allocation": {"Size": 1}, "Instance": {"Plugin": "instance-file"},
             "Flavor": {"Plugin": "flavor-vanilla"}}
    with RPCClient(group) as conn:
        GroupClient(conn).commit_group(GroupSpec(id="db", properties=props), False)
    wait_until(lambda: value(scrape(group), "infrakit_group_converged", group="db") == 1, 10,
               what="the group to converge")
    instance.proc.kill()
    instance.proc.wait(5)
    wait_until(lambda: value(scrape(group), "infrakit_plugin_up", plugin="instance-file") == 0,
               10, what="the instance plugin to be down")


def test_a_manager_says_it_leads(start_plugin: StartPlugin,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("INFRAKIT_METRICS_LISTEN", f"127.0.0.1:{port}")
    monkeypatch.setenv("INFRAKIT_MANAGER_STORE", "sqlite")
    start_plugin("manager", "group")
    samples = parse(get(port)[1].decode())
    assert value(samples, "infrakit_manager_leader") == 1
    assert value(samples, "infrakit_manager_term") == 1


def test_the_page_says_what_prometheus_client_would_say() -> None:
    """The text writer of the page against ``generate_latest``: escaped label values,
    infinities, counters with their creation time, a histogram, an info metric."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        Info,
        generate_latest,
    )

    from infrakit.rpc.metrics import exposition

    registry = CollectorRegistry()
    Counter("made", "things made", ["why"], registry=registry).labels('a "b"\\\nc').inc(3)
    gauge = Gauge("level", "a level\nof two lines", ["k"], registry=registry)
    gauge.labels("up").set(float("inf"))
    gauge.labels("down").set(-0.5)
    Histogram("took_seconds", "durations", registry=registry).observe(0.3)
    Info("build", "the build", registry=registry).info({"version": "1"})
    ours = exposition(registry.collect()).decode()
    assert parse(ours) == parse(generate_latest(registry).decode())
    assert 'made_total{why="a \\"b\\"\\\\\\nc"} 3.0' in ours
    assert "# HELP level a level\\nof two lines" in ours
