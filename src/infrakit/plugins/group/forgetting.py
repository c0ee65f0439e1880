"""Forgetting finished operations' in-flight records in as few store transactions as the
store's speed allows.

Each destroy forgets its record when it ends, and a group destroys up to ``MaxParallel``
members at once: one transaction each made destroying 100,000 members cost 100,000
transactions. Here the forgets that arrive while one transaction runs wait for it and then
go together in the next (a group commit); each caller still returns only once its own
record is forgotten, or with the store's error.
"""

from __future__ import annotations

import asyncio

from infrakit.plugins.group.storage import GroupStore


class Forgetting:
    """Forgets records of one store, batching the forgets that wait for each other."""

    def __init__(self, store: GroupStore) -> None:
        self._store = store
        self._pending: dict[str, None] = {}
        self._lock = asyncio.Lock()

    async def forget(self, key: str) -> None:
        """Return once the record ``key`` is forgotten."""
        self._pending[key] = None
        async with self._lock:
            if key not in self._pending:  # a transaction of another caller took it
                return
            keys = list(self._pending)
            self._pending.clear()
            try:
                await asyncio.to_thread(self._store.forget, *keys)
            except BaseException:
                self._pending.update(dict.fromkeys(keys))  # their callers try again
                raise
