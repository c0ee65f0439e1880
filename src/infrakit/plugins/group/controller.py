"""One group's control loop: observe, plan, act, and again, until stopped; and the group's
status as the loop sees it.

The controller decides with the pure :func:`~infrakit.plugins.group.plan.plan`; the
verdicts come from :class:`~infrakit.plugins.group.health.HealthJudge`, the acting is the
:class:`~infrakit.plugins.group.actuator.Actuator`'s, the rolling update's own state is
the :class:`~infrakit.plugins.group.rollout.Rollout`'s, and what ended members leave
behind (restarts, last exits, the crash-loop backoff) is in
:mod:`~infrakit.plugins.group.endings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec

from infrakit.plugins.group.actuator import Actuator, Fence
from infrakit.plugins.group.endings import Backoff, Endings
from infrakit.plugins.group.events import EventLog, acted
from infrakit.plugins.group.health import HealthJudge
from infrakit.plugins.group.metrics import LastPass
from infrakit.plugins.group.plan import (
    BOOTSTRAP,
    CONFIG_TAG,
    GROUP_TAG,
    Desired,
    Member,
    Plan,
    Verdict,
    plan,
)
from infrakit.plugins.group.report import log_pass
from infrakit.plugins.group.rollout import Rollout
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.plugins.group.storage import GroupStore, InFlight
from infrakit.plugins.group.usage import UsageMeter
from infrakit.spi.calls import AsyncInstanceAPI, PluginLookup
from infrakit.spi.errors import PluginError, Unsupported
from infrakit.spi.instance import EndedInstance
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
    converged: bool = False
    members: int = 0
    unhealthy: int = 0
    outdated: int = 0
    """Members of another config than the committed one."""


class GroupController:
    """Keeps one group converged."""

    def __init__(self, group: str, props: GroupProperties, store: GroupStore,
                 plugins: PluginLookup, poll: float, paused: bool = False,
                 fence: Fence | None = None, resumed: bool = False) -> None:
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
        self.endings = Endings()
        self.backoff = Backoff(group)
        self.events = EventLog(group, store)
        """What happened, written at the end of the pass that saw it."""
        self.usage = UsageMeter(group)
        """Member time, counted by each pass."""
        self._ended: frozenset[str] = frozenset()
        """The instances the plugin last reported ended."""
        self._born = time.time()
        self._tells_endings = True
        """Whether the instance plugin reports endings (until it says it cannot)."""
        self._wake = asyncio.Event()
        self._last_batch = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.destroying = False
        """The group is being destroyed: its loop never runs again."""
        self.created: float | None = None
        """When the group was first committed, as its store keeps it (None: not known)."""
        self.sha = ""
        self.last = LastPass(peak=props.target() if resumed else 0)
        """What the last pass met, for the metrics (a resumed group had all its members)."""
        self.update(props)

    def update(self, props: GroupProperties) -> None:
        """Take a newly committed spec; the next pass starts at once."""
        self.props = props
        sha = config_sha(props)
        if sha != self.sha:  # a new config: its launches start afresh
            self.backoff.reset("a new config was committed")
        self.sha = sha
        self.usage.know(sha, msgspec.json.encode(props.instance))
        self.rollout.commit(self.sha)
        self.actuator.update(props, self.sha)
        self.health.remember(self.sha, props.flavor)
        self.backoff.limit = props.backoff_limit
        self._wake.set()

    def wake(self) -> None:
        """Start the next pass at once."""
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the rolling update (the caller has stored the choice)."""
        self.rollout.set_paused(paused)
        self._wake.set()

    def desired(self, now: float) -> Desired:
        """The committed spec, and the state of the update and the backoff at ``now``, as
        the plan reads them."""
        return declared(self.props, self.sha, self.rollout.held, self.backoff.held(now))

    def start(self) -> None:
        if not self.destroying:
            self._task = contextvars.Context().run(  # not as the caller of the commit
                asyncio.get_running_loop().create_task, self._run(), name=self.group)
            self.usage.open()

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
            await self.usage.close(self.store)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            acted = False
            try:
                with self.last.timed():
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
            hold = self.backoff.next_launch - time.time()
            if hold > 0:  # launch again as soon as the backoff allows
                wait = min(wait, hold + FOLLOW_UP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def observe(self, judge: bool = True, properties: bool | None = None,
                      ) -> tuple[list[Member], list[InFlight], Plan]:
        """Describe the members and plan, without acting. With ``judge``, ask the flavor
        about each member's health and the instance plugin about the members that ended;
        without, reuse what the last pass learnt (so that DescribeGroup costs one call, not
        one per member). The members' properties are described when asked for, and by
        default only to judge with a check that refers to them (a probe aimed by
        ``{{ .Properties.port }}``)."""
        # In-flight records first, then the description: an operation that ends in between
        # then errs on the safe side (a finished destroy's instance is simply gone; a
        # finished provision counts twice for a pass, which delays, never duplicates). The
        # other order would count a just-destroyed instance as a live member.
        inflight = await asyncio.to_thread(self.store.inflight, self.group)
        instance = self.plugins.instance(self.props.instance.plugin)
        observed = await instance.describe_instances(
            {GROUP_TAG: self.group},
            judge and self.health.wants_properties() if properties is None else properties)
        if judge:
            members = await self._judge(instance, observed)
        else:
            now = time.time()
            members = [self.health.last(d, now) for d in observed]
        now = time.time()
        return members, inflight, plan(self.desired(now), members, inflight, now,
                                       self._last_batch, self._ended)

    async def _judge(self, instance: AsyncInstanceAPI,
                     observed: list[Description]) -> list[Member]:
        """Learn the endings the plugin reports (before judging, which forgets the members
        that are gone), then judge the members and settle the backoff."""
        ended = await _describe_ended(self, instance)
        if ended is not None:  # unknown this pass: what was handled stays handled
            self._ended = frozenset(e.id for e in ended)
            self._learn(self.endings.new(ended), observed, time.time())
        if self.endings.waiting:
            self.endings.adopt([(d.id, d.logical_id) for d in observed
                                if self.health.seen(d.id) is None])
        members = await self.health.judge(self.plugins, self.props, self.sha, observed)
        props = self.props
        if self.backoff.failures:
            self.backoff.settle([m.since for m in members if m.verdict is Verdict.HEALTHY],
                                time.time(), props.startup_grace + props.health_grace)
        return members

    def _learn(self, fresh: list[EndedInstance], observed: list[Description],
               now: float) -> None:
        """Handle each new ending once: say it, back off after a failure, and count the
        failures of the new config's members during a rolling update."""
        # what ended before this controller began was handled, or not, by its predecessor
        fresh = [e for e in fresh if not e.ended or e.ended >= self._born]
        if not fresh:
            return
        props = self.props
        updating = any((d.tags or {}).get(CONFIG_TAG) not in (self.sha, BOOTSTRAP)
                       for d in observed)
        failed = []
        for ended in fresh:
            ending = self.endings.classify(ended, self.health.seen(ended.id),
                                           props.startup_grace + props.health_grace)
            log.warning("group %s: member %s", self.group, ending.describe())
            self.events.ended(ending)
            if ending.failure:
                failed.append(ending.describe())
            if updating and ending.config == self.sha and ending.kind != "removed":
                self.halt(1, ending.describe())
        if failed:  # one step per round of launches, however many members it had
            self.backoff.failed(now, failed[-1])
            self.events.backoff(self, failed[-1])

    def halt(self, n: int, what: str) -> None:
        """Count ``n`` failures against the rolling update, which halts past its limit."""
        if self.rollout.failed(n, what, self.props.update_failure_limit):
            self.events.add("update halted", self.rollout.halted)

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
        self.last.decision = decision
        self.usage.observe(decision.configs, self.health.take_new(), time.time())
        if decision.batch:
            self._last_batch = time.time()
        if decision.resolved:
            await asyncio.to_thread(self.store.forget, *decision.resolved)
        errors, launch_errors = await self._act(observed, inflight, decision)
        errors = counted(errors)  # 16 members refused alike: one error, not 16
        log_pass(self, decision, errors)
        await _after_pass(self, decision, len(observed), errors, launch_errors)
        return decision

    async def _act(self, observed: list[Member], inflight: list[InFlight],
                   decision: Plan) -> tuple[list[str], list[str]]:
        """Carry out ``decision`` at once; returns the errors, and those of them that were
        provisions."""
        act = self.actuator
        orphans = act.orphaned_destroys(inflight, decision)
        by_id = {m.id: m for m in observed} if decision.destroy or orphans else {}
        if self.rollout.count(decision, by_id, self.props.update_failure_limit):
            self.events.add("update halted", self.rollout.halted)
        jobs: list[Coroutine[Any, Any, list[str] | None]] = [
            act.relabel(iid) for iid in decision.relabel]
        jobs += [act.destroy(by_id[iid].desc) for iid in decision.destroy]
        jobs += [act.destroy(by_id[op.instance].desc, op) for op in orphans
                 if op.instance in by_id]
        self.endings.forget(set(decision.destroy))
        provisions = act.provision(decision.provision) if decision.provision else None
        results = await asyncio.gather(*jobs, *([provisions] if provisions else []),
                                       return_exceptions=True)
        launch = results[-1] if provisions else []
        launch_errors = launch if isinstance(launch, list) else \
            [str(launch)] if isinstance(launch, BaseException) else []
        first = len(decision.relabel)
        destroyed = [*decision.destroy, *(op.instance for op in orphans if op.instance in by_id)]
        acted(self, decision, by_id, [i for i, r in zip(destroyed, results[first:], strict=False)
                                      if i and not isinstance(r, BaseException)],
              act.made if provisions else [], launch_errors)
        return _errors_of(results), launch_errors


def declared(props: GroupProperties, sha: str, held: bool, launch_held: bool) -> Desired:
    """``props`` as the plan reads them; ``held``: the rolling update is paused or halted;
    ``launch_held``: the crash-loop backoff holds launches back. (A commit's plan reads a
    spec not yet committed through this too, so that it decides as the loop will.)"""
    return Desired(size=props.allocation.size,
                   logical_ids=tuple(props.allocation.logical_ids or ()),
                   config_sha=sha, max_surge=props.max_surge,
                   max_unavailable=props.max_unavailable,
                   max_unhealthy=props.unhealthy_limit(),
                   newest_first=props.scale_in_order == "newest",
                   update_paused=held, batch_pause=props.update_pause,
                   launch_held=launch_held)


async def _after_pass(c: GroupController, decision: Plan, members: int, errors: list[str],
                      launch_errors: list[str]) -> None:
    """What a pass leaves for the next and for those who watch: the backoff after failed
    launches, the events (written), the usage (written when due) and the status."""
    if launch_errors:
        what = f"launch failed: {launch_errors[0]}"
        c.backoff.failed(time.time(), what)
        c.events.backoff(c, what)
        if decision.outdated:
            c.halt(len(launch_errors), what)
    c.events.transitions(c, decision)
    c.last.peak = min(max(c.last.peak, members), c.props.target())
    await c.events.flush()
    await c.usage.write(c.store)
    c.status = Status(errors=errors, failures=c.status.failures + 1 if errors else 0,
                      breaker_open=decision.breaker_open, converged=decision.converged,
                      members=members, unhealthy=decision.unhealthy,
                      outdated=decision.outdated)


def _errors_of(results: list[Any]) -> list[str]:
    errors: list[str] = []
    for result in results:
        if isinstance(result, list):
            errors += result
        elif isinstance(result, BaseException):
            errors.append(str(result))
    return errors


async def _describe_ended(c: GroupController,
                          instance: AsyncInstanceAPI) -> list[EndedInstance] | None:
    """What the instance plugin knows of members that ended; None when it cannot tell
    (now, or ever)."""
    if not c._tells_endings:
        return None
    try:
        return await instance.describe_ended({GROUP_TAG: c.group})
    except Unsupported:  # a plugin that predates it: members only go missing
        c._tells_endings = False
    except PluginError as exc:
        log.warning("group %s: cannot learn which members ended: %s", c.group, exc)
    return None


def counted(errors: list[str]) -> list[str]:
    """Each error once, in the order first met, with how many times when more than once."""
    return [f"{e} ({n} times)" if n > 1 else e for e, n in Counter(errors).items()]
