"""The controller's decision, as a pure function of what is declared, observed and recorded.

``plan`` never performs I/O and never reads a clock: every decision can be tested without a
socket or a sleep, and a crash at any point followed by a restart re-derives the same
decision from the same facts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from infrakit.spi.types import Description
from infrakit.store.base import InFlight

GROUP_TAG = "infrakit.group"
CONFIG_TAG = "infrakit.config_sha"
BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class Desired:
    """The declared group, reduced to what planning needs."""

    size: int
    logical_ids: tuple[str, ...]
    config_sha: str
    max_surge: int = 1


@dataclass
class Plan:
    provision: list[str | None] = field(default_factory=list)
    """One entry per instance to provision: its logical ID, or None in a size group."""
    destroy: list[str] = field(default_factory=list)
    relabel: list[str] = field(default_factory=list)
    """Members tagged ``bootstrap`` to adopt: give them the current config hash."""
    resolved: list[str] = field(default_factory=list)
    """In-flight provision keys whose instance is now described, or whose deadline passed."""
    outdated: int = 0
    converged: bool = False

    @property
    def idle(self) -> bool:
        return not (self.provision or self.destroy or self.relabel or self.resolved)


def plan(desired: Desired, observed: list[Description], inflight: list[InFlight],
         now: float) -> Plan:
    """What to do next to bring ``observed`` (plus what is in flight) to ``desired``."""
    out = Plan()
    seen = {d.id for d in observed}
    destroying: set[str | None] = set()
    pending: list[InFlight] = []
    for op in inflight:
        if now >= op.deadline:
            out.resolved.append(op.key)  # a lost provision, or a destroy to plan anew
        elif op.op == "destroy":
            if op.instance in seen:
                destroying.add(op.instance)
            else:
                out.resolved.append(op.key)  # gone, as asked
        elif op.instance is not None and op.instance in seen:
            out.resolved.append(op.key)  # described: it counts as a member from now on
        else:
            pending.append(op)
    live = [d for d in observed if d.id not in destroying]
    for d in live:
        if (d.tags or {}).get(CONFIG_TAG) == BOOTSTRAP:
            out.relabel.append(d.id)
    adopted = set(out.relabel)
    outdated = [d for d in live
                if d.id not in adopted and (d.tags or {}).get(CONFIG_TAG) != desired.config_sha]
    out.outdated = len(outdated)
    if desired.logical_ids:
        _plan_quorum(desired, live, pending, outdated, out)
    else:
        _plan_size(desired, live, pending, outdated, out)
    out.converged = (out.idle and not pending and not destroying and not outdated)
    return out


def _plan_size(desired: Desired, live: list[Description], pending: list[InFlight],
               outdated: list[Description], out: Plan) -> None:
    count = len(live) + len(pending)
    if count < desired.size:
        out.provision = [None] * (desired.size - count)
        return
    if pending:
        return  # let them show up (or expire) before deciding what is in excess
    # Rolling update: surge new members while outdated ones remain; the scale-in below then
    # removes outdated members first.
    if outdated and count == desired.size:
        out.provision = [None] * min(desired.max_surge, len(outdated))
        return
    excess = count - desired.size
    if excess > 0:
        old = {d.id for d in outdated}
        order = sorted(live, key=lambda d: d.id not in old)  # outdated first, stable
        out.destroy = [d.id for d in order[:excess]]


def _plan_quorum(desired: Desired, live: list[Description], pending: list[InFlight],
                 outdated: list[Description], out: Plan) -> None:
    wanted = set(desired.logical_ids)
    have = Counter(d.logical_id for d in live)
    have.update(op.logical_id for op in pending)
    seen: set[str | None] = set()
    for d in live:
        if d.logical_id not in wanted or d.logical_id in seen:
            out.destroy.append(d.id)  # a stranger, or a second instance of a logical ID
        else:
            seen.add(d.logical_id)
    out.provision = [lid for lid in desired.logical_ids if have[lid] == 0]
    # Rolling update: one logical ID at a time, keeping the ID.
    if not out.provision and not out.destroy and not pending:
        for d in outdated:
            if d.logical_id in wanted:
                out.destroy.append(d.id)
                break
