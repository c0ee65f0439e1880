"""A leading manager's alerts, sent to webhooks as Alertmanager would send them.

Every second the conditions of :mod:`infrakit.manager.alerts` are read from the groups,
and each alert goes through Prometheus's states: *pending* while its condition has lasted
less than its ``for`` time, *firing* once it has (sent once), *resolved* when the
condition ends (sent once; an alert that never fired ends unsent). One still firing is
sent again every ``repeat`` seconds, as Alertmanager's ``repeat_interval`` does. A
notification carries the alerts of one name and one group (Alertmanager's
``group_by: [alertname, group]``): those firing, and those that just resolved.

Only the leader evaluates: the watcher starts with the group plugin a manager runs while
it leads and stops with it, dropping what it had not sent. A manager that leads again
remembers what it sent; a new leader sends what it finds firing afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infrakit.manager.alerts import Alert, Holds, group_alerts
from infrakit.manager.webhook import Notice, WebhookSender, payload

if TYPE_CHECKING:
    from infrakit.plugins.group.plugin import GroupPlugin

log = logging.getLogger("infrakit.alerts")

EVERY = 1.0
"""Seconds between two evaluations."""


@dataclass
class _Tracked:
    alert: Alert
    since: float
    """When the condition was first seen: the alert's ``startsAt``."""
    firing: bool = False


class Tracker:
    """Which alerts are pending and which firing, and what to send when."""

    def __init__(self, repeat: float) -> None:
        self.repeat = repeat
        self._alerts: dict[Hashable, _Tracked] = {}
        """By :attr:`~infrakit.manager.alerts.Alert.identity`."""
        self._sent: dict[tuple[str, str], float] = {}
        """When each (alertname, group) with alerts firing was last sent."""

    def update(self, active: list[Alert], now: float) -> list[list[Notice]]:
        """Take the alerts whose conditions hold at ``now``; returns the notifications to
        send, each the alerts of one name and one group."""
        due: set[tuple[str, str]] = set()
        current = {a.identity: a for a in active}
        for identity, alert in current.items():
            tracked = self._alerts.get(identity)
            if tracked is None:
                tracked = self._alerts[identity] = _Tracked(alert, now)
            tracked.alert = alert  # the latest words: counts and reasons change
            if not tracked.firing and now - tracked.since >= alert.hold:
                tracked.firing = True
                due.add(_key(alert))
        resolved = [self._alerts.pop(f) for f in list(self._alerts) if f not in current]
        resolved = [t for t in resolved if t.firing]
        due |= {_key(t.alert) for t in resolved}
        due |= {k for k, sent in self._sent.items() if now - sent >= self.repeat}
        if not due:
            return []
        batches: dict[tuple[str, str], list[Notice]] = {key: [] for key in sorted(due)}
        for t in self._alerts.values():
            if t.firing and _key(t.alert) in batches:
                batches[_key(t.alert)].append(Notice(t.alert, "firing", t.since, None))
        for key, batch in batches.items():
            if batch:
                self._sent[key] = now
            else:
                self._sent.pop(key, None)
        for t in resolved:
            batches[_key(t.alert)].append(Notice(t.alert, "resolved", t.since, now))
        return [batch for batch in batches.values() if batch]


def _key(alert: Alert) -> tuple[str, str]:
    return alert.name, alert.group


class Alerting:
    """A :class:`~infrakit.plugins.group.plugin.Watcher`: the alerts of the groups a
    leading manager runs, sent to ``urls``."""

    def __init__(self, urls: tuple[str, ...], holds: Holds, repeat: float) -> None:
        self.holds = holds
        self.tracker = Tracker(repeat)
        self.sender = WebhookSender(urls)
        self._groups: GroupPlugin | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, groups: GroupPlugin) -> None:
        self._groups = groups
        await self.sender.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alerts")
        log.info("sending the groups' alerts to %s", ", ".join(self.sender.shown))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.stop()
        self._groups = None

    async def _run(self) -> None:
        while True:
            try:
                self.evaluate(time.time())
            except Exception:  # a bug of ours: the alerts go on, the groups are untouched
                log.exception("alerts: evaluation failed")
            await asyncio.sleep(EVERY)

    def evaluate(self, now: float) -> None:
        """Read every group's conditions and queue what is to be sent."""
        groups = self._groups
        if groups is None:
            return
        down = groups.reach.down
        active = [alert for c in list(groups.controllers.values())
                  for alert in group_alerts(c, down, self.holds, now)]
        for notices in self.tracker.update(active, now):
            self.sender.send(payload(notices), _what(notices))


def _what(notices: list[Notice]) -> str:
    """``InfrakitGroupCrashLooping firing for group web``, for the log."""
    first = notices[0]
    return f"{first.alert.name} {first.status} for group {first.alert.group}"
