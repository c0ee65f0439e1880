"""A commit's plan in words a user can act on (``add 2 members (Size 3 → 5)``, ``roll 5
members to the new config, 1 at a time ...``), from what the rehearsal of the controller's
decision counted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from infrakit.plugins.group.rehearse import Rehearsal
from infrakit.plugins.group.spec import GroupProperties

NAMED = 10
"""Members named at most in one sentence (the JSON plan lists them all)."""


@dataclass(frozen=True)
class Facts:
    """What the plan is worded from."""

    old: GroupProperties | None
    """The committed spec (None: a new group)."""
    new: GroupProperties
    group: str
    done: Rehearsal
    members: int
    """Members there are now."""
    config_changed: bool
    paused: bool
    """An operator paused the rolling update (else a held update halted by itself)."""
    tunables: list[str]


@dataclass
class Counts:
    add: int = 0
    remove: int = 0
    roll: int = 0
    removed: list[str] = field(default_factory=list)
    """The members removed, named when the commit only removes (no rolling update)."""


def steps_of(f: Facts) -> tuple[list[str], Counts]:
    """What will happen, in the order the controller does it, and its counts."""
    done, tally = f.done, f.done.tally
    failed = len(done.failed)
    roll = min(tally["rolled"], tally["provisioned"] - failed)
    counts = Counts(add=tally["provisioned"] - roll - failed,
                    remove=tally["destroyed"] - roll - failed, roll=roll)
    steps = []
    if failed:
        steps.append(f"replace {_members(failed)} that failed their health checks: "
                     f"{_names(done.failed)}")
    if tally["relabelled"]:
        steps.append(f"adopt {_members(tally['relabelled'])} tagged bootstrap: relabel them "
                     "with the config, no restart")
    if f.old is None and f.members:
        steps.append(f"adopt {_members(f.members)} found with the group's tag")
    if counts.add:
        steps.append(_adding(f, counts.add))
    if counts.remove:
        if not roll:
            counts.removed = [i for i in done.removed if i not in done.failed]
        steps.append(_removing(f, counts))
    if roll:
        steps.append(_rolling(f, roll))
    if done.held:
        why = ("is paused ('infrakit group resume-update' resumes it)" if f.paused else
               "of this config halted after its members failed ('infrakit group "
               "resume-update' tries again)")
        steps.append(f"{_members(done.held)} keep the old config: the rolling update {why}")
    if f.old is not None and f.config_changed and f.members and not roll and not done.held:
        steps.append("replace no member: every member has the new config already")
    if f.tunables:
        steps.append(f"tunables: {', '.join(f.tunables)} (no member changes for them)")
    return steps, counts


def _adding(f: Facts, n: int) -> str:
    verb = "create" if f.old is None else "add"
    ids = f.new.allocation.logical_ids
    if ids:
        before = set(f.old.allocation.logical_ids or ()) if f.old else set()
        return f"{verb} {_members(n)} (LogicalIDs {', '.join(i for i in ids if i not in before)})"
    if f.old is None or f.old.target() == f.new.target():  # members missing, not a resize
        return f"{verb} {_members(n)} (Size {f.new.target()})"
    return f"{verb} {_members(n)} (Size {f.old.target()} → {f.new.target()})"


def _removing(f: Facts, counts: Counts) -> str:
    new = f.new
    if new.allocation.logical_ids:  # strangers: no order to choose
        return f"remove {_members(counts.remove)} whose LogicalIDs are no longer given: " \
               f"{_names(counts.removed)}"
    before = f.old.target() if f.old else f.members
    text = f"remove {_members(counts.remove)} (Size {before} → {new.target()})"
    if counts.roll:
        return f"{text}, outdated ones first"
    return (f"{text}, unhealthy ones first, then outdated ones, then the "
            f"{new.scale_in_order} (ScaleInOrder {new.scale_in_order}): "
            f"{_names(counts.removed)}")


def _rolling(f: Facts, roll: int) -> str:
    new, done = f.new, f.done
    batches = done.tally["batches"]
    if new.allocation.logical_ids:
        text = (f"roll {_members(roll)} to the new config, one at a time, each keeping its "
                f"LogicalID, and only while every member is healthy: {batches} batches")
    else:
        text = (f"roll {_members(roll)} to the new config, {done.per_batch()} at a time "
                f"(MaxSurge {new.max_surge}, MaxUnavailable {new.max_unavailable}): "
                f"≈ {batches} batches")
    if new.update_pause and batches > 1:
        text += (f", at least {duration((batches - 1) * new.update_pause)} in all "
                 f"(UpdatePause {duration(new.update_pause)})")
    return text


def _members(n: int) -> str:
    return f"{n} member" if n == 1 else f"{n} members"


def _names(ids: list[str]) -> str:
    more = f" and {len(ids) - NAMED} more" if len(ids) > NAMED else ""
    return ", ".join(ids[:NAMED]) + more


def duration(seconds: float) -> str:
    """``90`` as ``1m30s``, ``3600`` as ``1h``, ``2.5`` as ``2.5s``."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds)
    h, m, s = whole // 3600, whole % 3600 // 60, whole % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)


def shown(value: Any) -> str:
    """A value as a plan shows it: numbers as written (``60``, not ``60.0``), the rest as
    JSON."""
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
