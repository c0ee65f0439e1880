"""The order members are listed in, wherever they are shown (``infrakit group describe``,
the web console): those that need a look first."""

from __future__ import annotations

import re

HEALTH_ORDER = {"failed": 0, "unhealthy": 0, "starting": 1, "unknown": 1, "healthy": 2}
"""How members are listed: those that need a look first (unhealthy, or failed and to be
replaced), then those whose health is not known yet (starting, unknown), then the
healthy; any other word (a plugin of another kind) with the unknown."""


def member_order(health: str, member: str) -> tuple[int, list[tuple[int, int | str]]]:
    """The sort key of a member by its health (:data:`HEALTH_ORDER`), then by its ID in
    natural order (``proc-2`` before ``proc-10``)."""
    return HEALTH_ORDER.get(health, 1), natural(member)


def natural(text: str) -> list[tuple[int, int | str]]:
    """``text`` as a sort key in which runs of digits compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", text) if part]
