"""A commit's effect on the members, found by running the controller's own decision,
:func:`~infrakit.plugins.group.plan.plan`, pass after pass over a pretend group in which
every provision succeeds at once and every destroy too, until it has nothing left to do.

So a plan says what the controller will really do (which members go first, how many a
rolling update replaces per round under MaxSurge and MaxUnavailable) because it is what
the controller decides, not a second account of it. A long rolling update repeats the same
round: once a round repeats, the rest are counted, not run, so that planning a group of
100,000 members costs a few passes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec.structs

from infrakit.plugins.group.plan import CONFIG_TAG, Desired, Member, Plan, Verdict, plan
from infrakit.spi.types import Description

MAX_PASSES = 1000
"""Passes rehearsed at most (a round repeats long before, in any group)."""
NEW = "(new "
"""How a member the rehearsal provisions is named: ``(new 3)``."""


@dataclass
class Rehearsal:
    """What the passes did, added up."""

    tally: Counter[str] = field(default_factory=Counter)
    """``provisioned``, ``destroyed``, ``rolled`` (outdated members destroyed),
    ``batches`` (passes that destroyed outdated members), ``relabelled``, and
    ``round of N`` (rounds that destroyed N outdated members)."""
    removed: list[str] = field(default_factory=list)
    """The members that exist now and were destroyed, in the order they went."""
    failed: list[str] = field(default_factory=list)
    """Members destroyed because they failed their health checks."""
    assumed_healthy: int = 0
    """Members not healthy now, which the rehearsal had to take as healthy to go on (the
    controller waits for them)."""
    held: int = 0
    """Outdated members left as they are at the end: the rolling update is held."""
    finished: bool = True
    """False when the rehearsal stopped at MAX_PASSES (its counts are then a floor)."""

    def per_batch(self) -> int:
        """Members replaced in most rounds of the rolling update."""
        rounds = Counter({int(k.split()[-1]): n for k, n in self.tally.items()
                          if k.startswith("round of ")})
        return rounds.most_common(1)[0][0] if rounds else 0


def rehearse(desired: Desired, members: list[Member], now: float) -> Rehearsal:
    """Run ``plan`` over ``members`` until it is idle; see the module's doc."""
    live = {m.id: m for m in members}
    out = Rehearsal()
    seen: dict[int, tuple[int, Counter[str]]] = {}
    for _ in range(MAX_PASSES):
        decision = plan(desired, list(live.values()), [], now)
        if decision.idle:
            if decision.outdated and not desired.update_paused and _assume_healthy(live, out):
                continue  # stalled on members that are not healthy now: as if they were
            out.held = decision.outdated
            return out
        if (decision.outdated and not decision.replace and not decision.relabel
                and _skip_rounds(desired, live, decision.outdated, seen, out)):
            seen.clear()
            continue
        _apply(desired, decision, live, out, now)
    out.finished = False
    return out


def _apply(desired: Desired, decision: Plan, live: dict[str, Member], out: Rehearsal,
           now: float) -> None:
    """What one pass does to the pretend group."""
    sha, tally = desired.config_sha, out.tally
    rolled = 0
    for iid in decision.destroy:
        gone = live.pop(iid)
        tally["destroyed"] += 1
        if not iid.startswith(NEW):
            out.removed.append(iid)
        rolled += (gone.desc.tags or {}).get(CONFIG_TAG) != sha
    out.failed += decision.replace
    if rolled and not decision.replace:
        tally["rolled"] += rolled
        tally["batches"] += 1
        tally[f"round of {rolled}"] += 1
    for iid in decision.relabel:
        live[iid] = _with_config(live[iid], sha)
        tally["relabelled"] += 1
    for lid in decision.provision:
        tally["provisioned"] += 1
        iid = f"{NEW}{tally['provisioned']})"
        live[iid] = Member(Description(id=iid, logical_id=lid, tags={CONFIG_TAG: sha}),
                           since=now + tally["provisioned"])


def _skip_rounds(desired: Desired, live: dict[str, Member], outdated: int,
                 seen: dict[int, tuple[int, Counter[str]]], out: Rehearsal) -> bool:
    """When the group is back at a size it had earlier in this rolling update, with
    fewer outdated members, the passes in between are one round, and every round until
    the last few will be the same: count them, update their members, and say so."""
    before = seen.get(len(live))
    seen[len(live)] = (outdated, out.tally.copy())
    if before is None or before[0] <= outdated:
        return False
    step = before[0] - outdated
    rounds = (outdated - step - desired.max_surge - desired.max_unavailable) // step
    if rounds <= 0:
        return False
    one = out.tally - before[1]
    for key, n in one.items():
        out.tally[key] += n * rounds
    sha = desired.config_sha
    stale = [iid for iid, m in live.items() if (m.desc.tags or {}).get(CONFIG_TAG) != sha]
    for iid in stale[:rounds * step]:  # replaced in those rounds: now of the new config
        live[iid] = _with_config(live[iid], sha)
    return True


def _with_config(m: Member, sha: str) -> Member:
    desc = msgspec.structs.replace(m.desc, tags={**(m.desc.tags or {}), CONFIG_TAG: sha})
    return msgspec.structs.replace(m, desc=desc)


def _assume_healthy(live: dict[str, Member], out: Rehearsal) -> bool:
    """Take every member that is not healthy as healthy; False when all were already."""
    waiting = [iid for iid, m in live.items() if m.verdict is not Verdict.HEALTHY]
    for iid in waiting:
        live[iid] = msgspec.structs.replace(live[iid], verdict=Verdict.HEALTHY)
    out.assumed_healthy += len(waiting)
    return bool(waiting)
