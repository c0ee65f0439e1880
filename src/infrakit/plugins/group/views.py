"""The group plugin's state and history as the reference's tools read them: Metadata/0.1.0
(``infrakit metadata ls/cat``) and Event/0.1.0 (``infrakit event tail``).

Metadata paths, as the reference's group plugin has them, and one more:

- ``specs/<ID>``: the committed spec (``GroupSpec``);
- ``groups/<ID>``: the group's description (``Instances``, ``Converged``), as
  ``Group.DescribeGroup`` answers it;
- ``status/<ID>``: everything ``infrakit group describe`` shows (``GroupStatus``).

A description or status is kept for :data:`FRESH` seconds, so that a walk of the whole
tree (``metadata ls -a``) asks the instance plugin once per group, not once per node.

Event topics sit under the typed object ``group``: ``group/<ID>/<kind>`` with the kinds of
:data:`~infrakit.spi.group.EVENT_KINDS` (``group/cattle/provisioned``). The event's ``Type``
is its kind's topic, its ``ID`` the member it is about (else the group), its ``Data`` the
:class:`~infrakit.spi.group.GroupEvent` without its number (``Group.Events`` has that).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from infrakit.spi.event import Event, Publish, timestamp
from infrakit.spi.group import (
    EVENT_KINDS,
    GroupDescription,
    GroupEvent,
    GroupSpec,
    GroupStatus,
    event_topic,
)
from infrakit.spi.methods import nonblocking
from infrakit.spi.tree import walk

FRESH = 1.0
"""Seconds a description or status read for metadata is reused."""
TOPICS = sorted(event_topic(k) for k in EVENT_KINDS)


class Groups(Protocol):
    """What the views read: a group plugin, or a manager that forwards to the leader."""

    async def inspect_groups(self) -> list[GroupSpec]: ...

    async def describe_group(self, id: str) -> GroupDescription: ...

    async def describe_status(self, id: str) -> GroupStatus: ...


class GroupViews:
    """The Event/0.1.0 and Metadata/0.1.0 objects of a group plugin: its events, published
    as they are written while someone follows them, their topics, and its state at paths."""

    def __init__(self, groups: Groups, ids: Callable[[], list[str]]) -> None:
        self._metadata = MetadataView(groups)
        self._ids = ids
        self._publish: Publish | None = None

    def publish_on(self, publish: Publish) -> None:
        self._publish = publish

    def published(self, events: list[GroupEvent]) -> None:
        publish = self._publish
        if publish is not None and publish.wanted():
            for event in events:
                publish(as_event(event))

    @nonblocking
    def event_topics(self, topic: list[str]) -> list[str] | None:
        return topics(self._ids(), topic)

    async def metadata(self, path: list[str]) -> Any:
        return await self._metadata.metadata(path)


class MetadataView:
    """Metadata.List/Get of a group plugin's state (see the module's docstring)."""

    def __init__(self, groups: Groups) -> None:
        self._groups = groups
        self._kept: dict[tuple[str, str], tuple[float, Any]] = {}

    async def metadata(self, path: list[str]) -> Any:
        specs = {s.id: s for s in await self._groups.inspect_groups()}
        if not path:
            return {"specs": specs, "groups": await self._all("groups", specs),
                    "status": await self._all("status", specs)}
        head, rest = path[0], path[1:]
        if head == "specs":
            return walk(msgspec.to_builtins(specs), rest)
        if head not in ("groups", "status"):
            return None
        if not rest:
            return await self._all(head, specs)
        if rest[0] not in specs:
            return None
        return walk(await self._view(head, rest[0]), rest[1:])

    async def _all(self, head: str, specs: dict[str, GroupSpec]) -> dict[str, Any]:
        return {gid: await self._view(head, gid) for gid in sorted(specs)}

    async def _view(self, head: str, gid: str) -> Any:
        now = time.monotonic()
        kept = self._kept.get((head, gid))
        if kept is not None and now - kept[0] < FRESH:
            return kept[1]
        read: Callable[[str], Awaitable[Any]] = (
            self._groups.describe_group if head == "groups" else self._groups.describe_status)
        value = msgspec.to_builtins(await read(gid))
        self._kept = {k: v for k, v in self._kept.items() if now - v[0] < FRESH}
        self._kept[(head, gid)] = (now, value)
        return value


def topics(groups: list[str], path: list[str]) -> list[str] | None:
    """Event.List under the typed object ``group``: the groups, then the kinds."""
    if not path:
        return sorted(groups)
    if path[0] not in groups:
        return None
    if len(path) == 1:
        return TOPICS
    return [] if len(path) == 2 and path[1] in TOPICS else None


def as_event(event: GroupEvent) -> Event:
    """A group event as the stream carries it, its topic relative to ``group``."""
    topic = event_topic(event.kind)
    data = msgspec.to_builtins(event)
    data.pop("Seq", None)  # numbered by the store as it is written, not known here
    return Event(topic=f"{event.group}/{topic}", type=topic, id=event.member or event.group,
                 timestamp=timestamp(event.time), data=data)
