"""What a group plugin answers about the groups it runs, without changing them: the
reference's describe and inspect, and our extensions (status, summaries, history, usage).

Kept apart from :class:`~infrakit.plugins.group.plugin.GroupPlugin`, which changes groups,
so that each reads as one job: this class only looks at the controllers and the store.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from infrakit.plugins.group.controller import GroupController
from infrakit.plugins.group.report import report
from infrakit.plugins.group.storage import GroupStore, day_of
from infrakit.plugins.group.summary import summary_of
from infrakit.plugins.group.usage import usage_of
from infrakit.spi.errors import NotFoundError
from infrakit.spi.group import (
    GroupDescription,
    GroupEvent,
    GroupSpec,
    GroupStatus,
    GroupSummary,
    UsageRecord,
)

decode_spec = msgspec.json.Decoder(GroupSpec).decode
"""A spec as the store keeps it (JSON)."""


class GroupReads:
    """The read verbs of Group/0.1.0 and of our extensions, over the groups watched."""

    def __init__(self, store: GroupStore) -> None:
        self.store = store
        self._specs: dict[str, GroupSpec] = {}
        self._controllers: dict[str, GroupController] = {}
        self._unloaded: dict[str, str] = {}
        """Stored groups that could not be resumed, and why."""

    def _controller(self, gid: str) -> GroupController:
        controller = self._controllers.get(gid)
        if controller is None:
            why = self._unloaded.get(gid)
            raise NotFoundError(f"Group '{gid}' is not being watched" + (f": {why}" if why
                                                                         else ""))
        return controller

    async def describe_group(self, id: str) -> GroupDescription:
        # as the reference answers: members without their properties
        members, _, decision = await self._controller(id).observe(judge=False)
        return GroupDescription(instances=[m.desc for m in members],
                                converged=decision.converged)

    async def describe_status(self, id: str) -> GroupStatus:
        return await report(self._controller(id))

    async def inspect_groups(self) -> list[GroupSpec]:
        return [self._specs[gid] for gid in sorted(self._specs)]

    async def summaries(self) -> list[GroupSummary]:
        """Every group in a line, as its last pass left it (``Group.Summaries``, our
        extension): one call for ``infrakit group ls``, whatever the number of groups, and
        no call to any other plugin."""
        now = time.time()
        return [summary_of(self._controllers[gid], now) for gid in sorted(self._controllers)]

    async def previous_spec(self, id: str) -> GroupSpec | None:
        """The spec committed before the current one (``Group.PreviousSpec``, our
        extension): what a cancel of the update would go back to, and what the console
        shows the current spec's changes against."""
        raw = await asyncio.to_thread(self.store.previous_spec, self._controller(id).group)
        return None if raw is None else decode_spec(raw)

    async def events(self, id: str, since: float | None, after: int | None,
                     limit: int) -> list[GroupEvent]:
        """The group's history, oldest first (``Group.Events``, our extension)."""
        self._controller(id)
        return await asyncio.to_thread(self.store.events, id, since, after, limit)

    async def usage(self, id: str, since: float | None) -> list[UsageRecord]:
        """Member time of group ``id`` (every group's, destroyed ones included, when
        empty), per config, on the UTC days from the one holding ``since``
        (``Group.Usage``, our extension): what the store keeps and what the controllers
        have counted since their last write."""
        meters = [c.usage for gid, c in self._controllers.items() if not id or gid == id]
        return await usage_of(self.store, id or None, day_of(since) if since is not None
                              else 0, meters)
