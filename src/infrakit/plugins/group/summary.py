"""A group in one line: its counts and its status in one phrase, as ``infrakit group ls``
and the web console show it (``Group.Summaries``).

The status is decided by :func:`summarize` alone, a pure function, so that every place
that shows it agrees. Its words are those the metrics and the events use: ``breaker
open`` (``infrakit_group_breaker_open``, the ``breaker opened`` event), ``backing off``
(``infrakit_group_backoff``, ``backoff started``), ``paused``, ``updating`` and ``update
halted`` (``infrakit_group_update{state=...}``, ``update halted``).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from infrakit.spi.group import GroupSummary

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController

STATUSES = ("destroying", "update halted", "failing", "breaker open", "backing off",
            "paused", "updating", "converging", "converged")
"""Every status, in the order of precedence: a group shows the first that holds.

- ``destroying``: the group is being destroyed; nothing else about it matters any more.
- ``update halted``: the rolling update stopped by itself (too many new members failed);
  it waits for an operator, whatever else holds.
- ``failing``: the last passes met errors (a plugin that does not answer, provisions
  refused); what the group reports may be stale.
- ``breaker open``: too many members are unhealthy at once for any to be replaced.
- ``backing off``: launches are held back after members failed to start (a crash loop).
- ``paused``: an operator paused the rolling update, and members are still to be replaced.
- ``updating``: the rolling update is replacing members of another config.
- ``converging``: members are being added, removed or replaced, or the group has not been
  looked at yet.
- ``converged``: the group has the members it asks for, healthy or starting, all on the
  committed config, nothing in flight.
"""


def summarize(*, observed: bool, converged: bool, destroying: bool = False, halted: str = "",
              error: str = "", breaker_open: bool = False, backoff: str = "",
              paused: bool = False, outdated: int = 0, members: int = 0, ready: int = 0,
              size: int = 0) -> tuple[str, str]:
    """The status of a group (the first of :data:`STATUSES` that holds) and why, in words
    (empty when converged). ``observed``: a pass has looked at the group; ``halted``,
    ``error`` and ``backoff``: the halted update's reason, the last pass's error, the
    backoff's description, each empty when there is none; ``outdated``: members on another
    config than the committed one; ``members``, ``ready``, ``size``: the members there are,
    the healthy ones, and how many the spec asks for."""
    if destroying:
        return "destroying", "members are being destroyed"
    if halted:
        return "update halted", halted
    if error:
        return "failing", error
    if breaker_open:
        return "breaker open", "too many members are unhealthy to replace any"
    if backoff:
        return "backing off", backoff
    if paused and outdated:
        return "paused", f"{outdated} members still to update"
    if outdated:
        return "updating", f"{outdated} members still to update"
    if not observed:
        return "converging", "not looked at yet"
    if not converged:
        return "converging", f"{members} of {size} members, {ready} ready"
    return "converged", ""


def summary_of(c: GroupController, now: float) -> GroupSummary:
    """Group ``c`` as its last pass left it (no call to any plugin)."""
    decision = c.last.decision
    errors = c.status.errors
    status, reason = summarize(
        observed=decision is not None, converged=decision is not None and decision.converged,
        destroying=c.destroying, halted=c.rollout.halted,
        error=errors[-1] if c.status.failures and errors else "",
        breaker_open=c.status.breaker_open,
        backoff=c.backoff.describe(now) if c.backoff.held(now) else "",
        paused=c.rollout.paused, outdated=decision.outdated if decision is not None else 0,
        members=decision.live if decision is not None else 0,
        ready=decision.healthy if decision is not None else 0, size=c.props.target())
    created = (datetime.datetime.fromtimestamp(c.created, datetime.timezone.utc)
               if c.created is not None else None)
    if decision is None:
        return GroupSummary(id=c.group, size=c.props.target(), status=status, reason=reason,
                            created=created)
    return GroupSummary(id=c.group, size=c.props.target(), members=decision.live,
                        ready=decision.healthy, up_to_date=decision.live - decision.outdated,
                        status=status, reason=reason, created=created)

