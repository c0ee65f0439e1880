"""What a group's controller tells a user: its status (DescribeStatus), and what a commit
would change, in the reference's words for what the reference does and in ours for the
rest."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.structs

from infrakit.plugins.group.plan import BOOTSTRAP, CONFIG_TAG, Member, Plan
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.plugins.group.specdiff import MEMBER_FIELDS
from infrakit.plugins.group.storage import InFlight
from infrakit.spi.group import GroupStatus, MemberStatus, OperationStatus
from infrakit.spi.types import Description

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController

log = logging.getLogger("infrakit.group")

async def report(c: GroupController) -> GroupStatus:
    """The group as its controller sees it: members with their verdicts, restarts and last
    exits, what is in flight, the rolling update, the backoff, the breaker and the last
    errors (from what the last pass learnt: one call to the instance plugin)."""
    members, inflight, decision = await c.observe(judge=False)
    return status_of(c, members, inflight, decision, time.time())


def adoption(found: list[Description], props: GroupProperties) -> str:
    """For a group not watched yet, the members ``found`` that it will adopt (a freed
    group committed again): a line after the reference's sentence, which says nothing of
    them."""
    if not found:
        return ""
    sha = config_sha(props)
    other = sum((d.tags or {}).get(CONFIG_TAG) not in (sha, BOOTSTRAP) for d in found)
    replaced = (f"; {other} of them have another config and will be replaced by a rolling "
                "update") if other else ""
    return f"\nAdopting {len(found)} existing members{replaced}"


def status_of(c: GroupController, members: list[Member], inflight: list[InFlight],
              decision: Plan, now: float) -> GroupStatus:
    """The group as its controller sees it at ``now``."""
    endings = c.endings
    return GroupStatus(
        id=c.group, target=c.props.target(), converged=decision.converged,
        members=[_member(c.sha, m, endings.restarts.get(m.id, 0), endings.last.get(m.id), now)
                 for m in members],
        in_flight=[OperationStatus(op=op.op, instance=op.instance, logical_id=op.logical_id,
                                   age=round(now - op.started, 1),
                                   expires_in=round(op.deadline - now, 1))
                   for op in inflight],
        outdated=decision.outdated, update_paused=c.rollout.paused,
        update_halted=c.rollout.halted, unhealthy=decision.unhealthy,
        max_unhealthy=c.props.unhealthy_limit(), breaker_open=decision.breaker_open,
        errors=c.status.errors, failures=c.status.failures, passes=c.passes,
        backoff=c.backoff.describe(now) if c.backoff.held(now) else "",
        health_unknown=c.health.unknown_reason(), destroying=c.destroying)


def log_pass(c: GroupController, decision: Plan, errors: list[str]) -> None:
    """Say what went wrong in a pass, and when the breaker opens (what it did is said
    member by member, with the reasons, by :func:`~infrakit.plugins.group.events.acted`)."""
    if errors:
        log.info("group %s: %d errors: %s", c.group, len(errors), "; ".join(errors[:10]))
    if decision.breaker_open and not c.status.breaker_open:
        log.warning("group %s: circuit breaker open: %d members unhealthy, more than "
                    "MaxUnhealthy (%d); not replacing any for health", c.group,
                    decision.unhealthy, c.props.unhealthy_limit())


def _member(sha: str, m: Member, restarts: int, last: Any, now: float) -> MemberStatus:
    return MemberStatus(
        id=m.id, logical_id=m.desc.logical_id, health=m.verdict.value,
        age=round(now - m.since, 1), current=(m.desc.tags or {}).get(CONFIG_TAG) == sha,
        reason=m.reason, restarts=restarts, last_exit=last.describe() if last else "",
        last_output=list(last.output) if last and last.output else None)


def changes(old: GroupProperties, new: GroupProperties, undesired: int, desired: int) -> str:
    """What committing ``new`` over ``old`` would do, given how many members do not have
    (``undesired``) and have (``desired``) the new config: the reference's sentence, word
    for word, then a line naming the tunables of ours that change, if any; when only
    tunables change, that line alone (never the reference's "Noop", which scripts read as
    "nothing changes")."""
    text = _quorum_change(old, new) if new.allocation.logical_ids else \
        _size_change(old, new, undesired, desired)
    tuned = _tunables(old, new)
    if not tuned:
        return text
    # never "Noop" when something changes: a tunable change is said in its place
    return f"Changing {tuned}" if text == "Noop" else f"{text}\nChanging {tuned}"


def _size_change(old: GroupProperties, new: GroupProperties, undesired: int,
                 desired: int) -> str:
    size, change = new.allocation.size, new.allocation.size - old.allocation.size
    if change < 0:
        roll = max(size - desired, 0)
        text = f"Terminating {-change} instances to reduce the group size to {size}"
        return f"{text}, then performing a rolling update on {roll} instances" if roll else text
    if change > 0:
        text = f"adding {change} instances to increase the group size to {size}"
        if undesired:
            return f"Performing a rolling update on {undesired} instances, then {text}"
        return text[0].upper() + text[1:]
    if undesired:
        return f"Performing a rolling update on {undesired} instances"
    if config_sha(new) == config_sha(old):
        return "Noop"
    return "Adjusting the instance configuration, no restarts necessary"


def _quorum_change(old: GroupProperties, new: GroupProperties) -> str:
    before, after = old.allocation.logical_ids or [], new.allocation.logical_ids or []
    if len(before) > len(after) and set(after) <= set(before):
        return f"Terminating {len(before) - len(after)} instances to reduce the group size " \
               f"to {len(after)}"
    if len(before) < len(after) and set(before) <= set(after):
        return f"Adding {len(after) - len(before)} instances to increase the group size " \
               f"to {len(after)}"
    if set(before) != set(after):  # the reference refuses this; we add and remove members
        added = [i for i in after if i not in before]
        removed = [i for i in before if i not in after]
        return "Changing the logical IDs: " + "; ".join(
            part for part in (f"adding {', '.join(added)}" if added else "",
                              f"removing {', '.join(removed)}" if removed else "") if part)
    if config_sha(new) != config_sha(old):
        return f"Performing a rolling update on {len(after)} instances"
    return "Reordering the logical IDs, no member changes" if before != after else "Noop"


def _tunables(old: GroupProperties, new: GroupProperties) -> str:
    """``HealthGrace from 60 to 5, StartupGrace from 0 to 5``: our fields that differ."""
    return ", ".join(
        f"{f.encode_name} from {_shown(getattr(old, f.name))} to {_shown(getattr(new, f.name))}"
        for f in msgspec.structs.fields(GroupProperties)
        if f.encode_name not in MEMBER_FIELDS and getattr(old, f.name) != getattr(new, f.name))


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
