"""One group's control loop: observe, plan, act, and again, until stopped.

Every provision and destroy is recorded in the store before it starts, so the next plan,
in this process or after a restart, counts it; nothing is ever provisioned twice because a
provider is slow to describe what it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from infrakit.plugins.clients import PluginClients, explain
from infrakit.plugins.group.plan import (
    CONFIG_TAG,
    GROUP_TAG,
    Desired,
    Member,
    Plan,
    Verdict,
    plan,
)
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.rpc.client import PluginUnreachable
from infrakit.rpc.jsonrpc import RPCError
from infrakit.spi.errors import PluginError
from infrakit.spi.types import Description, Health, Index, Spec
from infrakit.store.base import GroupStore, InFlight

log = logging.getLogger("infrakit.group")

MAX_BACKOFF = 60.0
BATCH = 500
"""Most items in one batch call (provisions, health checks), to keep bodies small."""
FOLLOW_UP = 0.05
"""Seconds before the pass that follows one that acted."""
STOP_WAIT = 30.0
"""Seconds a stopping controller waits for the pass under way to end."""


class _NothingMade(PluginError):
    """A provision that certainly made nothing: its in-flight record can go."""


@dataclass
class Status:
    """What the last pass met, for DescribeStatus and the log."""

    errors: list[str] = field(default_factory=list)
    failures: int = 0
    """Passes in a row that met an error; the wait before the next one doubles with each."""
    breaker_open: bool = False


Fence = Callable[[], None]
"""Raises :class:`PluginError` unless this process may still act on providers; blocking."""


class GroupController:
    """Keeps one group converged."""

    def __init__(self, group: str, props: GroupProperties, store: GroupStore,
                 clients: PluginClients, poll: float, paused: bool = False,
                 fence: Fence | None = None) -> None:
        self.group = group
        self.fence = fence
        self.store = store
        self.clients = clients
        self.poll = poll
        self.status = Status()
        self.passes = 0
        """Reconcile passes so far: shows an operator that the loop is alive."""
        self._wake = asyncio.Event()
        self._first_seen: dict[str, float] = {}
        self._unhealthy_since: dict[str, float] = {}
        self._last_batch = -math.inf
        self._verdicts: dict[str, Verdict] = {}
        """The last pass's verdicts other than healthy, by member."""
        self._destroying: set[str] = set()
        """Keys of the destroys this process recorded and has not finished: any other
        destroy record was left by a process that died, and is carried out anew."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.paused = paused
        self.halted = ""
        """Why the rolling update to the current config halted by itself, if it did."""
        self._halted_sha = ""
        self._update_failures = 0
        self.sha = ""
        self.update(props)

    def update(self, props: GroupProperties) -> None:
        """Take a newly committed spec; the next pass starts at once. A new config starts
        a new rolling update, with its own count of failures."""
        self.props = props
        sha = config_sha(props)
        if sha != self.sha:
            self._update_failures = 0
        self.sha = sha
        self.halted = self.halted if self._halted_sha == sha else ""
        self.desired = Desired(size=props.allocation.size,
                               logical_ids=tuple(props.allocation.logical_ids or ()),
                               config_sha=self.sha, max_surge=props.max_surge,
                               max_unavailable=props.max_unavailable,
                               max_unhealthy=props.unhealthy_limit(),
                               newest_first=props.scale_in_order == "newest",
                               update_paused=self.paused or bool(self.halted),
                               batch_pause=props.update_pause)
        self._sem = asyncio.Semaphore(props.max_parallel)
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the rolling update (the caller has stored the choice). Resuming
        also lifts a halt, with a fresh count of failures."""
        self.paused = paused
        if not paused:
            self.halted, self._update_failures = "", 0
        self.desired = dataclasses.replace(self.desired,
                                           update_paused=paused or bool(self.halted))
        self._wake.set()

    def _count_update_failures(self, decision: Plan, observed: dict[str, Description]) -> None:
        """Members of the new config replaced for their health during a rolling update
        count against ``UpdateFailureLimit``; at the limit the update halts, where the
        reference would replace the failing new member for ever."""
        if not decision.outdated or not decision.replace:
            return
        self._update_failures += sum((observed[i].tags or {}).get(CONFIG_TAG) == self.sha
                                     for i in decision.replace)
        limit = self.props.update_failure_limit
        if limit and self._update_failures >= limit and not self.halted:
            self.halted = (f"{self._update_failures} members of the new config failed their "
                           "health checks")
            self._halted_sha = self.sha
            self.desired = dataclasses.replace(self.desired, update_paused=True)
            log.warning("group %s: rolling update halted: %s; commit a fixed spec, roll back "
                        "with cancel-update, or try again with resume-update", self.group,
                        self.halted)

    async def destroy_members(self, members: list[Description],
                              ops: list[InFlight]) -> list[str]:
        """Destroy chosen members whose destroys :meth:`record_destroy` has recorded (before
        anything else changed, so that no pass counts them or picks others instead);
        returns the errors."""
        results = await asyncio.gather(*(self._destroy(m, op) for m, op in
                                         zip(members, ops, strict=True)),
                                       return_exceptions=True)
        self._wake.set()
        return [str(r) for r in results if isinstance(r, BaseException)]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.group)

    async def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop once the pass under way is over, so that every provision it started has
        answered and its ID is recorded; cancel the pass if it takes longer than ``wait``."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            log.warning("group %s: the pass under way did not end within %gs; cancelled",
                        self.group, wait)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._stopping = False

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            acted = False
            try:
                decision = await self.reconcile()
                acted = decision is not None and not decision.idle
            except Exception as exc:  # a bug of ours: keep the loop, say so
                log.exception("group %s: reconcile failed", self.group)
                self.status.errors = [f"{type(exc).__name__}: {exc}"]
                self.status.failures += 1
            if self.status.failures:  # back off exponentially: never a hot loop
                wait = min(self.poll * 2 ** min(self.status.failures, 10),
                           max(self.poll, MAX_BACKOFF))
            elif acted:  # look again soon: what was just done shows up quickly
                wait = min(self.poll, FOLLOW_UP)
            else:
                wait = self.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def observe(self, judge: bool = True, properties: bool | None = None,
                      ) -> tuple[list[Member], list[InFlight], Plan]:
        """Describe the members and plan, without acting. With ``judge``, ask the flavor
        about each member's health; without, reuse the verdicts of the last pass (so that
        DescribeGroup costs one call, not one per member). The members' properties are
        described when asked for, and by default only to judge (a flavor's health probe
        may be aimed by them)."""
        # In-flight records first, then the description: an operation that ends in between
        # then errs on the safe side (a finished destroy's instance is simply gone; a
        # finished provision counts twice for a pass, which delays, never duplicates). The
        # other order would count a just-destroyed instance as a live member.
        inflight = await asyncio.to_thread(self.store.inflight, self.group)
        inst = self.clients.instance(self.props.instance.plugin)
        try:
            observed = await inst.describe_instances(
                {GROUP_TAG: self.group}, judge if properties is None else properties)
        except (RPCError, PluginUnreachable) as exc:
            raise explain("Instance", self.props.instance.plugin, exc) from None
        now = time.time()
        if judge:
            members = await self._judge(observed)
        else:
            members = [self._last_verdict(d, now) for d in observed]
        return members, inflight, plan(self.desired, members, inflight, now, self._last_batch)

    def _last_verdict(self, desc: Description, now: float) -> Member:
        """A member as the last pass judged it; one it has not seen yet is starting."""
        since = self._first_seen.get(desc.id)
        if since is None:
            return Member(desc, Verdict.STARTING, now)
        return Member(desc, self._verdicts.get(desc.id, Verdict.HEALTHY), since)

    async def _judge(self, observed: list[Description]) -> list[Member]:
        """Ask the flavor about every member and turn the answers into verdicts.

        An error from the flavor counts as "unknown", never as "unhealthy", so a broken
        health check cannot get members destroyed; and if it says "unhealthy" of too many
        at once, the plan's circuit breaker stops the replacing.
        """
        props = self.props
        flavor = self.clients.flavor(props.flavor.plugin)

        async def health(chunk: list[Description]) -> list[Health | Exception]:
            try:
                return await flavor.healthy_each(props.flavor.properties, chunk)
            except (RPCError, PluginUnreachable) as exc:
                return [exc] * len(chunk)

        chunks = await asyncio.gather(*(health(c) for c in _chunks(observed, BATCH)))
        answers = [a for chunk in chunks for a in chunk]
        failed = [(d.id, a) for d, a in zip(observed, answers, strict=True)
                  if isinstance(a, Exception)]
        if failed:
            first_id, first = failed[0]
            log.warning("group %s: health of %d members unknown; %s: %s", self.group,
                        len(failed), first_id, explain("Flavor", props.flavor.plugin, first))
        now = time.time()
        first_seen, unhealthy_since = self._first_seen, self._unhealthy_since
        verdicts: dict[str, Verdict] = {}
        members: list[Member] = []
        append = members.append
        for desc, answer in zip(observed, answers, strict=True):
            iid = desc.id
            since = first_seen.get(iid)
            if since is None:
                since = first_seen[iid] = now
            if answer is not Health.UNHEALTHY:  # an error counts as unknown
                if unhealthy_since:
                    unhealthy_since.pop(iid, None)
                append(Member(desc, Verdict.HEALTHY, since))
                continue
            if now - since < props.startup_grace:
                verdict = Verdict.STARTING
            else:
                bad = unhealthy_since.setdefault(iid, now)
                verdict = Verdict.FAILED if now - bad >= props.health_grace else \
                    Verdict.UNHEALTHY
            verdicts[iid] = verdict
            append(Member(desc, verdict, since))
        if len(first_seen) > len(observed):  # some members are gone: forget them
            for gone in set(first_seen).difference(d.id for d in observed):
                del first_seen[gone]
                unhealthy_since.pop(gone, None)
        self._verdicts = verdicts
        return members

    async def reconcile(self) -> Plan | None:
        """One pass: observe, plan, act."""
        self.passes += 1
        errors: list[str] = []
        try:
            observed, inflight, decision = await self.observe()
        except PluginError as exc:  # a plugin it needs is down or failing
            log.warning("group %s: %s", self.group, exc)
            self.status.errors = [str(exc)]
            self.status.failures += 1
            return None
        if decision.batch:
            self._last_batch = time.time()
        if decision.resolved:
            await asyncio.to_thread(self.store.forget, *decision.resolved)
        orphans = self._orphaned_destroys(inflight, decision)
        by_id = {m.id: m.desc for m in observed} if decision.destroy or orphans else {}
        self._count_update_failures(decision, by_id)
        jobs: list[Coroutine[Any, Any, list[str] | None]] = [
            self._relabel(iid) for iid in decision.relabel]
        jobs += [self._destroy(by_id[iid]) for iid in decision.destroy]
        jobs += [self._destroy(by_id[op.instance], op) for op in orphans
                 if op.instance in by_id]
        if decision.provision:
            jobs.append(self._provision_all(decision.provision))
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, list):
                errors += result
            elif isinstance(result, BaseException):
                errors.append(str(result))
        if decision.provision or decision.destroy:
            log.info("group %s: provisioned %d, destroyed %d (%d for health)%s", self.group,
                     len(decision.provision), len(decision.destroy), len(decision.replace),
                     f"; errors: {'; '.join(errors)}" if errors else "")
        if decision.breaker_open and not self.status.breaker_open:
            log.warning("group %s: circuit breaker open: %d members unhealthy, more than "
                        "MaxUnhealthy (%d); not replacing any for health", self.group,
                        decision.unhealthy, self.desired.max_unhealthy)
        self.status = Status(errors=errors, failures=self.status.failures + 1 if errors else 0,
                             breaker_open=decision.breaker_open)
        return decision

    def _orphaned_destroys(self, inflight: list[InFlight], decision: Plan) -> list[InFlight]:
        """Destroys recorded by a process that died before carrying them out (this one
        before a restart, or the previous leader). Their members do not count toward the
        size, so they must go now, not when the records expire: left standing, they
        would take the group beyond Size + MaxSurge."""
        resolved = set(decision.resolved)
        return [op for op in inflight if op.op == "destroy" and op.instance is not None
                and op.key not in self._destroying and op.key not in resolved]

    async def _fenced(self) -> None:
        """Before anything that changes a provider: raise unless this process may act."""
        if self.fence is not None:
            await asyncio.to_thread(self.fence)

    async def _relabel(self, instance: str) -> None:
        await self._fenced()
        inst = self.clients.instance(self.props.instance.plugin)
        try:
            await inst.label(instance, {CONFIG_TAG: self.sha})
        except (RPCError, PluginUnreachable) as exc:
            raise explain("Instance", self.props.instance.plugin, exc) from None

    async def _provision_all(self, logical_ids: list[str | None]) -> list[str]:
        """Provision one instance per entry; returns the errors.

        The intents are recorded in one transaction before any call. The calls go in
        batches of ``MaxParallel`` (a prepare and a provision call per batch), one batch at
        a time, and the IDs each batch's call answered are recorded in one more transaction
        before the next batch."""
        now = time.time()
        first = await asyncio.to_thread(self.store.reserve_sequences, self.group,
                                        len(logical_ids))
        ops = [InFlight(key=uuid.uuid4().hex, group=self.group, op="provision",
                        logical_id=lid, started=now, deadline=now + self.props.provision_deadline)
               for lid in logical_ids]
        await asyncio.to_thread(self.store.record, *ops)
        errors: list[str] = []
        size = min(self.props.max_parallel, BATCH)
        for start in range(0, len(ops), size):
            batch = ops[start:start + size]
            nothing_made: list[str] = []
            for op, outcome in zip(batch, await self._provision_batch(batch, first + start),
                                   strict=True):
                if isinstance(outcome, _NothingMade):
                    nothing_made.append(op.key)
                if isinstance(outcome, Exception):
                    errors.append(str(outcome))
                else:
                    op.instance = outcome
            # each batch's IDs at once: a crash loses at most one batch's answers
            made = [op for op in batch if op.instance is not None]
            if made:
                await asyncio.to_thread(self.store.record, *made)
            if nothing_made:
                await asyncio.to_thread(self.store.forget, *nothing_made)
        return errors

    async def _provision_batch(self, ops: list[InFlight], seq: int) -> list[str | Exception]:
        """Prepare and provision one instance per op: per op, the new ID or the error, a
        :class:`_NothingMade` where the intent can be forgotten."""
        props = self.props
        flavor, instance = props.flavor.plugin, props.instance.plugin
        tags = {GROUP_TAG: self.group, CONFIG_TAG: self.sha}
        items = [(Spec(properties=props.instance.properties, tags=dict(tags),
                       logical_id=op.logical_id), Index(group=self.group, sequence=seq + i))
                 for i, op in enumerate(ops)]
        try:
            prepared = await self.clients.flavor(flavor).prepare_each(
                props.flavor.properties, props.allocation, items)
        except (RPCError, PluginUnreachable) as exc:
            return [_NothingMade(explain("Flavor", flavor, exc))] * len(ops)
        outcomes: list[str | Exception] = [
            _NothingMade(explain("Flavor", flavor, p)) if isinstance(p, Exception) else ""
            for p in prepared]
        ready = [(k, p) for k, p in enumerate(prepared) if not isinstance(p, Exception)]
        if not ready:
            return outcomes
        try:
            await self._fenced()
        except PluginError as exc:
            return [_NothingMade(str(exc))] * len(ops)
        try:
            made = await self.clients.instance(instance).provision_each([p for _, p in ready])
        except RPCError as exc:  # the plugin answered: nothing was made
            made = [_NothingMade(explain("Instance", instance, exc))] * len(ready)
        except PluginUnreachable as exc:
            made = [exc] * len(ready)
        for (k, _), outcome in zip(ready, made, strict=True):
            if isinstance(outcome, PluginUnreachable):
                # it may have been made: keep counting it until its deadline
                outcome = explain("Instance", instance, outcome)
            elif isinstance(outcome, Exception):  # this item's answer: nothing was made
                outcome = _NothingMade(explain("Instance", instance, outcome))
            outcomes[k] = outcome
        return outcomes

    async def record_destroy(self, member: Description) -> InFlight:
        now = time.time()
        # keyed by group too: two groups' instance plugins may both have an "instance-1"
        op = InFlight(key=f"destroy:{self.group}:{member.id}", group=self.group, op="destroy",
                      instance=member.id, started=now,
                      deadline=now + self.props.provision_deadline)
        self._destroying.add(op.key)
        await asyncio.to_thread(self.store.record, op)
        return op

    async def _destroy(self, member: Description, op: InFlight | None = None) -> None:
        props = self.props
        async with self._sem:
            if op is None:
                op = await self.record_destroy(member)
            self._destroying.add(op.key)
            try:
                await self._fenced()
                try:
                    await self.clients.flavor(props.flavor.plugin).drain(
                        props.flavor.properties, member)
                except (RPCError, PluginUnreachable) as exc:
                    raise explain("Flavor", props.flavor.plugin, exc) from None
                try:
                    await self.clients.instance(props.instance.plugin).destroy(member.id)
                except (RPCError, PluginUnreachable) as exc:
                    raise explain("Instance", props.instance.plugin, exc) from None
            finally:
                await asyncio.to_thread(self.store.forget, op.key)
                self._destroying.discard(op.key)


def _chunks(items: list[Description], size: int) -> list[list[Description]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
