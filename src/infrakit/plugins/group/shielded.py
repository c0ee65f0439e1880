"""Destroys and frees of whole groups, run to their end whatever their caller does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("infrakit.group")


class ToTheEnd:
    """The destroys and frees under way, by verb and group. Each runs in a task of its own
    that its caller's disconnect, Ctrl-C or timeout cannot cancel: a group half freed or
    half destroyed must never be left with a loop that provisions again. A second call of
    the same verb waits for the first."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def run(self, verb: str, gid: str,
                  work: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        task = self._tasks.get((verb, gid))
        if task is None:
            task = asyncio.get_running_loop().create_task(work(gid), name=f"{verb} {gid}")
            self._tasks[(verb, gid)] = task
            task.add_done_callback(lambda t: self._ended(verb, gid, t))
        await asyncio.shield(task)

    def under_way(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def _ended(self, verb: str, gid: str, task: asyncio.Task[None]) -> None:
        """A destroy or free is over: say how, since its caller may have left."""
        self._tasks.pop((verb, gid), None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("group %s: %s did not finish: %s", gid, verb, error)
        else:
            log.info("group %s: %s", gid, "destroyed" if verb == "destroy" else "freed")
