"""What happened to a group, in words, kept in its store for ``infrakit group events``:
which member was provisioned or destroyed and why, which launch failed, which member died
and how, the breaker, the rolling update, the backoff and the commits.

A controller's pass gathers its events in an :class:`EventLog` and writes them in one
store write at its end; a pass that does nothing writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infrakit.plugins.group.endings import Ending
from infrakit.plugins.group.plan import CONFIG_TAG, Member, Plan
from infrakit.plugins.group.storage import GroupStore
from infrakit.spi.access import actor_name
from infrakit.spi.group import GroupEvent

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController

log = logging.getLogger("infrakit.group")

NAMES_PER_LINE = 10
"""Members a log line names at most; the rest are counted."""

REASONS = ("scale-out", "replacement", "scale-in", "unhealthy", "missing", "rolling update",
           "by request", "recorded before a restart")
"""The words the reason of every provision and destroy starts with: the events say them,
and the metrics count by them (a bounded label, whatever the details that follow)."""
COUNTED = frozenset({"provisioned", "destroyed", "launch failed", "member died"})
"""The kinds of event the metrics count (the first two by reason word)."""


def reason_word(reason: str) -> str:
    """The word of :data:`REASONS` a provision's or destroy's reason starts with."""
    return next((word for word in REASONS if reason.startswith(word)), "other")


def named(ids: list[str]) -> str:
    """``a, b, c`` or ``a, b, ... and 5 more``: bounded, for a log line."""
    shown = ", ".join(ids[:NAMES_PER_LINE])
    more = len(ids) - NAMES_PER_LINE
    return f"{shown} and {more} more" if more > 0 else shown


class EventLog:
    """The events of one group waiting to be written, and what the next pass compares
    with to tell what changed (the breaker, the rolling update)."""

    def __init__(self, group: str, store: GroupStore) -> None:
        self.group = group
        self.store = store
        self.pending: list[GroupEvent] = []
        self.breaker_open = False
        self.outdated = 0
        self.counts: Counter[tuple[str, str]] = Counter()
        """Events of the :data:`COUNTED` kinds added so far, by kind and reason word (the
        metrics' counters: kept here, so that they count exactly what the history says)."""
        self.publish: Callable[[list[GroupEvent]], None] | None = None
        """Sends the events to the event stream as they are written (the plugin's)."""

    def add(self, kind: str, reason: str = "", member: str = "", verb: str = "",
            details: dict[str, Any] | None = None) -> None:
        """Record an event; one with a ``verb`` is a caller's doing, and names the caller
        (:func:`~infrakit.spi.access.actor_name`) as its actor."""
        if kind in COUNTED:
            by_reason = kind in ("provisioned", "destroyed")
            self.counts[(kind, reason_word(reason) if by_reason else "")] += 1
        self.pending.append(GroupEvent(time=time.time(), group=self.group, member=member,
                                       kind=kind, reason=reason, verb=verb,
                                       actor=actor_name() if verb else "", details=details))

    async def flush(self) -> None:
        """Write what is waiting, in one write, then publish it; a store that fails loses
        them, said in the log: the group's work does not wait on its history."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        try:
            await asyncio.to_thread(self.store.append_events, self.group, events)
        except Exception as exc:  # the store's own errors, whichever store
            log.warning("group %s: %d events not kept: %s", self.group, len(events), exc)
        if self.publish is not None:
            self.publish(events)

    def ended(self, ending: Ending) -> None:
        """A member ended without being destroyed."""
        if ending.kind == "removed":
            self.add("destroyed", f"missing: {ending.reason}", ending.instance)
            return
        self.add("member died", f"{ending.reason} after {ending.lived:.1f}s ({ending.kind})",
                 ending.instance, details={"exit": ending.reason, "lived": round(ending.lived, 1),
                                           "kind": ending.kind,
                                           "output": list(ending.output)})

    def backoff(self, c: GroupController, reason: str) -> None:
        b = c.backoff
        self.add("backoff started", reason,
                 details={"failures": b.failures,
                          "next_launch_in": round(max(b.next_launch - time.time(), 0), 1)})

    def transitions(self, c: GroupController, decision: Plan) -> None:
        """The breaker and the rolling update, as this pass found them."""
        if decision.breaker_open != self.breaker_open:
            self.breaker_open = decision.breaker_open
            self.add("breaker opened" if decision.breaker_open else "breaker closed",
                     f"{decision.unhealthy} members unhealthy, MaxUnhealthy "
                     f"{c.props.unhealthy_limit()}")
        if decision.outdated and not self.outdated:
            self.add("update started", f"{decision.outdated} members to replace")
        elif decision.batch and self.outdated:
            self.add("batch done", f"{decision.outdated} members left to replace")
        elif self.outdated and not decision.outdated:
            self.add("update finished", "every member has the committed config")
        self.outdated = decision.outdated


def destroy_reason(c: GroupController, decision: Plan, member: Member, now: float) -> str:
    """Why the controller destroys ``member``: its health, the rolling update, or the
    group's size."""
    if member.id in decision.replace:
        since = c.health.unhealthy_since(member.id)
        held = f" for {now - since:.0f}s" if since is not None else ""
        return f"unhealthy{held}: {member.reason}" if member.reason else f"unhealthy{held}"
    if (member.desc.tags or {}).get(CONFIG_TAG) != c.sha:
        return "rolling update"
    return "scale-in"


def provision_reasons(c: GroupController, decision: Plan, n: int) -> list[str]:
    """Why each of ``n`` provisions of a pass: the rolling update; else replacements of
    the members the group has lost since it last had them (up to its target), then
    scale-out for the rest."""
    if decision.outdated:
        return ["rolling update"] * n
    target = c.props.target()
    lost = min(max(c.last.peak - decision.live, 0), n)
    return ([f"replacement: back to {target} members"] * lost
            + [f"scale-out: to reach {target} members"] * (n - lost))


def acted(c: GroupController, decision: Plan, by_id: dict[str, Member],
          destroyed: list[str], made: list[str], launch_errors: list[str]) -> None:
    """The events of what a pass did, and its log line naming the members and why."""
    events, now = c.events, time.time()
    reasons = {iid: destroy_reason(c, decision, by_id[iid], now)
               for iid in destroyed if iid in by_id}
    made_for = provision_reasons(c, decision, len(made))
    for iid, why in zip(made, made_for, strict=True):
        events.add("provisioned", why, iid)
    for iid in destroyed:
        events.add("destroyed", reasons.get(iid, "recorded before a restart"), iid)
    for error in launch_errors:
        events.add("launch failed", error, details={"error": error})
    for why in sorted(set(made_for)):
        log.info("group %s: provisioned %s (%s)", c.group,
                 named([i for i, w in zip(made, made_for, strict=True) if w == why]), why)
    for reason in sorted(set(reasons.values())):
        log.info("group %s: destroyed %s (%s)", c.group,
                 named([i for i, r in reasons.items() if r == reason]), reason)
