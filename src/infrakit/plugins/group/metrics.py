"""The groups of this process as Prometheus metrics, read from the controllers at each
scrape of ``GET /metrics``.

A pass does no metrics work of its own beyond timing itself: the members by state are the
counts the last pass's plan made anyway (of the members not being destroyed); provisions,
destroys, failed launches and deaths are the counts the group's event log keeps as it adds
each event, by the same reason words the events and ``infrakit group events`` show. No
label names a member, so a series costs the same at ten members as at ten thousand.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from infrakit.plugins.group.plan import Plan

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from infrakit.plugins.group.controller import GroupController

RECONCILE_SECONDS = Histogram(
    "infrakit_group_reconcile_seconds", "Seconds a reconcile pass of a group took, from its "
    "first call to its last write (any group of this process).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))

UPDATE_STATES = ("idle", "updating", "paused", "halted")


@dataclass
class LastPass:
    """What a group's last reconcile pass met, read by the metrics at a scrape."""

    decision: Plan | None = None
    """Its counts of members by health, of outdated members, and whether it converged."""
    ended: float = 0.0
    """When the last pass of the control loop ended (Unix time)."""
    peak: int = 0
    """The most members the group has had, up to its target: a provision that makes up for
    a lost member is a replacement, one beyond it a scale-out (see
    :func:`~infrakit.plugins.group.events.provision_reasons`)."""

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time a pass of the control loop, into the histogram and :attr:`ended`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            RECONCILE_SECONDS.observe(time.perf_counter() - started)
            self.ended = time.time()

def update_state(c: GroupController) -> str:
    """The rolling update, in one word: halted by itself, paused by an operator, under way,
    or idle (every member has the committed config)."""
    if c.rollout.halted:
        return "halted"
    if c.rollout.paused:
        return "paused"
    return "updating" if c.last.decision is not None and c.last.decision.outdated else "idle"


class _Families:
    """The families of one scrape, filled group by group."""

    def __init__(self) -> None:
        g = ["group"]
        self.members = GaugeMetricFamily(
            "infrakit_group_members", "Members by state as the last pass judged them: "
            "healthy, unhealthy, starting and unknown partition the members (those being "
            "destroyed aside); outdated counts those whose config differs from the "
            "committed one.", labels=[*g, "state"])
        self.desired = GaugeMetricFamily("infrakit_group_desired_members",
                                         "Members the committed spec asks for.", labels=g)
        self.converged = GaugeMetricFamily(
            "infrakit_group_converged", "1 when the group has the members it asks for, all "
            "healthy or starting, none outdated and nothing in flight; else 0.", labels=g)
        self.provisions = CounterMetricFamily(
            "infrakit_group_provisions", "Members provisioned, by reason: scale-out, "
            "replacement (of a member that died, went missing or was destroyed unhealthy), "
            "rolling update.", labels=[*g, "reason"])
        self.destroys = CounterMetricFamily(
            "infrakit_group_destroys", "Members destroyed or gone, by reason: scale-in, "
            "unhealthy, missing, rolling update, by request, recorded before a restart.",
            labels=[*g, "reason"])
        self.launch_failures = CounterMetricFamily(
            "infrakit_group_launch_failures", "Provisions that failed.", labels=g)
        self.deaths = CounterMetricFamily(
            "infrakit_group_member_deaths", "Members that died (exited, crashed or were "
            "killed) without being destroyed.", labels=g)
        self.backoff = GaugeMetricFamily("infrakit_group_backoff", "1 while the group's "
                                         "launches are held back after failures.", labels=g)
        self.backoff_seconds = GaugeMetricFamily(
            "infrakit_group_backoff_seconds", "Seconds until the group may launch again "
            "(0 when it may now).", labels=g)
        self.breaker = GaugeMetricFamily(
            "infrakit_group_breaker_open", "1 while too many members are unhealthy at once "
            "for any to be replaced for its health (MaxUnhealthy).", labels=g)
        self.update = GaugeMetricFamily(
            "infrakit_group_update", "The rolling update's state, one-hot over idle, "
            "updating, paused and halted.", labels=[*g, "state"])
        self.halted = GaugeMetricFamily(
            "infrakit_group_halted_info", "1 while the rolling update is halted, with the "
            "reason in words.", labels=[*g, "reason"])
        self.last_pass = GaugeMetricFamily(
            "infrakit_group_last_reconcile_timestamp_seconds", "When the group's last "
            "reconcile pass ended (Unix time; 0 before the first).", labels=g)

    def add(self, c: GroupController, now: float) -> None:
        gid = c.group
        last = c.last
        decision = last.decision or Plan()
        starting = decision.live - decision.healthy - decision.unhealthy - decision.unknown
        for state, count in (("healthy", decision.healthy), ("unhealthy", decision.unhealthy),
                             ("starting", starting), ("unknown", decision.unknown),
                             ("outdated", decision.outdated)):
            self.members.add_metric([gid, state], count)
        self.desired.add_metric([gid], c.props.target())
        self.converged.add_metric([gid], int(decision.converged))
        counts = c.events.counts
        for (kind, reason), n in sorted(counts.items()):
            if kind == "provisioned":
                self.provisions.add_metric([gid, reason], n)
            elif kind == "destroyed":
                self.destroys.add_metric([gid, reason], n)
        self.launch_failures.add_metric([gid], counts[("launch failed", "")])
        self.deaths.add_metric([gid], counts[("member died", "")])
        wait = max(c.backoff.next_launch - now, 0.0)
        self.backoff.add_metric([gid], int(wait > 0))
        self.backoff_seconds.add_metric([gid], wait)
        self.breaker.add_metric([gid], int(c.status.breaker_open))
        state = update_state(c)
        for s in UPDATE_STATES:
            self.update.add_metric([gid, s], int(s == state))
        if c.rollout.halted:
            self.halted.add_metric([gid, c.rollout.halted], 1)
        self.last_pass.add_metric([gid], last.ended)

    def all(self) -> Iterable[Metric]:
        return [self.members, self.desired, self.converged, self.provisions, self.destroys,
                self.launch_failures, self.deaths, self.backoff, self.backoff_seconds,
                self.breaker, self.update, self.halted, self.last_pass]


class GroupCollector:
    """Reads the controllers of every group plugin of this process that is running."""

    def __init__(self) -> None:
        self.watched: dict[int, Mapping[str, GroupController]] = {}
        """The controllers of each running group plugin, by the plugin's id."""

    def collect(self) -> Iterator[Metric]:
        families, now = _Families(), time.time()
        for controllers in list(self.watched.values()):
            for gid in sorted(controllers):
                families.add(controllers[gid], now)
        yield from families.all()


COLLECTOR = GroupCollector()
REGISTRY.register(COLLECTOR)
