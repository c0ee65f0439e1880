"""What the console's pages show of a group, from what the group plugin answers: the
overview's row of a group and the progress of its rolling update."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import msgspec

from infrakit.spi.group import GroupSpec, GroupStatus


@dataclass(frozen=True)
class Summary:
    """A group at a glance: the overview's row."""

    id: str
    size: int
    ready: int
    """Members that are healthy."""
    current: int
    """Members on the committed config."""
    status: str
    """``converged``, ``converging``, ``updating``, ``update halted``, ``paused``,
    ``backing off``, ``breaker open`` or ``destroying``: the one word that matters most."""


def status_word(status: GroupStatus) -> str:
    """The state of a group that most needs an operator's eye, first of all: what stops
    it (a breaker, a backoff, a pause or halt) before what it is doing."""
    updating = status.outdated > 0
    if status.destroying:
        return "destroying"
    if status.breaker_open:
        return "breaker open"
    if status.backoff:
        return "backing off"
    if updating and status.update_paused:
        return "paused"
    if updating and status.update_halted:
        return "update halted"
    if updating:
        return "updating"
    return "converged" if status.converged else "converging"


def summary(status: GroupStatus) -> Summary:
    return Summary(status.id, status.target,
                   sum(1 for m in status.members if m.health == "healthy"),
                   sum(1 for m in status.members if m.current), status_word(status))


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
