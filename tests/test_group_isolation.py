"""One group's trouble is its own: a group whose instance plugin hangs (a real plugin
process, stopped with SIGSTOP: it accepts connections and never answers) or is gone
(killed) does not delay the passes of the other groups of the same group plugin, nor
their scaling. Real plugin processes over real sockets, the group polling fast."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import GroupAPI
from infrakit.spi.errors import PluginError
from tests.conftest import Plugin, StartPlugin
from tests.helpers import wait_until

POLL = 0.2
HEALTHY = [f"web{i}" for i in range(5)]


def spec(gid: str, size: int, instance: str = "instance-file") -> GroupSpec:
    return GroupSpec(id=gid, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": instance, "Properties": {"Note": gid}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin,
          ) -> Iterator[tuple[GroupAPI, Plugin, Plugin]]:
    """The group plugin's client, and the two instance plugins that will fail it:
    ``instance-stuck`` and ``instance-gone`` (both the file plugin, under other names)."""
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", str(POLL))
    monkeypatch.setenv("INFRAKIT_CALL_TIMEOUT", "60")  # longer than the test
    start_plugin("instance-file")
    stuck = start_plugin("instance-file", "instance-stuck")
    gone = start_plugin("instance-file", "instance-gone")
    start_plugin("flavor-vanilla")
    plugin = start_plugin("group")
    with RPCClient(plugin.path, timeout=30) as rpc:
        try:
            yield GroupClient(rpc), stuck, gone
        finally:
            os.kill(stuck.proc.pid, signal.SIGCONT)


def test_a_hung_or_dead_instance_plugin_stalls_only_its_own_group(
        group: tuple[GroupAPI, Plugin, Plugin]) -> None:
    client, stuck, gone = group
    for gid in HEALTHY:
        client.commit_group(spec(gid, 2), False)
    client.commit_group(spec("stuck", 2, "instance-stuck"), False)
    client.commit_group(spec("gone", 2, "instance-gone"), False)
    every = [*HEALTHY, "stuck", "gone"]
    wait_until(lambda: all(client.describe_status(g).converged for g in every), 15,
               what="every group to converge")

    os.kill(stuck.proc.pid, signal.SIGSTOP)
    gone.proc.kill()
    gone.proc.wait(10)
    time.sleep(2 * POLL)  # the stuck group's pass is now waiting for its plugin
    before = {g: client.describe_status(g).passes for g in HEALTHY}
    started = time.monotonic()
    wait_until(lambda: all(client.describe_status(g).passes >= before[g] + 5
                           for g in HEALTHY), 5, what="5 more passes of every other group")
    # 5 passes at 0.2 s: about 1 s, however long the stuck plugin keeps its group waiting
    assert time.monotonic() - started < 4

    client.commit_group(spec("web0", 4), False)
    wait_until(lambda: client.describe_status("web0").converged
               and len(client.describe_status("web0").members) == 4, 5,
               what="web0 to scale to 4 beside the stuck group")
    with pytest.raises(PluginError, match="Instance plugin 'instance-gone' is not reachable"):
        client.describe_status("gone")
