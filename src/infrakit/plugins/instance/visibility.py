"""What a cloud lists late and forgets late, and how a plugin describes despite it.

A cloud lists what it made only eventually, and may list what it destroyed for a while.
So the plugin keeps the instances it launched that are not listed yet (``launched``, each
with the wall-clock time ``until`` which it is described anyway) and the ones it destroyed
(``terminated``: ID -> until when it is hidden). Past their deadlines, entries are
dropped. The file is rewritten atomically, under a lock, after every change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from infrakit.plugins.instance.state import StateFile
from infrakit.spi.types import Description


class Pending(Protocol):
    """An instance launched and not listed yet: what describes it meanwhile."""

    tags: dict[str, str]
    logical_id: str | None
    until: float
    """The wall-clock time it is described until, unless the cloud lists it."""


class Expiring(Protocol):
    launched: dict[str, Any]
    """Each value is a :class:`Pending`."""
    terminated: dict[str, float]


E = TypeVar("E", bound=Expiring)
P = TypeVar("P", bound=Pending)


class VisibilityFile(StateFile[E]):
    """A state file that holds, beside whatever else a plugin keeps, the instances
    launched and not listed yet and the instances terminated and perhaps still listed."""

    def update(self, change: Callable[[E, float], bool]) -> None:
        """Apply ``change`` and drop what is past its deadline, then save if anything
        changed."""

        def and_expire(state: E, now: float) -> bool:
            changed = change(state, now)
            expired = [i for i, r in state.launched.items() if r.until <= now]
            gone = [i for i, until in state.terminated.items() if until <= now]
            for i in expired:
                del state.launched[i]
            for i in gone:
                del state.terminated[i]
            return bool(changed or expired or gone)

        super().update(and_expire)

    def describe(self, listed: Mapping[str, Description | None], tags: dict[str, str],
                 launched_facts: Callable[[str, P], dict[str, Any]] | None, *,
                 tidy: Callable[[E, float], bool] | None = None) -> list[Description]:
        """What the plugin describes, given what the cloud ``listed`` (by instance ID: a
        description, or None for one listed and not to be described): the listed ones
        not terminated, then the launched ones not listed yet, each if it carries every
        tag of ``tags``. ``launched_facts`` gives the properties of a launched one (None:
        no properties). A launched instance now listed is launched no more; ``tidy``
        changes the state in the same update, after that and before what is past its
        deadline goes."""
        with self.lock:
            launched = dict(self.state.launched)
            terminated = set(self.state.terminated)
        wanted = tags.items()
        found = [desc for iid, desc in listed.items() if desc is not None
                 and iid not in terminated and wanted <= (desc.tags or {}).items()]
        now = time.time()
        for iid, record in launched.items():
            if iid in listed or record.until <= now or not wanted <= record.tags.items():
                continue
            desc = Description(id=iid, logical_id=record.logical_id, tags=record.tags)
            if launched_facts is not None:
                desc.properties = launched_facts(iid, record)
            found.append(desc)

        def listed_now(state: E, now: float) -> bool:
            shown = listed.keys() & state.launched.keys()
            for iid in shown:
                del state.launched[iid]
            tidied = tidy(state, now) if tidy is not None else False
            return bool(shown) or tidied

        self.update(listed_now)
        return found
