"""Slash paths into a tree of values, as the reference's Event/0.1.0 and Metadata/0.1.0 read
them (``types.Path`` in its ``pkg/types``), and the objects of one such interface served on
one socket.

A path travels as one JSON string (``"groups/cattle/Instances/[0]/Tags"``). Its quirks are
kept because the reference's clients rely on them, or at least never see an error for them:
``""``, ``"."`` and an omitted path are the root; a trailing ``/`` changes nothing; a leading
``/`` makes an empty first element, which names nothing; ``null`` and arrays are read as one
odd element, which names nothing. An unknown path is never an error: its value is ``null``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

Path = list[str]
"""The elements of a slash path; ``[]`` when none was given, ``["."]`` for the root."""

ROOT = "."
_INDEX = re.compile(r"^(.*)\[(\d+)\]$")


def parse_path(value: Any) -> Path:
    """A path as the reference decodes its JSON (``Path.UnmarshalJSON``): the raw token with
    quotes and blanks trimmed, split on ``/`` and cleaned."""
    if value is msgspec.UNSET:
        return []
    raw = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return from_string(raw.strip(" \"\\'\t\n"))


def from_string(text: str) -> Path:
    """``types.PathFromString``: ``""`` is the root; ``.`` and ``..`` are resolved."""
    if not text:
        return [ROOT]
    parts = text.split("/")
    out: Path = []
    for i, part in enumerate(parts):
        if part == ROOT or (part == "" and i > 0):
            continue
        if part == "..":
            if not out:
                out.append("..")
                continue
            out.pop()
            if not out:
                return []
            continue
        out.append(part)
    if not out:
        return [ROOT]
    return out


def is_root(path: Path) -> bool:
    return not path or path == [ROOT]


def walk(value: Any, path: Path) -> Any:
    """The value at ``path`` under ``value`` (plain data), or None when there is none.
    ``[i]`` picks a list's item, and so does ``name[i]``."""
    for part in path:
        if part == ROOT:
            continue
        index = _INDEX.match(part)
        if index is not None:
            if index.group(1):
                value = walk(value, [index.group(1)])
            value = _item(value, int(index.group(2)))
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
        if value is None:
            return None
    return value


def _item(value: Any, i: int) -> Any:
    return value[i] if isinstance(value, list) and i < len(value) else None


def children(value: Any) -> list[str] | None:
    """The names under a value: a map's keys (sorted), a list's ``[0]``, ``[1]``...; ``[]``
    for a leaf, None for no value."""
    if value is None:
        return None
    if isinstance(value, dict):
        return sorted(value)
    if isinstance(value, list):
        return [f"[{i}]" for i in range(len(value))]
    return []


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


Lister = Callable[[object, Path], Awaitable[list[str] | None]]
Getter = Callable[[object, Path], Awaitable[Any]]


class PathServed:
    """The objects of one path-addressed interface that one socket serves: the first
    element of a path names a typed object, and the rest of the path goes to it; a path
    that names none goes to the base object (``"."``), if there is one. The root lists the
    base object's names and the typed objects' names together (``pkg/rpc/metadata``)."""

    def __init__(self, objects: Mapping[str, object], lister: Lister,
                 getter: Getter | None = None) -> None:
        self.base = objects.get(ROOT, objects.get(""))
        self.typed = {k: v for k, v in objects.items() if k not in (ROOT, "")}
        self._list = lister
        self._get = getter

    @property
    def objects(self) -> list[object]:
        """Every object served, the base one first."""
        return [*([self.base] if self.base is not None else []), *self.typed.values()]

    @property
    def types(self) -> list[str]:
        """The names for ``Handshake.Types``: ``"."`` for the base object, and the typed."""
        return sorted([*self.typed, *([ROOT] if self.base is not None else [])])

    async def list(self, path: Path) -> list[str] | None:
        if not path or path[0] in ("", ROOT):
            nodes = list(await self._list(self.base, path) or []) if self.base else []
            return sorted([*nodes, *self.typed])
        typed = self.typed.get(path[0])
        if typed is not None:
            found = await self._list(typed, path[1:])
        elif self.base is not None:
            found = await self._list(self.base, path)
        else:
            return None
        return None if found is None else sorted(found)

    async def get(self, path: Path) -> Any:
        if not path or self._get is None:
            return None
        typed = self.typed.get(path[0])
        if typed is not None:
            return await self._get(typed, path[1:])
        return None if self.base is None else await self._get(self.base, path)


async def list_metadata(obj: object, path: Path) -> list[str] | None:
    """Metadata.List of one object: the names under the value at ``path``."""
    return children(await get_metadata(obj, path))


async def get_metadata(obj: object, path: Path) -> Any:
    """Metadata.Get of one object, as plain data: ``metadata(path)`` is the plugin's."""
    value = await _call(obj.metadata, [p for p in path if p != ROOT])  # type: ignore[attr-defined]
    return msgspec.to_builtins(value)


async def list_topics(obj: object, path: Path) -> list[str] | None:
    """Event.List of one object: ``event_topics(path)`` is the plugin's."""
    found = await _call(obj.event_topics,  # type: ignore[attr-defined]
                        [p for p in path if p != ROOT])
    return None if found is None else list(found)
