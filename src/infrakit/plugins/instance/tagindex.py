"""Instances by tag, so that a describe by tags reads only the instances that may match.

A group describes its members by its tag (``infrakit.group=NAME``) on every pass; with
many groups in one instance plugin, testing every instance's tags on every describe costs
each pass as much as all the groups' instances together. Here each tag (key and value)
names the instances that carry it, in the order they were added, and a describe reads the
shortest of the lists its tags name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

Tag = tuple[str, str]


class TagIndex:
    """The IDs of the instances that carry each tag, each list in the order of ``rank``
    (the order instances are described in); not thread-safe: the caller holds its own
    lock while it changes or reads it."""

    def __init__(self, rank: Callable[[str], int]) -> None:
        self._rank = rank
        self._by_tag: dict[Tag, dict[str, None]] = {}
        self._unsorted: set[Tag] = set()
        """Tags given to an instance after one of a higher rank (a label): their lists
        are sorted again when next read."""

    def add(self, instance: str, tags: Iterable[Tag]) -> None:
        for tag in tags:
            ids = self._by_tag.setdefault(tag, {})
            if ids and instance not in ids and \
                    self._rank(instance) < self._rank(next(reversed(ids))):
                self._unsorted.add(tag)
            ids[instance] = None

    def remove(self, instance: str, tags: Iterable[Tag]) -> None:
        for tag in tags:
            ids = self._by_tag.get(tag)
            if ids is not None:
                ids.pop(instance, None)
                if not ids:
                    del self._by_tag[tag]
                    self._unsorted.discard(tag)

    def candidates(self, wanted: Mapping[str, str]) -> list[str] | None:
        """The IDs of the instances that carry the rarest of the ``wanted`` tags, in
        order; they may lack the others. None when no tag is wanted: every instance may
        match."""
        if not wanted:
            return None
        rarest: Tag | None = None
        for tag in wanted.items():
            ids = self._by_tag.get(tag)
            if ids is None:
                return []
            if rarest is None or len(ids) < len(self._by_tag[rarest]):
                rarest = tag
        assert rarest is not None
        if rarest in self._unsorted:
            self._unsorted.discard(rarest)
            self._by_tag[rarest] = dict.fromkeys(sorted(self._by_tag[rarest], key=self._rank))
        return list(self._by_tag[rarest])
