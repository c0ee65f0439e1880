"""The controller's decision, as a pure function of what is declared, observed and recorded.

``plan`` never performs I/O and never reads a clock: every decision can be tested without a
socket or a sleep, and a crash at any point followed by a restart re-derives the same
decision from the same facts.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from infrakit.plugins.group.storage import InFlight
from infrakit.spi.instance import GROUP_TAG as GROUP_TAG  # the tag, for the group's modules
from infrakit.spi.types import Description

CONFIG_TAG = "infrakit.config_sha"
BOOTSTRAP = "bootstrap"


class Verdict(enum.Enum):
    """What the controller concluded about one member's health."""

    HEALTHY = "healthy"
    UNKNOWN = "unknown"
    """The flavor cannot tell: never replaced for it, never counted as healthy by a
    rolling update."""
    STARTING = "starting"
    """Young and not healthy yet: within ``StartupGrace + HealthGrace``."""
    UNHEALTHY = "unhealthy"
    """Unhealthy, for less than the grace period."""
    FAILED = "failed"
    """Unhealthy for longer than the grace period: to be replaced."""


class Member(msgspec.Struct, frozen=True, gc=False):
    """A described member with the controller's verdict and when it was first seen.
    (A struct, not a dataclass: tens of thousands are made on every pass.)"""

    desc: Description
    verdict: Verdict = Verdict.HEALTHY
    since: float = 0.0
    reason: str = ""
    """Why the verdict, when it is not healthy."""

    @property
    def id(self) -> str:
        return self.desc.id


@dataclass(frozen=True)
class Desired:
    """The declared group, reduced to what planning needs."""

    size: int
    logical_ids: tuple[str, ...]
    config_sha: str
    max_surge: int = 1
    max_unavailable: int = 0
    max_unhealthy: int = 1
    """More unhealthy members than this at once opens the circuit breaker."""
    newest_first: bool = True
    """Scale-in order among equally healthy, equally current members."""
    update_paused: bool = False
    """An operator paused the rolling update: outdated members are left as they are."""
    batch_pause: float = 0.0
    """Seconds to wait after one batch of a rolling update starts before the next."""
    launch_held: bool = False
    """Members failed to launch or died young: no provision until the backoff is over."""


@dataclass
class Plan:
    provision: list[str | None] = field(default_factory=list)
    """One entry per instance to provision: its logical ID, or None in a size group."""
    destroy: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    """The members of ``destroy`` that go because they failed their health checks."""
    relabel: list[str] = field(default_factory=list)
    """Members tagged ``bootstrap`` to adopt: give them the current config hash."""
    resolved: list[str] = field(default_factory=list)
    """In-flight keys whose work is over: described, gone, or past the deadline."""
    outdated: int = 0
    unhealthy: int = 0
    healthy: int = 0
    unknown: int = 0
    live: int = 0
    """Members not being destroyed: healthy, unhealthy, unknown, or starting (the rest)."""
    configs: dict[str | None, int] = field(default_factory=dict)
    """How many observed members carry each config hash (None: none), those being
    destroyed included: what the group's usage counts."""
    breaker_open: bool = False
    """Too many members are unhealthy at once: no member is replaced for its health."""
    batch: bool = False
    """This plan starts a new batch of the rolling update."""
    converged: bool = False

    @property
    def idle(self) -> bool:
        return not (self.provision or self.destroy or self.relabel or self.resolved)


def plan(desired: Desired, observed: list[Member], inflight: list[InFlight],
         now: float, last_batch: float = -math.inf,
         ended: frozenset[str] = frozenset()) -> Plan:
    """What to do next to bring ``observed`` (plus what is in flight) to ``desired``;
    ``last_batch`` is when the rolling update's last batch started, and ``ended`` the
    instances their plugin reported ended (a provision whose instance ended is over)."""
    out = Plan()
    destroying: set[str | None] = set()
    pending: list[InFlight] = []
    seen = {m.desc.id for m in observed} if inflight else set()
    for op in inflight:
        if now >= op.deadline:
            out.resolved.append(op.key)  # a lost provision, or a destroy to plan anew
        elif op.op == "destroy":
            if op.instance in seen:
                destroying.add(op.instance)
            else:
                out.resolved.append(op.key)  # gone, as asked
        elif op.instance is not None and (op.instance in seen or op.instance in ended):
            out.resolved.append(op.key)  # described (a member from now on), or ended
        else:
            pending.append(op)
    census = _Census.of(observed, destroying, desired.config_sha, out)
    out.configs = {desired.config_sha: len(observed) - sum(census.others.values()),
                   **census.others}
    out.outdated = len(census.outdated)
    out.unhealthy, out.healthy, out.unknown = census.unhealthy, census.healthy, census.unknown
    out.live = len(census.live)
    out.breaker_open = out.unhealthy > desired.max_unhealthy
    may_start_batch = now - last_batch >= desired.batch_pause
    if desired.logical_ids:
        _plan_quorum(desired, census, pending, out, may_start_batch)
    else:
        _plan_size(desired, census, pending, out, may_start_batch)
    if desired.launch_held:
        out.provision, out.batch = [], False
    out.converged = (out.idle and not pending and not destroying and not census.outdated
                     and census.healthy + census.unknown == len(census.live)
                     and len(census.live) == (len(desired.logical_ids) or desired.size))
    return out


@dataclass
class _Census:
    """The members that count, sorted out in one sweep (this runs on every pass, over
    every member)."""

    live: list[Member] = field(default_factory=list)
    """Members not being destroyed."""
    outdated: list[Member] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    healthy: int = 0
    unknown: int = 0
    unhealthy: int = 0
    """Unhealthy or failed members."""
    destroying: int = 0
    """Members still described while their destroy is in flight: they exist, so they
    take room under Size + MaxSurge."""
    others: dict[str | None, int] = field(default_factory=dict)
    """Members (those being destroyed included) per config hash other than the
    committed one."""

    @classmethod
    def of(cls, observed: list[Member], destroying: set[str | None], sha: str,
           out: Plan) -> _Census:
        """Sort ``observed`` out; members tagged ``bootstrap`` go to ``out.relabel``, to be
        adopted, not updated."""
        census = cls(destroying=len(destroying))
        live, outdated, failed = census.live, census.outdated, census.failed
        others = census.others
        healthy = unhealthy = unknown = 0
        for m in observed:
            desc = m.desc
            tag = desc.tags.get(CONFIG_TAG) if desc.tags else None
            if tag != sha:
                others[tag] = others.get(tag, 0) + 1
                if desc.id in destroying:
                    continue
                if tag == BOOTSTRAP:
                    out.relabel.append(desc.id)
                else:
                    outdated.append(m)
            elif desc.id in destroying:
                continue
            live.append(m)
            verdict = m.verdict
            if verdict is Verdict.HEALTHY:
                healthy += 1
            elif verdict is Verdict.FAILED:
                failed.append(desc.id)
                unhealthy += 1
            elif verdict is Verdict.UNHEALTHY:
                unhealthy += 1
            elif verdict is Verdict.UNKNOWN:
                unknown += 1
        census.healthy, census.unhealthy, census.unknown = healthy, unhealthy, unknown
        return census


def _removal_order(members: list[Member], outdated: list[Member],
                   newest_first: bool) -> list[Member]:
    """Unhealthy members first, then outdated ones, then newest (or oldest) first."""
    old = {m.id for m in outdated}
    sign = -1 if newest_first else 1
    return sorted(members, key=lambda m: (m.verdict is Verdict.HEALTHY, m.id not in old,
                                          sign * m.since))


def _plan_size(desired: Desired, census: _Census, pending: list[InFlight], out: Plan,
               may_start_batch: bool) -> None:
    live, outdated = census.live, census.outdated
    count = len(live) + len(pending)
    # how many more may exist: members being destroyed still do, until they are gone
    room = desired.size + desired.max_surge - count - census.destroying
    if count < desired.size:
        out.provision = [None] * min(desired.size - count, room)
        return
    if pending:
        return  # let them show up (or expire) before deciding what is in excess
    if census.failed and not out.breaker_open:
        out.destroy = out.replace = census.failed  # replaced on the next pass, as missing members
        return
    excess = count - desired.size
    if outdated and not out.breaker_open and not desired.update_paused:
        # Rolling update: keep at least size - MaxUnavailable healthy members and at most
        # size + MaxSurge members; new members must be healthy before old ones go.
        removable = census.healthy - (desired.size - desired.max_unavailable)
        n = min(len(outdated), removable, max(excess, 0) + desired.max_unavailable)
        if n > 0:
            out.destroy = [m.id for m in _removal_order(outdated, outdated,
                                                        desired.newest_first)[:n]]
            return
        surge = min(len(outdated), room)
        if surge > 0 and may_start_batch:
            out.provision = [None] * surge
            out.batch = True
        return
    if excess > 0:
        order = _removal_order(live, outdated, desired.newest_first)
        out.destroy = [m.id for m in order[:excess]]


def _plan_quorum(desired: Desired, census: _Census, pending: list[InFlight], out: Plan,
                 may_start_batch: bool) -> None:
    live = census.live
    wanted = set(desired.logical_ids)
    have = Counter(m.desc.logical_id for m in live)
    have.update(op.logical_id for op in pending)
    kept: set[str | None] = set()
    for m in live:
        if m.desc.logical_id not in wanted or m.desc.logical_id in kept:
            out.destroy.append(m.id)  # a stranger, or a second instance of a logical ID
        else:
            kept.add(m.desc.logical_id)
    out.provision = [lid for lid in desired.logical_ids if have[lid] == 0]
    if out.provision or out.destroy or pending or out.breaker_open:
        return
    if census.failed:
        out.destroy = out.replace = census.failed  # each comes back under its logical ID
        return
    # Rolling update: one logical ID at a time, keeping the ID, and only while every
    # member is healthy, so that a quorum never loses two members to the update.
    if not desired.update_paused and may_start_batch and census.healthy == len(live):
        for m in census.outdated:
            if m.desc.logical_id in wanted:
                out.destroy.append(m.id)
                out.batch = True
                break
