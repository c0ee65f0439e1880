"""Typed clients: each one is itself an Instance, Flavor or Group plugin object.

``InstanceClient(RPCClient(path), "ec2")`` can be handed to anything that expects an
instance plugin, so code cannot tell a remote plugin from a local one. The ``Async*`` twins
do the same over :class:`~infrakit.rpc.client.AsyncRPCClient`.
"""

from __future__ import annotations

from typing import Any, cast

from infrakit.rpc.client import AsyncRPCClient, RPCClient
from infrakit.spi.flavor import FLAVOR, PrepareItem
from infrakit.spi.group import GROUP, GroupDescription, GroupSpec, GroupStatus
from infrakit.spi.instance import INSTANCE
from infrakit.spi.types import Allocation, Description, Health, Index, Spec

_I, _F, _G = INSTANCE.methods, FLAVOR.methods, GROUP.methods


class InstanceClient:
    """A remote Instance/0.5.0 plugin."""

    def __init__(self, rpc: RPCClient, type_name: str = "") -> None:
        self.rpc, self.type = rpc, type_name

    def validate(self, properties: Any) -> None:
        self.rpc.call(_I["Instance.Validate"], self.type, properties)

    def provision(self, spec: Spec) -> str:
        return cast(str, self.rpc.call(_I["Instance.Provision"], self.type, spec))

    def label(self, instance: str, labels: dict[str, str]) -> None:
        self.rpc.call(_I["Instance.Label"], self.type, instance, labels)

    def destroy(self, instance: str) -> None:
        self.rpc.call(_I["Instance.Destroy"], self.type, instance)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        return cast(list[Description],
                    self.rpc.call(_I["Instance.DescribeInstances"], self.type, tags, properties))


class FlavorClient:
    """A remote Flavor/0.1.0 plugin."""

    def __init__(self, rpc: RPCClient, type_name: str = "") -> None:
        self.rpc, self.type = rpc, type_name

    def validate(self, properties: Any, allocation: Allocation) -> None:
        self.rpc.call(_F["Flavor.Validate"], self.type, properties, allocation)

    def prepare(self, properties: Any, spec: Spec, allocation: Allocation, index: Index) -> Spec:
        return cast(Spec, self.rpc.call(_F["Flavor.Prepare"], self.type, properties, spec,
                                        allocation, index))

    def healthy(self, properties: Any, instance: Description) -> Health:
        return cast(Health, self.rpc.call(_F["Flavor.Healthy"], self.type, properties, instance))

    def drain(self, properties: Any, instance: Description) -> None:
        self.rpc.call(_F["Flavor.Drain"], self.type, properties, instance)


class GroupClient:
    """A remote Group/0.1.0 plugin."""

    def __init__(self, rpc: RPCClient) -> None:
        self.rpc = rpc

    def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        return cast(str, self.rpc.call(_G["Group.CommitGroup"], None, spec, pretend))

    def free_group(self, id: str) -> None:
        self.rpc.call(_G["Group.FreeGroup"], None, id)

    def describe_group(self, id: str) -> GroupDescription:
        return cast(GroupDescription, self.rpc.call(_G["Group.DescribeGroup"], None, id))

    def destroy_group(self, id: str) -> None:
        self.rpc.call(_G["Group.DestroyGroup"], None, id)

    def inspect_groups(self) -> list[GroupSpec]:
        return cast(list[GroupSpec], self.rpc.call(_G["Group.InspectGroups"], None))

    def describe_status(self, id: str) -> GroupStatus:
        return cast(GroupStatus, self.rpc.call(_G["Group.DescribeStatus"], None, id))

    def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        return cast(str, self.rpc.call(_G["Group.DestroyInstances"], None, id, instances,
                                       shrink))

    def pause_update(self, id: str) -> str:
        return cast(str, self.rpc.call(_G["Group.PauseUpdate"], None, id))

    def resume_update(self, id: str) -> str:
        return cast(str, self.rpc.call(_G["Group.ResumeUpdate"], None, id))

    def cancel_update(self, id: str) -> str:
        return cast(str, self.rpc.call(_G["Group.CancelUpdate"], None, id))


class AsyncInstanceClient:
    """A remote Instance/0.5.0 plugin, for asyncio code."""

    def __init__(self, rpc: AsyncRPCClient, type_name: str = "") -> None:
        self.rpc, self.type = rpc, type_name

    async def validate(self, properties: Any) -> None:
        await self.rpc.call(_I["Instance.Validate"], self.type, properties)

    async def provision(self, spec: Spec) -> str:
        return cast(str, await self.rpc.call(_I["Instance.Provision"], self.type, spec))

    async def provision_each(self, specs: list[Spec]) -> list[str | Exception]:
        """``Instance.ProvisionEach``, or one ``Instance.Provision`` per spec where the plugin
        does not serve it: per spec, the new ID or the error."""
        return await self.rpc.call_each(_I["Instance.ProvisionEach"], self.type, specs)

    async def label(self, instance: str, labels: dict[str, str]) -> None:
        await self.rpc.call(_I["Instance.Label"], self.type, instance, labels)

    async def destroy(self, instance: str) -> None:
        await self.rpc.call(_I["Instance.Destroy"], self.type, instance)

    async def describe_instances(self, tags: dict[str, str],
                                 properties: bool) -> list[Description]:
        return cast(list[Description], await self.rpc.call(
            _I["Instance.DescribeInstances"], self.type, tags, properties))


class AsyncFlavorClient:
    """A remote Flavor/0.1.0 plugin, for asyncio code."""

    def __init__(self, rpc: AsyncRPCClient, type_name: str = "") -> None:
        self.rpc, self.type = rpc, type_name

    async def validate(self, properties: Any, allocation: Allocation) -> None:
        await self.rpc.call(_F["Flavor.Validate"], self.type, properties, allocation)

    async def prepare(self, properties: Any, spec: Spec, allocation: Allocation,
                      index: Index) -> Spec:
        return cast(Spec, await self.rpc.call(_F["Flavor.Prepare"], self.type, properties, spec,
                                              allocation, index))

    async def prepare_each(self, properties: Any, allocation: Allocation,
                           items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        """``Flavor.PrepareEach`` (or one ``Flavor.Prepare`` per item): per item, the
        prepared spec or the error."""
        return await self.rpc.call_each(_F["Flavor.PrepareEach"], self.type, properties,
                                        allocation, [PrepareItem(spec=s, index=i)
                                                     for s, i in items])

    async def healthy(self, properties: Any, instance: Description) -> Health:
        return cast(Health, await self.rpc.call(_F["Flavor.Healthy"], self.type, properties,
                                                instance))

    async def healthy_each(self, properties: Any,
                           instances: list[Description]) -> list[Health | Exception]:
        """``Flavor.HealthyEach`` (or one ``Flavor.Healthy`` per member): per member, its
        health or the error."""
        return await self.rpc.call_each(_F["Flavor.HealthyEach"], self.type, properties,
                                        instances)

    async def drain(self, properties: Any, instance: Description) -> None:
        await self.rpc.call(_F["Flavor.Drain"], self.type, properties, instance)


class AsyncGroupClient:
    """A remote Group/0.1.0 plugin, for asyncio code."""

    def __init__(self, rpc: AsyncRPCClient) -> None:
        self.rpc = rpc

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        return cast(str, await self.rpc.call(_G["Group.CommitGroup"], None, spec, pretend))

    async def free_group(self, id: str) -> None:
        await self.rpc.call(_G["Group.FreeGroup"], None, id)

    async def describe_group(self, id: str) -> GroupDescription:
        return cast(GroupDescription, await self.rpc.call(_G["Group.DescribeGroup"], None, id))

    async def destroy_group(self, id: str) -> None:
        await self.rpc.call(_G["Group.DestroyGroup"], None, id)

    async def inspect_groups(self) -> list[GroupSpec]:
        return cast(list[GroupSpec], await self.rpc.call(_G["Group.InspectGroups"], None))

    async def describe_status(self, id: str) -> GroupStatus:
        return cast(GroupStatus, await self.rpc.call(_G["Group.DescribeStatus"], None, id))
