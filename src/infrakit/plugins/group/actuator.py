"""What a group's controller does to providers: provisions, destroys and relabels, each
recorded in the store before it starts and fenced by leadership.

Every provision and destroy is recorded before it starts, so the next plan, in this process
or after a restart, counts it; nothing is ever provisioned twice because a provider is slow
to describe what it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from infrakit.plugins.group.forgetting import Forgetting
from infrakit.plugins.group.health import BATCH
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG, Plan
from infrakit.plugins.group.sizing import ALONE, ROOM, runs, size_of, too_large
from infrakit.plugins.group.spec import GroupProperties
from infrakit.plugins.group.storage import GroupStore, InFlight
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import PluginError, Unreachable
from infrakit.spi.types import MAX_BODY, Description, Index, Spec

log = logging.getLogger("infrakit.group")

Fence = Callable[[], None]
"""Raises :class:`PluginError` unless this process may still act on providers; blocking."""


class _NothingMade(PluginError):
    """A provision that certainly made nothing: its in-flight record can go."""


class Actuator:
    """Carries out one group's provisions, destroys and relabels with the committed spec,
    at most ``MaxParallel`` at once."""

    def __init__(self, group: str, store: GroupStore, plugins: PluginLookup,
                 fence: Fence | None = None) -> None:
        self.group = group
        self.store = store
        self.plugins = plugins
        self.fence = fence
        self.props = GroupProperties()
        self.sha = ""
        self._sem = asyncio.Semaphore(1)
        self._forgetting = Forgetting(store)
        self.made: list[str] = []
        """The instances the last :meth:`provision` made."""
        self._destroying: set[str] = set()
        """Keys of the destroys this process recorded and has not finished: any other
        destroy record was left by a process that died, and is carried out anew."""

    def update(self, props: GroupProperties, sha: str) -> None:
        self.props, self.sha = props, sha
        self._sem = asyncio.Semaphore(props.max_parallel)

    async def _fenced(self) -> None:
        """Before anything that changes a provider: raise unless this process may act."""
        if self.fence is not None:
            await asyncio.to_thread(self.fence)

    async def relabel(self, instance: str) -> None:
        """Adopt a member tagged ``bootstrap``: give it the current config hash."""
        await self._fenced()
        await self.plugins.instance(self.props.instance.plugin).label(
            instance, {CONFIG_TAG: self.sha})

    async def provision(self, logical_ids: list[str | None]) -> list[str]:
        """Provision one instance per entry; returns the errors.

        The intents are recorded in one transaction before any call. The calls go in
        batches of ``MaxParallel`` (a prepare and a provision call per batch, or more where
        the batch's specs would not fit in one call), one batch's provisions at a time;
        the IDs each batch's calls answered are recorded in one more transaction. The
        flavor prepares the next batch, and the store records the last one's IDs, while a
        batch is being provisioned: the group's work overlaps the instance plugin's, and
        never more than ``MaxParallel`` provisions are under way."""
        now = time.time()
        self.made = []
        first = await asyncio.to_thread(self.store.reserve_sequences, self.group,
                                        len(logical_ids))
        ops = [InFlight(key=uuid.uuid4().hex, group=self.group, op="provision",
                        logical_id=lid, started=now, deadline=now + self.props.provision_deadline)
               for lid in logical_ids]
        await asyncio.to_thread(self.store.record, *ops)
        size = min(self.props.max_parallel, BATCH)
        batches = [(ops[at:at + size], first + at) for at in range(0, len(ops), size)]
        errors: list[str] = []
        pending: list[asyncio.Future[None]] = []
        prepared = asyncio.ensure_future(self._prepare_batch(*batches[0]))
        try:
            for k, (batch, _) in enumerate(batches):
                items = await prepared
                if k + 1 < len(batches):
                    prepared = asyncio.ensure_future(self._prepare_batch(*batches[k + 1]))
                outcomes = await self._provision_prepared(items)
                if pending:  # one transaction at a time, in the order of the batches
                    await pending.pop()
                pending.append(asyncio.ensure_future(self._settle(batch, outcomes, errors)))
            if pending:
                await pending.pop()
        finally:
            prepared.cancel()
            for task in pending:
                task.cancel()
        return errors

    async def _settle(self, batch: list[InFlight], outcomes: list[str | Exception],
                      errors: list[str]) -> None:
        """Record the IDs a batch's calls answered (a crash loses at most the answers of
        this batch and the next), and forget the intents that certainly made nothing."""
        nothing_made: list[str] = []
        for op, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _NothingMade):
                nothing_made.append(op.key)
            if isinstance(outcome, Exception):
                errors.append(str(outcome))
            else:
                op.instance = outcome
        made = [op for op in batch if op.instance is not None]
        self.made += [op.instance for op in made if op.instance]
        if made:
            await asyncio.to_thread(self.store.record, *made)
        if nothing_made:
            await asyncio.to_thread(self.store.forget, *nothing_made)

    async def _prepare_batch(self, ops: list[InFlight], seq: int) -> list[Spec | Exception]:
        """The flavor's spec for each op's instance, the ``seq``-th of the group onwards, or
        the error."""
        props = self.props
        tags = {GROUP_TAG: self.group, CONFIG_TAG: self.sha}
        return await self._prepare_each([
            (Spec(properties=props.instance.properties, tags=dict(tags),
                  logical_id=op.logical_id), Index(group=self.group, sequence=seq + i))
            for i, op in enumerate(ops)])

    async def _provision_prepared(self, prepared: list[Spec | Exception]
                                  ) -> list[str | Exception]:
        """Provision the prepared specs: per spec, the new ID or the error, a
        :class:`_NothingMade` where the intent can be forgotten (every error but an
        unanswered provision, which may have made the instance)."""
        outcomes: list[str | Exception] = [
            _NothingMade(str(p)) if isinstance(p, Exception) else "" for p in prepared]
        ready = [(k, p) for k, p in enumerate(prepared) if not isinstance(p, Exception)]
        if ready:
            made = await self._provision_each(self.props.instance.plugin,
                                              [p for _, p in ready])
            for (k, _), outcome in zip(ready, made, strict=True):
                outcomes[k] = outcome
        return outcomes

    async def _prepare_each(self, items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        """The flavor's spec per item, or the error; in as many calls as it takes for each
        to fit what a plugin accepts."""
        props = self.props
        room = size_of(props.flavor.properties) + size_of(props.allocation) + ROOM
        prepared: list[Spec | Exception] = []
        for run in runs([size_of(item) for item in items], MAX_BODY - room):
            part = items[run.start:run.stop]
            try:
                prepared += await self.plugins.flavor(props.flavor.plugin).prepare_each(
                    props.flavor.properties, props.allocation, part)
            except PluginError as exc:
                prepared += [exc] * len(part)
        return prepared

    async def _provision_each(self, plugin: str, specs: list[Spec]) -> list[str | Exception]:
        """Provision ``specs``, in as many calls as it takes for each to fit what a plugin
        accepts; a spec that could never fit is refused, saying why. After a call that
        got no answer the rest are not asked for (the plugin is down or hangs)."""
        sizes = [size_of(spec) for spec in specs]
        made: list[str | Exception] = []
        for run in runs(sizes, ALONE):
            part = specs[run.start:run.stop]
            why = too_large(part[0], sizes[run.start]) if len(part) == 1 else None
            if why is not None:
                made.append(_NothingMade(f"{why}; not sent"))
                continue
            try:
                await self._fenced()
                answers = await self.plugins.instance(plugin).provision_each(part)
            except Unreachable as exc:  # they may have been made: counted until the deadline
                made += [exc] * len(part)
                made += [_NothingMade(f"not asked for: {exc}")] * (len(specs) - len(made))
                break
            except PluginError as exc:  # refused, or not ours to ask: nothing was made
                made += [_NothingMade(str(exc))] * len(part)
                continue
            made += [_NothingMade(str(m)) if isinstance(m, Exception) and
                     not isinstance(m, Unreachable) else m for m in answers]
        return made

    async def record_destroys(self, members: list[Description]) -> list[InFlight]:
        """Record the destroys of ``members``, in one transaction, before anything else
        changes, so that no pass counts them or picks others instead."""
        now = time.time()
        # keyed by group too: two groups' instance plugins may both have an "instance-1"
        ops = [InFlight(key=f"destroy:{self.group}:{m.id}", group=self.group, op="destroy",
                        instance=m.id, started=now, deadline=now + self.props.provision_deadline)
               for m in members]
        self._destroying.update(op.key for op in ops)
        if ops:
            await asyncio.to_thread(self.store.record, *ops)
        return ops

    async def destroy(self, member: Description, op: InFlight | None = None) -> None:
        """Drain ``member`` through the flavor, then destroy it; its record goes either
        way (a failed destroy is planned anew)."""
        props = self.props
        async with self._sem:
            if op is None:
                [op] = await self.record_destroys([member])
            self._destroying.add(op.key)
            try:
                await self._fenced()
                await self.plugins.flavor(props.flavor.plugin).drain(props.flavor.properties,
                                                                     member)
                await self.plugins.instance(props.instance.plugin).destroy(member.id)
            finally:
                await self._forgetting.forget(op.key)
                self._destroying.discard(op.key)

    async def destroy_recorded(self, members: list[Description],
                               ops: list[InFlight]) -> dict[str, str]:
        """Carry out the destroys :meth:`record_destroys` recorded; returns why each member
        that is still there could not be destroyed. A member its plugin no longer has is
        destroyed as asked, whatever its plugin answered."""
        results = await asyncio.gather(*(self.destroy(m, op) for m, op in
                                         zip(members, ops, strict=True)),
                                       return_exceptions=True)
        failed = {m.id: str(r) for m, r in zip(members, results, strict=True)
                  if isinstance(r, BaseException)}
        if failed:
            with contextlib.suppress(PluginError):  # cannot tell: they count as left
                still = {d.id for d in await self._described()}
                failed = {i: why for i, why in failed.items() if i in still}
        return failed

    async def destroy_all(self) -> dict[str, str]:
        """Destroy every member, those made but not described yet included, each drained
        first; returns why each member left could not be destroyed."""
        members = await self._described()
        members += await self._made_not_described({m.id for m in members})
        return await self.destroy_recorded(members, await self.record_destroys(members))

    async def _described(self) -> list[Description]:
        return await self.plugins.instance(self.props.instance.plugin).describe_instances(
            {GROUP_TAG: self.group}, False)

    async def _made_not_described(self, described: set[str]) -> list[Description]:
        """Members a slow provider made and has not described yet, by their recorded ID."""
        inflight = await asyncio.to_thread(self.store.inflight, self.group)
        unanswered = sum(op.op == "provision" and op.instance is None for op in inflight)
        if unanswered:
            log.warning("group %s: %d provisions never answered (the instance plugin was "
                        "unreachable); if they made instances, those are not destroyed",
                        self.group, unanswered)
        return [Description(id=op.instance) for op in inflight
                if op.op == "provision" and op.instance and op.instance not in described]

    def orphaned_destroys(self, inflight: list[InFlight], decision: Plan) -> list[InFlight]:
        """Destroys recorded by a process that died before carrying them out (this one
        before a restart, or the previous leader). Their members do not count toward the
        size, so they must go now, not when the records expire: left standing, they
        would take the group beyond Size + MaxSurge."""
        resolved = set(decision.resolved)
        return [op for op in inflight if op.op == "destroy" and op.instance is not None
                and op.key not in self._destroying and op.key not in resolved]
