"""The fields that differ between two group specs, leaf by leaf, as ``terraform plan``
lists attributes: a path, the old value and the new one.

The specs are compared as the plugin reads them (durations in seconds, defaults filled in),
not as they were spelt: ``HealthGrace: 1m`` and ``HealthGrace: 60`` are the same, and a
tunable dropped from the spec shows its default as its new value.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.structs

from infrakit.plugins.group.spec import GroupProperties
from infrakit.spi.group import FieldChange

MEMBER_FIELDS = ("Allocation", "Instance", "Flavor")
"""The reference's fields: what the members are (their changes are said in the
reference's words). Every other field is a tunable: it changes how the group behaves,
never a member."""


def normal_form(props: GroupProperties, defaults: bool) -> dict[str, Any]:
    """``props`` as plain data; with ``defaults``, every field, else only those that differ
    from their defaults."""
    if not defaults:
        data: dict[str, Any] = msgspec.to_builtins(props)
        return data
    return {f.encode_name: msgspec.to_builtins(getattr(props, f.name))
            for f in msgspec.structs.fields(GroupProperties)}


def spec_changes(old: GroupProperties | None, new: GroupProperties) -> list[FieldChange]:
    """Every leaf of ``new`` that differs from ``old``, under ``Properties``; for a new
    group (``old`` None), every field the spec gives."""
    if old is None:
        return _diff("Properties", {}, normal_form(new, defaults=False))
    return _diff("Properties", normal_form(old, defaults=True), normal_form(new, defaults=True))


def tunables(changes: list[FieldChange]) -> list[FieldChange]:
    """The changes to fields outside the config hash: they change no member."""
    return [c for c in changes if c.path.split(".")[1].split("[")[0] not in MEMBER_FIELDS]


def _diff(path: str, old: Any, new: Any) -> list[FieldChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}"
            if key not in new:
                out += _leaves(where, old[key], "removed")
            elif key not in old:
                out += _leaves(where, new[key], "added")
            else:
                out += _diff(where, old[key], new[key])
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = f"{path}[{i}]"
            if i >= len(new):
                out += _leaves(where, old[i], "removed")
            elif i >= len(old):
                out += _leaves(where, new[i], "added")
            else:
                out += _diff(where, old[i], new[i])
        return out
    if _same(old, new):
        return []
    return [FieldChange(path=path, change="changed", old=old, new=new)]


def _leaves(path: str, value: Any, change: str) -> list[FieldChange]:
    """A whole subtree added or removed, leaf by leaf (an empty one as itself)."""
    if isinstance(value, dict) and value:
        return [c for k, v in value.items() for c in _leaves(f"{path}.{k}", v, change)]
    if isinstance(value, list) and value:
        return [c for i, v in enumerate(value) for c in _leaves(f"{path}[{i}]", v, change)]
    if change == "added":
        return [FieldChange(path=path, change="added", new=value)]
    return [FieldChange(path=path, change="removed", old=value)]


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON: ``1`` is ``1.0``, but ``true`` is not ``1``."""
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new) and old == new
    return bool(old == new)
