"""The default group plugin: Group/0.1.0 over durable specs and one controller per group."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from infrakit.plugins.clients import PluginClients, explain
from infrakit.plugins.group.controller import STOP_WAIT, Fence, GroupController
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG
from infrakit.plugins.group.spec import GroupProperties, config_sha, parse_group
from infrakit.rpc.client import PluginUnreachable
from infrakit.rpc.jsonrpc import RPCError
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.group import (
    GroupDescription,
    GroupSpec,
    GroupStatus,
    MemberStatus,
    OperationStatus,
)
from infrakit.spi.types import Description
from infrakit.store.base import GroupStore

log = logging.getLogger("infrakit.group")

DEFAULT_POLL = 5.0

_decode_spec = msgspec.json.Decoder(GroupSpec).decode


class GroupPlugin:
    """Group/0.1.0: commit, describe, free, destroy and inspect groups.

    Committed specs live in ``store``, so a restart resumes every group; the server calls
    :meth:`start` before it accepts calls and :meth:`stop` after the last one.
    """

    def __init__(self, store: GroupStore, poll: float = DEFAULT_POLL,
                 fence: Fence | None = None) -> None:
        self.store = store
        self.poll = poll
        self.fence = fence
        """Raises unless this process may act on providers (a manager's leadership)."""
        self.clients = PluginClients()
        self._specs: dict[str, GroupSpec] = {}
        self._controllers: dict[str, GroupController] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        """One per group: the verbs that change a group take turns, so that the spec a
        controller runs is always the one stored last, whatever the callers' timing."""

    def _lock(self, gid: str) -> asyncio.Lock:
        return self._locks.setdefault(gid, asyncio.Lock())

    async def start(self) -> None:
        for gid, raw in (await asyncio.to_thread(self.store.load_groups)).items():
            spec = _decode_spec(raw)
            try:
                props = parse_group(spec)
            except PluginError as exc:
                log.error("group %s: stored spec no longer valid, not resumed: %s", gid, exc)
                continue
            self._watch(spec, props)
            log.info("group %s: resumed", gid)

    async def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop every controller once the pass it is in has ended (or after ``wait``)."""
        await asyncio.gather(*(c.stop(wait) for c in self._controllers.values()))
        await self.clients.close()

    def _watch(self, spec: GroupSpec, props: GroupProperties) -> None:
        self._specs[spec.id] = spec
        controller = self._controllers.get(spec.id)
        if controller is None:
            paused = self.store.paused(spec.id)
            controller = GroupController(spec.id, props, self.store, self.clients, self.poll,
                                         paused, self.fence)
            self._controllers[spec.id] = controller
            controller.start()
        else:
            controller.update(props)

    def _controller(self, gid: str) -> GroupController:
        controller = self._controllers.get(gid)
        if controller is None:
            raise NotFoundError(f"Group '{gid}' is not being watched")
        return controller

    async def _validate(self, props: GroupProperties) -> None:
        """The flavor's and the instance plugin's own Validate, in the reference's order."""
        try:
            await self.clients.flavor(props.flavor.plugin).validate(props.flavor.properties,
                                                                    props.allocation)
        except (RPCError, PluginUnreachable) as exc:
            raise explain("Flavor", props.flavor.plugin, exc) from None
        try:
            await self.clients.instance(props.instance.plugin).validate(
                props.instance.properties)
        except (RPCError, PluginUnreachable) as exc:
            raise explain("Instance", props.instance.plugin, exc) from None

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        async with self._lock(spec.id):
            return await self._commit(spec, pretend)

    async def _commit(self, spec: GroupSpec, pretend: bool) -> str:
        props = parse_group(spec)
        await self._validate(props)
        details = await self._details(spec.id, props)
        if not pretend:
            await asyncio.to_thread(self.store.save_group, spec.id, msgspec.json.encode(spec))
            self._watch(spec, props)
        return details

    async def _details(self, gid: str, props: GroupProperties) -> str:
        """What a commit will do, in the reference's words."""
        target = props.target()
        controller = self._controllers.get(gid)
        if controller is None:
            return f"Managing {target} instances"
        members, _, _ = await controller.observe(judge=False)
        steps = []
        if config_sha(props) != controller.sha:
            steps.append(f"Performing a rolling update on {len(members)} instances")
        current = controller.props.target()
        if target > current:
            steps.append(f"Adding {target - current} instances to increase the group size "
                         f"to {target}")
        elif target < current:
            steps.append(f"Terminating {current - target} instances to reduce the group size "
                         f"to {target}")
        return ", then ".join(steps) or "Noop"

    async def describe_group(self, id: str) -> GroupDescription:
        # as the reference answers: members without their properties
        members, _, decision = await self._controller(id).observe(judge=False)
        return GroupDescription(instances=[m.desc for m in members],
                                converged=decision.converged)

    async def describe_status(self, id: str) -> GroupStatus:
        controller = self._controller(id)
        members, inflight, decision = await controller.observe(judge=False)
        now = time.time()
        return GroupStatus(
            id=id,
            target=controller.props.target(),
            converged=decision.converged,
            members=[MemberStatus(id=m.id, logical_id=m.desc.logical_id,
                                  health=m.verdict.value, age=round(now - m.since, 1),
                                  current=(m.desc.tags or {}).get(CONFIG_TAG) == controller.sha)
                     for m in members],
            in_flight=[OperationStatus(op=op.op, instance=op.instance,
                                       logical_id=op.logical_id,
                                       age=round(now - op.started, 1),
                                       expires_in=round(op.deadline - now, 1))
                       for op in inflight],
            outdated=decision.outdated,
            update_paused=controller.paused,
            update_halted=controller.halted,
            unhealthy=decision.unhealthy,
            max_unhealthy=controller.desired.max_unhealthy,
            breaker_open=decision.breaker_open,
            errors=controller.status.errors,
            failures=controller.status.failures,
            passes=controller.passes,
        )

    async def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        async with self._lock(id):
            return await self._destroy_instances(id, instances, shrink)

    async def _destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        controller = self._controller(id)
        # with their properties: the flavor drains them
        observed, _, _ = await controller.observe(judge=False, properties=True)
        members = {m.id: m.desc for m in observed}
        strangers = [i for i in instances if i not in members]
        if not instances or strangers:
            raise PluginError(f"Instances: {', '.join(map(repr, strangers)) or 'none given'}: "
                              f"not members of group '{id}'")
        chosen = [members[i] for i in dict.fromkeys(instances)]
        alloc = controller.props.allocation
        if shrink and alloc.logical_ids:
            raise PluginError(f"Shrink: group '{id}' is allocated by LogicalIDs; commit a spec "
                              "without the IDs to remove them")
        ops = [await controller.record_destroy(m) for m in chosen]
        if shrink:
            spec = self._specs[id]
            props = dict(spec.properties)
            props["Allocation"] = {**props["Allocation"], "Size": alloc.size - len(chosen)}
            await self._commit(GroupSpec(id=id, properties=props), False)
        errors = await controller.destroy_members(chosen, ops)
        if errors:
            raise PluginError("; ".join(errors))
        what = (f"reducing the group size to {alloc.size - len(chosen)}" if shrink
                else "to be replaced")
        return f"Destroyed {len(chosen)} instances, {what}"

    async def pause_update(self, id: str) -> str:
        controller = self._controller(id)
        await asyncio.to_thread(self.store.set_paused, id, True)
        controller.set_paused(True)
        return f"Paused the rolling update of group '{id}'"

    async def resume_update(self, id: str) -> str:
        controller = self._controller(id)
        await asyncio.to_thread(self.store.set_paused, id, False)
        controller.set_paused(False)
        return f"Resumed the rolling update of group '{id}'"

    async def cancel_update(self, id: str) -> str:
        """Roll back: commit again the spec that was committed before the current one."""
        async with self._lock(id):
            self._controller(id)
            raw = await asyncio.to_thread(self.store.previous_spec, id)
            if raw is None:
                raise PluginError(f"Group '{id}' has no earlier spec to go back to")
            details = await self._commit(_decode_spec(raw), False)
        await self.resume_update(id)
        return f"Rolled back to the previous spec: {details}"

    async def free_group(self, id: str) -> None:
        async with self._lock(id):
            controller = self._controller(id)
            await controller.stop()
            del self._controllers[id], self._specs[id]
            await asyncio.to_thread(self.store.delete_group, id)

    async def destroy_group(self, id: str) -> None:
        async with self._lock(id):
            await self._destroy_group(id)

    async def _destroy_group(self, id: str) -> None:
        controller = self._controller(id)
        await controller.stop()  # after the pass under way: its provisions have answered
        props = controller.props
        inst = self.clients.instance(props.instance.plugin)
        try:
            members = await inst.describe_instances({GROUP_TAG: id}, False)
        except (RPCError, PluginUnreachable) as exc:
            controller.start()  # still managed: nothing is forgotten half-way
            raise explain("Instance", props.instance.plugin, exc) from None
        # members made but not described yet (a slow provider) are destroyed by their ID
        described = {m.id for m in members}
        inflight = await asyncio.to_thread(self.store.inflight, id)
        members += [Description(id=op.instance) for op in inflight
                    if op.op == "provision" and op.instance and op.instance not in described]
        unanswered = sum(op.op == "provision" and op.instance is None for op in inflight)
        if unanswered:
            log.warning("group %s: %d provisions never answered (the instance plugin was "
                        "unreachable); if they made instances, those are not destroyed",
                        id, unanswered)
        ops = [await controller.record_destroy(m) for m in members]
        errors = await controller.destroy_members(members, ops)  # each drained first
        if errors:
            controller.start()
            raise PluginError("; ".join(errors))
        del self._controllers[id], self._specs[id]
        await asyncio.to_thread(self.store.delete_group, id)

    async def inspect_groups(self) -> list[GroupSpec]:
        return [self._specs[gid] for gid in sorted(self._specs)]
