"""The async client and the typed clients against real plugin processes, and the Group
interface end to end through a small group plugin served by the runtime."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from infrakit.rpc.client import AsyncRPCClient, PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import APPLICATION_ERROR
from infrakit.rpc.typed import (
    AsyncFlavorClient,
    AsyncInstanceClient,
    GroupClient,
    InstanceClient,
)
from infrakit.spi import Allocation, GroupSpec, Health, Index, Spec
from infrakit.spi.errors import CallFailed, Unreachable
from tests.conftest import StartScript
from tests.helpers import rpc

GROUP_PLUGIN = """
import sys
from pathlib import Path
from infrakit.rpc.server import serve
from infrakit.spi import GroupDescription, NotFoundError

class Groups:
    def __init__(self):
        self.specs = {}

    async def commit_group(self, spec, pretend):
        if not spec.id:
            raise ValueError("unreachable: validated below")
        if not pretend:
            self.specs[spec.id] = spec
        return f"Managing {spec.properties['Allocation']['Size']} instances"

    def free_group(self, id):
        self.specs.pop(id)

    def describe_group(self, id):
        if id not in self.specs:
            raise NotFoundError(f"Group '{id}' is not being watched")
        return GroupDescription(instances=[], converged=True)

    def destroy_group(self, id):
        self.free_group(id)

    def inspect_groups(self):
        return list(self.specs.values())

serve("groups", group=Groups(), directory=Path(sys.argv[1]))
"""

SLOW_PLUGIN = """
import sys, time
from pathlib import Path
from infrakit.rpc.server import serve

class Slow:
    def validate(self, properties):
        time.sleep(float(properties))

serve("slow", instance=Slow(), directory=Path(sys.argv[1]))
"""


def test_async_instance_client_round_trip(instance_file: Path) -> None:
    async def scenario() -> None:
        async with AsyncRPCClient(instance_file, timeout=5) as rpc:
            client = AsyncInstanceClient(rpc)
            ids = await asyncio.gather(*(client.provision(Spec(tags={"n": str(i), "g": "x"}))
                                         for i in range(5)))
            assert len(set(ids)) == 5
            await client.label(ids[0], {"role": "leader"})
            leaders = await client.describe_instances({"role": "leader"}, False)
            assert [d.id for d in leaders] == [ids[0]]
            await client.destroy(ids[1])
            left = {d.id for d in await client.describe_instances({"g": "x"}, False)}
            assert left == set(ids) - {ids[1]}
            await client.destroy(ids[1])  # destroyed already: nothing to do, no error
            with pytest.raises(CallFailed) as err:  # but what is gone cannot be labelled
                await client.label(ids[1], {"role": "gone"})
            assert err.value.code == APPLICATION_ERROR
            assert ids[1] in err.value.reason

    asyncio.run(scenario())


def test_async_flavor_client_prepare_and_health(flavor_vanilla: Path) -> None:
    async def scenario() -> None:
        async with AsyncRPCClient(flavor_vanilla, timeout=5) as rpc:
            flavor = AsyncFlavorClient(rpc)
            props = {"Init": ["a", "b"], "Tags": {"tier": "web"}}
            await flavor.validate(props, Allocation(size=2))
            spec = await flavor.prepare(props, Spec(init="base", tags={"x": "1"}),
                                        Allocation(size=2), Index(group="g", sequence=1))
            assert spec.init == "base\na\nb"
            assert spec.tags == {"x": "1", "tier": "web"}

    asyncio.run(scenario())


def test_sync_flavor_health_is_an_enum(flavor_vanilla: Path) -> None:
    from infrakit.rpc.typed import FlavorClient
    from infrakit.spi import Description

    with RPCClient(flavor_vanilla) as rpc:
        assert FlavorClient(rpc).healthy({}, Description(id="i-1")) is Health.HEALTHY


def test_unreachable_socket_raises_unreachable_naming_the_plugin(home: Path) -> None:
    missing = home / "nothing-here"
    with pytest.raises(PluginUnreachable):
        RPCClient(missing, timeout=1).call_raw("Instance.Validate", {}, dict)
    with pytest.raises(Unreachable, match=r"^Instance plugin 'nothing-here' is not reachable"):
        InstanceClient(RPCClient(missing, timeout=1)).validate({})

    async def scenario() -> None:
        async with AsyncRPCClient(missing, timeout=1) as rpc:
            await AsyncInstanceClient(rpc, name="mine").validate({})

    with pytest.raises(Unreachable, match=r"^Instance plugin 'mine' is not reachable"):
        asyncio.run(scenario())


def test_every_call_has_a_timeout(start_script: StartScript) -> None:
    slow = start_script(SLOW_PLUGIN, "slow")
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        InstanceClient(RPCClient(slow.path, timeout=0.3)).validate(3)
    assert time.monotonic() - started < 2.5
    assert "no answer within" in err.value.reason

    async def scenario() -> None:
        async with AsyncRPCClient(slow.path, timeout=0.3) as rpc:
            await AsyncInstanceClient(rpc).validate(3)

    with pytest.raises(Unreachable):
        asyncio.run(scenario())


def test_group_interface_through_typed_client(start_script: StartScript) -> None:
    groups = start_script(GROUP_PLUGIN, "groups")
    with RPCClient(groups.path) as conn:
        client = GroupClient(conn)
        # the reference answers an empty list of groups as null
        raw = rpc(groups.path, "Group.InspectGroups", {}, rid=7)
        assert raw == {"jsonrpc": "2.0", "result": {"Groups": None}, "id": 7}
        assert client.inspect_groups() == []
        spec = GroupSpec(id="cattle", properties={"Allocation": {"Size": 2}})
        assert client.commit_group(spec, True) == "Managing 2 instances"
        assert client.inspect_groups() == []
        assert client.commit_group(spec, False) == "Managing 2 instances"
        assert [g.id for g in client.inspect_groups()] == ["cattle"]
        assert client.describe_group("cattle").converged is True
        with pytest.raises(CallFailed) as err:
            client.describe_group("nope")
        assert err.value.reason == "Group 'nope' is not being watched"
        client.destroy_group("cattle")
        assert client.inspect_groups() == []


def test_a_body_over_the_limit_is_refused_before_it_is_sent(instance_file: Path) -> None:
    """What the plugin would answer 413 to is not sent (tests/test_limits.py has the
    plugin's 413 too)."""
    with RPCClient(instance_file, timeout=10) as conn:
        client = InstanceClient(conn)
        with pytest.raises(CallFailed) as err:
            client.validate({"Blob": "x" * (5 * 1024 * 1024)})
        assert err.value.reason == ("the request is 5.0 MiB, more than the 4 MiB a plugin "
                                    "accepts; not sent")
        client.validate({"Blob": "small"})  # the plugin, and the client, still work
