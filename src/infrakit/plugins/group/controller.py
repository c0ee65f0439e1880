"""One group's control loop: observe, plan, act, and again, until stopped; and the group's
status as the loop sees it.

The controller decides with the pure :func:`~infrakit.plugins.group.plan.plan`; the
verdicts come from :class:`~infrakit.plugins.group.health.HealthJudge`, the acting is the
:class:`~infrakit.plugins.group.actuator.Actuator`'s, and the rolling update's own state
is the :class:`~infrakit.plugins.group.rollout.Rollout`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from infrakit.plugins.group.actuator import Actuator, Fence
from infrakit.plugins.group.health import HealthJudge
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG, Desired, Member, Plan, plan
from infrakit.plugins.group.rollout import Rollout
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.plugins.group.storage import GroupStore, InFlight
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import PluginError
from infrakit.spi.group import GroupStatus, MemberStatus, OperationStatus
from infrakit.spi.types import Description

log = logging.getLogger("infrakit.group")

MAX_BACKOFF = 60.0
FOLLOW_UP = 0.05
"""Seconds before the pass that follows one that acted."""
STOP_WAIT = 30.0
"""Seconds a stopping controller waits for the pass under way to end."""


@dataclass
class Status:
    """What the last pass met, for DescribeStatus and the log."""

    errors: list[str] = field(default_factory=list)
    failures: int = 0
    """Passes in a row that met an error; the wait before the next one doubles with each."""
    breaker_open: bool = False


class GroupController:
    """Keeps one group converged."""

    def __init__(self, group: str, props: GroupProperties, store: GroupStore,
                 plugins: PluginLookup, poll: float, paused: bool = False,
                 fence: Fence | None = None) -> None:
        self.group = group
        self.store = store
        self.plugins = plugins
        self.poll = poll
        self.status = Status()
        self.passes = 0
        """Reconcile passes so far: shows an operator that the loop is alive."""
        self.health = HealthJudge(group)
        self.actuator = Actuator(group, store, plugins, fence)
        self.rollout = Rollout(group, paused)
        self._wake = asyncio.Event()
        self._last_batch = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sha = ""
        self.update(props)

    def update(self, props: GroupProperties) -> None:
        """Take a newly committed spec; the next pass starts at once."""
        self.props = props
        self.sha = config_sha(props)
        self.rollout.commit(self.sha)
        self.actuator.update(props, self.sha)
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the rolling update (the caller has stored the choice)."""
        self.rollout.set_paused(paused)
        self._wake.set()

    def desired(self) -> Desired:
        """The committed spec as the plan reads it."""
        props = self.props
        return Desired(size=props.allocation.size,
                       logical_ids=tuple(props.allocation.logical_ids or ()),
                       config_sha=self.sha, max_surge=props.max_surge,
                       max_unavailable=props.max_unavailable,
                       max_unhealthy=props.unhealthy_limit(),
                       newest_first=props.scale_in_order == "newest",
                       update_paused=self.rollout.held, batch_pause=props.update_pause)

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
        observed = await self.plugins.instance(self.props.instance.plugin).describe_instances(
            {GROUP_TAG: self.group}, judge if properties is None else properties)
        now = time.time()
        if judge:
            members = await self.health.judge(self.plugins.flavor(self.props.flavor.plugin),
                                              self.props, observed)
        else:
            members = [self.health.last(d, now) for d in observed]
        return members, inflight, plan(self.desired(), members, inflight, now,
                                       self._last_batch)

    async def reconcile(self) -> Plan | None:
        """One pass: observe, plan, act."""
        self.passes += 1
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
        errors = await self._act(observed, inflight, decision)
        if decision.provision or decision.destroy:
            log.info("group %s: provisioned %d, destroyed %d (%d for health)%s", self.group,
                     len(decision.provision), len(decision.destroy), len(decision.replace),
                     f"; errors: {'; '.join(errors)}" if errors else "")
        if decision.breaker_open and not self.status.breaker_open:
            log.warning("group %s: circuit breaker open: %d members unhealthy, more than "
                        "MaxUnhealthy (%d); not replacing any for health", self.group,
                        decision.unhealthy, self.props.unhealthy_limit())
        self.status = Status(errors=errors, failures=self.status.failures + 1 if errors else 0,
                             breaker_open=decision.breaker_open)
        return decision

    async def _act(self, observed: list[Member], inflight: list[InFlight],
                   decision: Plan) -> list[str]:
        """Carry out ``decision`` at once; returns the errors."""
        act = self.actuator
        orphans = act.orphaned_destroys(inflight, decision)
        by_id = {m.id: m.desc for m in observed} if decision.destroy or orphans else {}
        self.rollout.count(decision, by_id, self.props.update_failure_limit)
        jobs: list[Coroutine[Any, Any, list[str] | None]] = [
            act.relabel(iid) for iid in decision.relabel]
        jobs += [act.destroy(by_id[iid]) for iid in decision.destroy]
        jobs += [act.destroy(by_id[op.instance], op) for op in orphans if op.instance in by_id]
        if decision.provision:
            jobs.append(act.provision(decision.provision))
        errors: list[str] = []
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, list):
                errors += result
            elif isinstance(result, BaseException):
                errors.append(str(result))
        return errors

    async def report(self) -> GroupStatus:
        """The group as the loop sees it: members with their verdicts, what is in flight,
        the rolling update, the breaker and the last errors."""
        members, inflight, decision = await self.observe(judge=False)
        now = time.time()
        return GroupStatus(
            id=self.group, target=self.props.target(), converged=decision.converged,
            members=[MemberStatus(id=m.id, logical_id=m.desc.logical_id,
                                  health=m.verdict.value, age=round(now - m.since, 1),
                                  current=(m.desc.tags or {}).get(CONFIG_TAG) == self.sha)
                     for m in members],
            in_flight=[OperationStatus(op=op.op, instance=op.instance, logical_id=op.logical_id,
                                       age=round(now - op.started, 1),
                                       expires_in=round(op.deadline - now, 1))
                       for op in inflight],
            outdated=decision.outdated, update_paused=self.rollout.paused,
            update_halted=self.rollout.halted, unhealthy=decision.unhealthy,
            max_unhealthy=self.props.unhealthy_limit(), breaker_open=decision.breaker_open,
            errors=self.status.errors, failures=self.status.failures, passes=self.passes)

    async def changes(self, props: GroupProperties) -> str:
        """What committing ``props`` would do, in the reference's words."""
        steps = []
        if config_sha(props) != self.sha:
            members, _, _ = await self.observe(judge=False)
            steps.append(f"Performing a rolling update on {len(members)} instances")
        target, current = props.target(), self.props.target()
        if target > current:
            steps.append(f"adding {target - current} instances to increase the group size "
                         f"to {target}")
        elif target < current:
            steps.append(f"terminating {current - target} instances to reduce the group size "
                         f"to {target}")
        text = ", then ".join(steps) or "Noop"
        return text[0].upper() + text[1:]

    async def destroy_members(self, ids: list[str],
                              recorded: Callable[[], Awaitable[None]] | None = None) -> None:
        """Drain and destroy the members ``ids``; ``recorded`` runs once their destroys are
        recorded, before any is carried out (a shrink commits the smaller size there)."""
        # with their properties: the flavor drains them
        observed, _, _ = await self.observe(judge=False, properties=True)
        members = {m.id: m.desc for m in observed}
        strangers = [i for i in ids if i not in members]
        if not ids or strangers:
            raise PluginError(f"Instances: {', '.join(map(repr, strangers)) or 'none given'}: "
                              f"not members of group '{self.group}'")
        chosen = [members[i] for i in dict.fromkeys(ids)]
        ops = await self.actuator.record_destroys(chosen)
        if recorded is not None:
            await recorded()
        errors = await self.actuator.destroy_recorded(chosen, ops)
        self._wake.set()
        if errors:
            raise PluginError("; ".join(errors))

    async def destroy_group(self) -> None:
        """Stop the loop and destroy every member, those made but not described yet
        included; on an error the loop runs again, so nothing is forgotten half-way."""
        await self.stop()  # after the pass under way: its provisions have answered
        try:
            members = await self.plugins.instance(self.props.instance.plugin).describe_instances(
                {GROUP_TAG: self.group}, False)
            members += await self._made_not_described({m.id for m in members})
            errors = await self.actuator.destroy_recorded(
                members, await self.actuator.record_destroys(members))  # each drained first
            if errors:
                raise PluginError("; ".join(errors))
        except Exception:
            self.start()
            raise

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
