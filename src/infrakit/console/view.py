"""What the console's pages show of a group, from what the group plugin answers: its line
(as the overview shows it), the progress of its rolling update, and its spec."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import msgspec

from infrakit.plugins.group.summary import summarize
from infrakit.spi.group import GroupSpec, GroupStatus, GroupSummary


def summary(status: GroupStatus) -> GroupSummary:
    """A group's line, as the overview shows it, from its full status (a group's page has
    that; the overview asks ``Group.Summaries`` for every group at once), its status word
    decided by the same function."""
    status_word, reason = summarize(
        observed=status.passes > 0, converged=status.converged,
        destroying=status.destroying, halted=status.update_halted,
        error=status.errors[-1] if status.failures and status.errors else "",
        breaker_open=status.breaker_open, backoff=status.backoff,
        paused=status.update_paused, outdated=status.outdated)
    return GroupSummary(id=status.id, size=status.target, members=len(status.members),
                        ready=sum(1 for m in status.members if m.health == "healthy"),
                        up_to_date=sum(1 for m in status.members if m.current),
                        status=status_word, reason=reason)


@dataclass(frozen=True)
class Progress:
    """How far a rolling update has come: ``done`` of ``total`` members replaced."""

    done: int
    total: int


def progress(status: GroupStatus) -> Progress | None:
    """The rolling update's progress; None while none runs."""
    if status.outdated <= 0:
        return None
    total = max(status.target, len(status.members))
    return Progress(max(total - status.outdated, 0), total)


def spec_text(spec: GroupSpec | None) -> str:
    """A spec as an operator reads it: indented JSON, keys sorted."""
    if spec is None:
        return ""
    data: Any = msgspec.to_builtins(spec)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def spec_diff(previous: GroupSpec | None, current: GroupSpec | None) -> list[str]:
    """The lines of a unified diff from the previous spec to the committed one (none when
    there is no previous one)."""
    if previous is None or current is None:
        return []
    return list(difflib.unified_diff(spec_text(previous).splitlines(),
                                     spec_text(current).splitlines(),
                                     "previous", "committed", lineterm="", n=3))
