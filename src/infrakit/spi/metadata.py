"""Metadata/0.1.0: a plugin's state as a tree of values read by slash paths, as the
reference serves it (``infrakit metadata ls`` and ``cat``).

A plugin implements :class:`MetadataPlugin`, one method giving the value at a path; the
listing (``Metadata.List``) is derived from it, and the paths' quirks are read as the
reference reads them (see :mod:`infrakit.spi.tree`).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from infrakit.spi.event import NodesResult
from infrakit.spi.methods import MaybeAwaitable, Method, interface
from infrakit.spi.tree import PathServed, get_metadata, list_metadata, parse_path
from infrakit.spi.types import InterfaceSpec, Wire

METADATA_API = InterfaceSpec(name="Metadata", version="0.1.0")


class MetadataPlugin(Protocol):
    """What a plugin that serves its state implements; may be ``async``."""

    def metadata(self, path: list[str]) -> MaybeAwaitable[Any]:
        """The value at ``path`` (``[]`` is the whole tree): plain data or wire structs,
        None for an unknown path (see :func:`infrakit.spi.tree.walk`)."""
        ...


class PathRequest(Wire, kw_only=True):
    path: Any = msgspec.UNSET
    """A slash path, read as the reference reads it (see :mod:`infrakit.spi.tree`)."""


class ValueResult(Wire, kw_only=True):
    value: Any


def served(objects: dict[str, object]) -> PathServed:
    """The Metadata objects of one socket, by type name, as one served object."""
    return PathServed(objects, list_metadata, get_metadata)


METADATA = interface(
    METADATA_API,
    Method("Metadata.List", PathRequest, NodesResult, "list", lambda r: (parse_path(r.path),),
           lambda r, v: NodesResult(nodes=v), lambda res: res.nodes),
    Method("Metadata.Get", PathRequest, ValueResult, "get", lambda r: (parse_path(r.path),),
           lambda r, v: ValueResult(value=v), lambda res: res.value),
)
