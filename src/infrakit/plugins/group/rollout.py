"""The state of a group's rolling update that is not in the spec: paused by an operator,
or halted by itself after too many members of the new config failed."""

from __future__ import annotations

import logging

from infrakit.plugins.group.plan import CONFIG_TAG, Member, Plan

log = logging.getLogger("infrakit.group")


class Rollout:
    """Counts the failures of one rolling update (one config) and halts it at the limit,
    where the reference would replace the failing new member for ever."""

    def __init__(self, group: str, paused: bool = False) -> None:
        self.group = group
        self.paused = paused
        """An operator paused the update (the choice is stored with the group)."""
        self.halted = ""
        """Why the update to the current config halted by itself, if it did."""
        self.failures = 0
        self._sha = ""
        self._halted_sha = ""

    @property
    def held(self) -> bool:
        """Outdated members are to be left as they are."""
        return self.paused or bool(self.halted)

    def commit(self, sha: str) -> None:
        """A spec was committed: a new config starts a new update, with its own count of
        failures; a halt holds only for the config that failed."""
        if sha != self._sha:
            self.failures = 0
        self._sha = sha
        self.halted = self.halted if self._halted_sha == sha else ""

    def would_hold(self, sha: str) -> bool:
        """Whether the update to config ``sha`` would be held, were it committed now: a
        pause holds every config; a halt only the one that failed."""
        return self.paused or (bool(self.halted) and self._halted_sha == sha)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume; resuming also lifts a halt, with a fresh count of failures."""
        self.paused = paused
        if not paused:
            self.halted, self.failures = "", 0

    def count(self, decision: Plan, observed: dict[str, Member], limit: int) -> bool:
        """Count the members of the new config that ``decision`` replaces for their health
        during an update; returns whether the update halted just now."""
        if not decision.outdated or not decision.replace:
            return False
        failed = [observed[i] for i in decision.replace
                  if (observed[i].desc.tags or {}).get(CONFIG_TAG) == self._sha]
        return bool(failed) and self.failed(
            len(failed), f"{failed[-1].id} failed its health checks: {failed[-1].reason}",
            limit)

    def failed(self, n: int, what: str, limit: int) -> bool:
        """``n`` members of the new config failed (``what`` says how the last did): to
        launch, by dying, or their health checks; returns whether the update halted just
        now."""
        self.failures += n
        if not limit or self.failures < limit or self.halted:
            return False
        self.halted = f"{self.failures} members of the new config failed (last: {what})"
        self._halted_sha = self._sha
        log.warning("group %s: rolling update halted: %s; the old members keep serving; "
                    "commit a fixed spec, roll back with cancel-update, or try again with "
                    "resume-update", self.group, self.halted)
        return True
