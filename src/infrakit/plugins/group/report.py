"""What a group's controller tells a user: its status (DescribeStatus), and what a commit
would change, in the reference's words for what the reference does and in ours for the
rest."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.structs

from infrakit.plugins.group.plan import CONFIG_TAG, Member, Plan
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.plugins.group.storage import InFlight
from infrakit.spi.group import GroupStatus, MemberStatus, OperationStatus

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController

log = logging.getLogger("infrakit.group")

_NOT_TUNABLES = ("Allocation", "Instance", "Flavor")
"""The reference's fields: their changes are said in the reference's words."""


async def report(c: GroupController) -> GroupStatus:
    """The group as its controller sees it: members with their verdicts, restarts and last
    exits, what is in flight, the rolling update, the backoff, the breaker and the last
    errors (from what the last pass learnt: one call to the instance plugin)."""
    members, inflight, decision = await c.observe(judge=False)
    return status_of(c, members, inflight, decision, time.time())


async def commit_details(c: GroupController, props: GroupProperties) -> str:
    """What committing ``props`` would do to the group ``c`` runs."""
    members = None
    if config_sha(props) != c.sha:
        observed, _, _ = await c.observe(judge=False)
        members = len(observed)
    return changes(c.props, props, members)


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
    """Say what a pass did, and when the breaker opens."""
    if decision.provision or decision.destroy:
        log.info("group %s: provisioned %d, destroyed %d (%d for health)%s", c.group,
                 len(decision.provision), len(decision.destroy), len(decision.replace),
                 f"; errors: {'; '.join(errors)}" if errors else "")
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


def changes(old: GroupProperties, new: GroupProperties, members: int | None) -> str:
    """What committing ``new`` over ``old`` would do; ``members`` is how many members a
    rolling update would replace (None when the config does not change)."""
    steps = []
    if members is not None and config_sha(new) != config_sha(old):
        steps.append(f"Performing a rolling update on {members} instances")
    target, current = new.target(), old.target()
    if target > current:
        steps.append(f"adding {target - current} instances to increase the group size "
                     f"to {target}")
    elif target < current:
        steps.append(f"terminating {current - target} instances to reduce the group size "
                     f"to {target}")
    text = ", then ".join(steps)
    tuned = _tunables(old, new)
    if tuned:
        text = f"{text}; changing {tuned}" if text else f"changing {tuned}"
    text = text or "Noop"
    return text[0].upper() + text[1:]


def _tunables(old: GroupProperties, new: GroupProperties) -> str:
    """``HealthGrace from 60 to 5, StartupGrace from 0 to 5``: our fields that differ."""
    return ", ".join(
        f"{f.encode_name} from {_shown(getattr(old, f.name))} to {_shown(getattr(new, f.name))}"
        for f in msgspec.structs.fields(GroupProperties)
        if f.encode_name not in _NOT_TUNABLES and getattr(old, f.name) != getattr(new, f.name))


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
