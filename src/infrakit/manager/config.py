"""A whole configuration, every group at once: what ``infrakit manager commit`` reads and
``infrakit manager export`` writes.

Three shapes are read, so that configurations move in from the reference InfraKit:

- ``{"Groups": {"web": {"ID": "web", "Properties": {...}}, ...}}``, the reference
  manager's own record of its groups (and what ``export`` writes); a value without
  ``Properties`` is taken as the group's properties;
- ``[{"ID": "web", "Properties": {...}}, ...]``, a list of group specs;
- ``[{"Plugin": "group", "Properties": {"ID": "web", "Properties": {...}}}, ...]``, the
  reference CLI's ``manager commit`` file.
"""

from __future__ import annotations

from typing import Any

import msgspec

from infrakit.spi.errors import PluginError
from infrakit.spi.group import GroupSpec
from infrakit.spi.strict import decode_strict


def parse_configuration(data: Any) -> dict[str, GroupSpec]:
    """The groups of a configuration document, by ID, in the document's order; an error
    names the entry at fault and the reason."""
    if isinstance(data, dict) and set(data) == {"Groups"}:
        entries = data["Groups"]
        if not isinstance(entries, dict):
            raise PluginError("Groups: must map each group's ID to its spec")
        specs = [_spec(f"Groups.{gid}", value, default_id=str(gid))
                 for gid, value in entries.items()]
    elif isinstance(data, list):
        specs = [_spec(f"[{n}]", _unwrap(f"[{n}]", value)) for n, value in enumerate(data)]
    else:
        raise PluginError('a configuration is {"Groups": {ID: spec, ...}} or a list of group '
                          "specs")
    out: dict[str, GroupSpec] = {}
    for spec in specs:
        if spec.id in out:
            raise PluginError(f"group {spec.id!r} appears twice")
        out[spec.id] = spec
    return out


def _unwrap(where: str, value: Any) -> Any:
    """A reference ``{"Plugin": ..., "Properties": spec}`` entry gives its spec."""
    if isinstance(value, dict) and "Plugin" in value:
        if not str(value["Plugin"]).split("/")[0].startswith("group"):
            raise PluginError(f"{where}.Plugin: {value['Plugin']!r} is not a group plugin")
        return value.get("Properties")
    return value


def _spec(where: str, value: Any, default_id: str = "") -> GroupSpec:
    if not isinstance(value, dict):
        raise PluginError(f"{where}: must be a group spec (an object)")
    if "Properties" not in value:
        value = {"ID": default_id, "Properties": value}
    value = {"ID": default_id, **value}
    spec: GroupSpec = decode_strict(value, GroupSpec, where)
    if not spec.id:
        raise PluginError(f"{where}.ID: must not be blank")
    if default_id and spec.id != default_id:
        raise PluginError(f"{where}.ID: {spec.id!r} differs from its key {default_id!r}")
    return spec


def export_document(specs: list[GroupSpec]) -> dict[str, Any]:
    """Every spec as one document that :func:`parse_configuration` reads back."""
    return {"Groups": {s.id: msgspec.to_builtins(s) for s in sorted(specs, key=lambda s: s.id)}}
