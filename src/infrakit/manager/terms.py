"""What a manager on etcd does the same whether it leads every group (an election) or a
share of them (a registration): it serves term after term on a task of its own until it is
stopped, and a term ends when its lease is lost."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from infrakit.manager.etcd_leader import EtcdLeadership


class Terms:
    """The task serving a manager's terms, and the two things that end them."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        """Set once the manager stops (a thread: a campaign waiting in one sees it)."""
        self.lost = asyncio.Event()
        """Set when the current term is over: its lease was lost, or the manager stops."""
        self._task: asyncio.Task[None] | None = None

    def start(self, lease: EtcdLeadership, serve: Callable[[], Coroutine[Any, Any, None]],
              name: str) -> None:
        """Run ``serve`` on a task named ``name``; a lost ``lease`` ends the term."""
        loop = asyncio.get_running_loop()

        def lost() -> None:  # called from the lease's thread
            loop.call_soon_threadsafe(self.lost.set)

        lease.on_lost = lost
        self._task = loop.create_task(serve(), name=name)

    def begin(self) -> None:
        """A term was won: it lasts until its lease is lost, or is over at once if the
        manager was stopped while it was being won."""
        self.lost.clear()
        if self.stopping.is_set():
            self.lost.set()

    async def stop(self) -> None:
        """End the current term and serve no other; return once the task has ended."""
        self.stopping.set()
        self.lost.set()
        if self._task is not None:
            await self._task
