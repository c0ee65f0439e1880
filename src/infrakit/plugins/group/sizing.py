"""How much one call may carry. A plugin reads a request of at most
:data:`~infrakit.spi.types.MAX_BODY` bytes, so the group splits its batch calls to fit,
by bytes as well as by count, and refuses a member whose spec alone could never fit,
saying so, instead of sending calls that are refused forever."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from infrakit.spi.types import MAX_BODY, Spec, mebibytes

ROOM = 4096
"""Bytes a request needs beside its items: the JSON-RPC envelope, the method, the type."""
ALONE = MAX_BODY - ROOM
"""The most one instance spec may take, alone in its call."""

_encode = msgspec.json.Encoder().encode


def size_of(value: Any) -> int:
    """``value``'s size as a request carries it, in bytes."""
    return len(_encode(value))


def runs(sizes: list[int], budget: int) -> Iterator[range]:
    """Consecutive runs of items whose ``sizes``, with a comma after each, add up to at
    most ``budget`` bytes. An item larger than ``budget`` is a run of its own: its call
    is refused, and says why."""
    start = used = 0
    for k, size in enumerate(sizes):
        if k > start and used + size + 1 > budget:
            yield range(start, k)
            start, used = k, 0
        used += size + 1
    if start < len(sizes):
        yield range(start, len(sizes))


def too_large(spec: Spec, size: int) -> str | None:
    """Why ``spec``, ``size`` bytes as sent, can never be provisioned; None if it can."""
    if size <= ALONE:
        return None
    return (f"the spec of an instance is {mebibytes(size)} with its Init of "
            f"{mebibytes(len(spec.init.encode()))}, more than the {mebibytes(MAX_BODY)} a "
            "plugin accepts in one call")
