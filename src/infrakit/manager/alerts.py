"""The alerts a manager raises from its groups' state, for users without Prometheus: the
same names, labels and words as ``examples/prometheus/infrakit-alerts.yml`` (a test holds
the two together), with the reasons the controllers know filled in.

Each is a condition a pass leaves behind (the last pass's verdict, the rolling update,
the crash-loop backoff, the plugins the calls did not reach); reading them costs no call,
so evaluating them never slows a pass.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController
    from infrakit.plugins.group.reach import Down

NOT_CONVERGED = "InfrakitGroupNotConverged"
BREAKER_OPEN = "InfrakitGroupBreakerOpen"
UPDATE_HALTED = "InfrakitGroupUpdateHalted"
CRASH_LOOPING = "InfrakitGroupCrashLooping"
PLUGIN_DOWN = "InfrakitPluginDown"

CRASH_LOOP_FAILURES = 3
"""Failures in a row (deaths of young members, failed launches) that make a crash loop."""
ERRORS_SHOWN = 3

SUMMARIES = {
    NOT_CONVERGED: "Group {group} has not converged",
    BREAKER_OPEN: "Group {group} has stopped replacing unhealthy members (circuit breaker "
                  "open)",
    UPDATE_HALTED: "The rolling update of group {group} halted",
    CRASH_LOOPING: "Group {group} is crash looping",
    PLUGIN_DOWN: "Plugin {plugin} is not reachable",
}
"""Each alert's summary, as the rules file words it (``{label}`` for ``{{ $labels.label }}``)."""

NEXT = {
    NOT_CONVERGED: "Run `infrakit group describe {group} -v` to see which members are "
                   "missing, unhealthy or outdated and why, and `infrakit group events "
                   "{group}` for what the group did about them.",
    BREAKER_OPEN: "Run `infrakit group describe {group} -v` to see each member's health and "
                  "why, and `infrakit group events {group}` for when it began; the breaker "
                  "closes by itself once enough members are healthy again.",
    UPDATE_HALTED: "The members of the old config keep serving. Run `infrakit group events "
                   "{group}` to see how the new members failed, then commit a fixed spec, "
                   "roll back with `infrakit group cancel-update {group}`, or try again "
                   "with `infrakit group resume-update {group}`.",
    CRASH_LOOPING: "Run `infrakit group describe {group} -v` for each member's last exit "
                   "and output, and `infrakit group events {group}` for the deaths and "
                   "failed launches; commit a fixed spec (a new config launches at once).",
    PLUGIN_DOWN: "Run `infrakit plugin ls` to see which plugins are running, and start it "
                 "again; until it answers, the groups that call it are neither healed nor "
                 "scaled.",
}
"""What to run next, as each alert's description ends in the rules file too."""


@dataclass(frozen=True)
class Holds:
    """How long each kind of condition must last before its alert fires (Prometheus's
    ``for``)."""

    not_converged: float = 600.0
    others: float = 60.0
    """The breaker open, a plugin down: conditions a single pass may see and the next clear."""


@dataclass(frozen=True)
class Alert:
    """One alert, as a condition of one group raises it."""

    name: str
    severity: str
    labels: tuple[tuple[str, str], ...]
    """Besides ``alertname`` and ``severity``: ``group`` first, then ``reason``, or
    ``plugin`` and ``seen_by``."""
    description: str
    hold: float
    """Seconds the condition must last before the alert fires."""

    @property
    def label_map(self) -> dict[str, str]:
        return {"alertname": self.name, **dict(self.labels), "severity": self.severity}

    @property
    def group(self) -> str:
        return self.labels[0][1]

    @property
    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """Its labels, as a key: what tells it from another (cheaper than the
        fingerprint, which is made only for a notification)."""
        return self.name, self.severity, self.labels

    @property
    def summary(self) -> str:
        return SUMMARIES[self.name].format(**dict(self.labels))

    @cached_property
    def fingerprint(self) -> str:
        """Which alert this is, from its labels only (as Alertmanager tells alerts apart)."""
        text = "\0".join(f"{k}\0{v}" for k, v in sorted(self.label_map.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alert(name: str, severity: str, group: str, why: str, hold: float,
           **labels: str) -> Alert:
    return Alert(name, severity, (("group", group), *sorted(labels.items())),
                 f"{why} {NEXT[name].format(group=group)}", hold)


def group_alerts(c: GroupController, down: dict[str, Down], holds: Holds,
                 now: float) -> list[Alert]:
    """The conditions group ``c`` is in at ``now``; ``down`` names the plugins the groups'
    calls did not reach."""
    if c.destroying:
        return []
    g, alerts = c.group, []
    if _not_converged(c):
        alerts.append(_alert(NOT_CONVERGED, "warning", g, _shortfall(c, holds),
                             holds.not_converged))
    if c.status.breaker_open:
        alerts.append(_alert(
            BREAKER_OPEN, "critical", g,
            f"{c.status.unhealthy} members of group {g} are unhealthy, more than its "
            f"MaxUnhealthy of {c.props.unhealthy_limit()}, so the group replaces none of "
            "them for their health (a broken health check or a common cause must not "
            "destroy the whole group).", holds.others))
    if c.rollout.halted:
        alerts.append(_alert(UPDATE_HALTED, "warning", g, f"The rolling update of group {g} "
                             f"halted by itself: {c.rollout.halted}.", 0.0,
                             reason=c.rollout.halted))
    if c.backoff.failures >= CRASH_LOOP_FAILURES:
        alerts.append(_alert(CRASH_LOOPING, "critical", g,
                             f"Members of group {g} keep dying or failing to launch, so the "
                             f"group is backing off its launches: {c.backoff.describe(now)}.",
                             0.0))
    for plugin in sorted({c.props.instance.plugin, c.props.flavor.plugin}):
        if plugin in down:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(down[plugin].since))
            alerts.append(_alert(PLUGIN_DOWN, "critical", g,
                                 f"Group {g} cannot reach plugin {plugin} (since {when}): "
                                 f"{down[plugin].reason}.", holds.others, plugin=plugin,
                                 seen_by="group"))
    return alerts


def _not_converged(c: GroupController) -> bool:
    """Short of its desired members, all healthy or starting and of the committed config;
    a rolling update an operator paused, or one halted (an alert of its own), excepted."""
    return not c.status.converged and not c.rollout.held


def _shortfall(c: GroupController, holds: Holds) -> str:
    s = c.status
    errors = "; ".join(s.errors[:ERRORS_SHOWN])
    return (f"Group {c.group} has not had its desired members, all healthy or starting and "
            f"of the committed config, for at least {duration(holds.not_converged)}: it has "
            f"{s.members} of {c.props.target()}, {s.unhealthy} unhealthy, {s.outdated} of an "
            "older config." + (f" The last pass met: {errors}." if errors else ""))


def duration(seconds: float) -> str:
    """``10 minutes``, ``1 minute``, ``90 seconds``."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds:g} second" + ("s" if seconds != 1 else "")
