"""What a group learns when its members end without being destroyed: which launch failed
and why, each member's restarts and its predecessor's last exit, and the crash-loop
backoff that spaces out the next launches.

An instance plugin that knows its instances reports their endings
(``Instance.DescribeEnded``); the group reads that report on every pass and handles each
ending once. A member that ends before it was ever healthy failed to launch; one that ends
younger than ``StartupGrace + HealthGrace`` died young. Either delays the group's next
provisions: 1 s, doubling with each failure in a row, up to ``BackoffLimit``; the delay
resets once a member launched after the last failure has been healthy for that long.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from infrakit.spi.instance import EndedInstance

log = logging.getLogger("infrakit.group")

FIRST_DELAY = 1.0
"""Seconds of backoff after the first failure in a row."""
OUTPUT_LINES = 5
"""Lines of a member's last output kept for describe."""


@dataclass(frozen=True)
class Ending:
    """One member's end, as the group judged it."""

    instance: str
    logical_id: str | None
    reason: str
    """The plugin's words: ``exited with status 2``."""
    kind: str
    """``failed launch``, ``died young``, ``died`` or ``removed``."""
    lived: float
    output: tuple[str, ...]
    config: str
    """The config hash of the spec it was made from."""

    @property
    def failure(self) -> bool:
        """Whether it counts toward the crash-loop backoff."""
        return self.kind in ("failed launch", "died young")

    def describe(self) -> str:
        last = f"; last output: {self.output[-1]}" if self.output else ""
        return f"{self.instance} {self.reason} after {self.lived:.1f}s ({self.kind}){last}"


class Backoff:
    """The crash-loop backoff of one group's launches."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.limit = 300.0
        self.failures = 0
        """Failures in a row."""
        self.next_launch = -math.inf
        self.last_failure = -math.inf
        self.last_reason = ""

    def failed(self, now: float, reason: str) -> None:
        """A launch failed, or a member died young, at ``now``."""
        self.failures += 1
        delay = min(self.limit, FIRST_DELAY * 2 ** min(self.failures - 1, 30))
        self.next_launch = now + delay
        self.last_failure = now
        self.last_reason = reason
        log.warning("group %s: %s; backing off: next launch in %.0fs after %d failures in a "
                    "row", self.group, reason, delay, self.failures)

    def reset(self, why: str) -> None:
        if self.failures:
            log.info("group %s: backoff reset after %d failures: %s", self.group,
                     self.failures, why)
        self.failures, self.next_launch, self.last_reason = 0, -math.inf, ""

    def held(self, now: float) -> bool:
        return now < self.next_launch

    def settle(self, healthy_since: list[float], now: float, young: float) -> None:
        """Reset once a member launched after the last failure has stayed healthy for
        ``young`` seconds: the group launches freely again."""
        if not self.failures:
            return
        if any(since > self.last_failure and now - since >= young for since in healthy_since):
            self.reset(f"a member has been healthy for {young:.0f}s")

    def describe(self, now: float) -> str:
        """``next launch in 40s after 5 failed launches (last: ...)``, or empty."""
        if not self.failures:
            return ""
        wait = self.next_launch - now
        when = f"next launch in {wait:.0f}s" if wait > 0 else "launching again"
        return f"{when} after {self.failures} failures in a row (last: {self.last_reason})"


class Endings:
    """The endings a group has handled, and what its members inherit from them."""

    def __init__(self) -> None:
        self._handled: set[str] = set()
        self.restarts: dict[str, int] = {}
        """Members that replace ended ones: how many ended before them in their place."""
        self.last: dict[str, Ending] = {}
        """Members that replace ended ones: the ending of the one before them."""
        self._waiting: deque[tuple[int, Ending]] = deque()
        """Endings whose replacement has not been seen yet."""

    def new(self, reported: list[EndedInstance]) -> list[EndedInstance]:
        """The reported endings not handled before; the rest are forgotten once their
        plugin stops reporting them."""
        fresh = [e for e in reported if e.id not in self._handled]
        self._handled = {e.id for e in reported}
        return fresh

    def classify(self, ended: EndedInstance, seen: tuple[float, bool] | None,
                 young: float) -> Ending:
        """Judge one ending: ``seen`` is when the group first saw the member and whether
        it was ever healthy (None: never described)."""
        started = ended.started or (seen[0] if seen else ended.ended)
        lived = max(0.0, (ended.ended or started) - started)
        if not ended.crashed:
            kind = "removed"
        elif seen is None or not seen[1]:
            kind = "failed launch"
        else:
            kind = "died young" if lived < young else "died"
        output = tuple((ended.output or [])[-OUTPUT_LINES:])
        ending = Ending(ended.id, ended.logical_id, ended.reason, kind, lived, output,
                        (ended.tags or {}).get("infrakit.config_sha", ""))
        self._waiting.append((self.restarts.pop(ended.id, 0) + 1, ending))
        self.last.pop(ended.id, None)
        return ending

    def adopt(self, new_members: list[tuple[str, str | None]]) -> None:
        """Members seen for the first time take the place of the oldest ending waiting for
        a replacement (of the same logical ID, in a group of logical IDs)."""
        for iid, logical_id in new_members:
            if not self._waiting:
                return
            match = next((k for k, (_, e) in enumerate(self._waiting)
                          if e.logical_id == logical_id), None)
            if match is None:
                continue
            restarts, ending = self._waiting[match]
            del self._waiting[match]
            self.restarts[iid], self.last[iid] = restarts, ending

    @property
    def waiting(self) -> bool:
        """Some ending waits for the member that replaces it."""
        return bool(self._waiting)

    def forget(self, gone: set[str]) -> None:
        """Members that were destroyed: nothing of theirs is inherited."""
        for iid in gone:
            self.restarts.pop(iid, None)
            self.last.pop(iid, None)
