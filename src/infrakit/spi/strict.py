"""Reading JSON-shaped data into typed structs strictly, with errors a user can act on.

A struct declared with ``forbid_unknown_fields=True`` refuses keys it does not define, and
the refusal names the key's path and the field it most likely meant
(``Properties.Alocation: unknown field; did you mean Allocation?``). A field declared as a
:data:`~infrakit.spi.durations.Duration` takes ``"5m"`` as well as ``300``. A field typed
``Any`` is not looked into: what it holds belongs to someone else (the ``Properties`` of an
instance or a flavor plugin, which only that plugin knows).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any, Union

import msgspec

from infrakit.spi.durations import FORMS, is_duration, parse_duration
from infrakit.spi.errors import PluginError

_fields: dict[type, dict[str, Any]] = {}


def _fields_of(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """A struct's fields by the names they have on the wire, with their annotated types."""
    found = _fields.get(struct)
    if found is None:
        found = _fields[struct] = {f.encode_name: f.type for f in msgspec.structs.fields(struct)}
    return found


def path(where: str, key: object) -> str:
    """``key`` below ``where``: ``Properties.Allocation``, ``Groups.web``, ``[2]``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def suggestion(key: str, known: Iterable[str]) -> str | None:
    """The known name ``key`` most likely misspells: the same name in other letter case,
    else the closest one difflib finds."""
    import difflib

    names = list(known)
    by_lower = {n.lower(): n for n in names}
    if key.lower() in by_lower:
        return by_lower[key.lower()]
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def unknown_field(where: str, key: object, known: Iterable[str],
                  below: Iterable[str] = ()) -> str:
    """The refusal of ``key``, unknown at ``where``: the field it may have meant, here or
    one level down (``below``: ``Allocation.Size``), or else what is known here."""
    names = list(known)
    near = None
    if isinstance(key, str):
        near = suggestion(key, names)
        if near is None:
            deeper: dict[str, list[str]] = {}
            for name in below:
                deeper.setdefault(name.rpartition(".")[2], []).append(name)
            near = " or ".join(deeper.get(suggestion(key, deeper) or "", [])) or None
    hint = f"did you mean {near}?" if near else f"the fields here are {', '.join(names)}"
    return f"{path(where, key)}: unknown field; {hint}"


def _below(fields: dict[str, Any]) -> list[str]:
    """``Field.Inner`` for each field of each struct-typed field of a struct."""
    found = []
    for name, kind in fields.items():
        struct = _struct_in(_unwrapped(kind)[0])
        if struct is not None:
            found += [f"{name}.{inner}" for inner in _fields_of(struct)]
    return found


def conform(value: Any, into: Any, where: str = "") -> Any:
    """``value`` as ``into`` will decode it: every duration string in seconds. Raises a
    :class:`PluginError` for a key that a struct forbidding unknown fields does not have,
    or a duration that cannot be read; leaves every other fault to the decoder."""
    base, metadata = _unwrapped(into)
    if isinstance(value, str) and is_duration(metadata):
        try:
            return parse_duration(value)
        except ValueError:
            raise PluginError(f"{where}: {value!r} is not a duration; give {FORMS}") from None
    if isinstance(value, dict):
        struct = _struct_in(base)
        if struct is not None:
            return _conform_struct(value, struct, where)
        values = _argument(base, dict, 1)
        if values is not None:
            return {k: conform(v, values, path(where, k)) for k, v in value.items()}
    elif isinstance(value, list):
        items = _argument(base, list, 0)
        if items is not None:
            return [conform(v, items, path(where, n)) for n, v in enumerate(value)]
    return value


def _conform_struct(value: dict[Any, Any], struct: type[msgspec.Struct],
                    where: str) -> dict[Any, Any]:
    fields = _fields_of(struct)
    out = {}
    for key, item in value.items():
        kind = fields.get(key) if isinstance(key, str) else None
        if kind is None:
            if struct.__struct_config__.forbid_unknown_fields:
                raise PluginError(unknown_field(where, key, fields, _below(fields)))
            out[key] = item
        else:
            out[key] = conform(item, kind, path(where, key))
    return out


def _unwrapped(kind: Any) -> tuple[Any, tuple[Any, ...]]:
    """The type inside ``Annotated[...]``, and its metadata."""
    if typing.get_origin(kind) is typing.Annotated:
        return kind.__origin__, kind.__metadata__
    return kind, ()


def _struct_in(kind: Any) -> type[msgspec.Struct] | None:
    """The struct that a mapping of type ``kind`` decodes into, if there is one (``S``,
    ``S | None``)."""
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    structs = [o for o in (_unwrapped(o)[0] for o in options)
               if isinstance(o, type) and issubclass(o, msgspec.Struct)]
    return structs[0] if len(structs) == 1 else None


def _argument(kind: Any, container: type, index: int) -> Any:
    """The item (``list``) or value (``dict``) type of ``kind``, or of the one such
    container in a union."""
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    found = [typing.get_args(o) for o in options if typing.get_origin(o) is container]
    return found[0][index] if len(found) == 1 and len(found[0]) > index else None


def _is_union(kind: Any) -> bool:
    import types

    return typing.get_origin(kind) in (Union, types.UnionType)


_AT = re.compile(r"(?s)(.*) - at `\$(.*)`")
_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "array": "a list", "object": "a mapping", "null": "null"}
_TYPE = re.compile(r"`(int|float|str|bool|array|object|null)`")


def sentence(exc: msgspec.ValidationError, where: str = "") -> str:
    """A decoder's complaint (``Expected `int`, got `str` - at `$.Allocation.Size```) as
    the field's path and the reason in words (``Properties.Allocation.Size: expected an
    integer, got a string``)."""
    text, below = str(exc), ""
    found = _AT.fullmatch(text)
    if found:
        text, below = found.groups()
    at = f"{where}{below}" if where else below.lstrip(".")
    text = _TYPE.sub(lambda m: _TYPES[m.group(1)], text)
    text = text[:1].lower() + text[1:]
    return f"{at}: {text}" if at else text


def decode_strict(value: Any, into: type[msgspec.Struct] | Any, where: str = "") -> Any:
    """Decode JSON-shaped ``value`` into ``into``; a :class:`PluginError` names the field
    at fault and the reason. Well-formed data costs one decode; only data the decoder
    refuses is looked at twice, to say what is wrong or to read its durations."""
    try:
        return msgspec.convert(value, into)
    except msgspec.ValidationError:
        conformed = conform(value, into, where)
    try:
        return msgspec.convert(conformed, into)
    except msgspec.ValidationError as exc:
        raise PluginError(sentence(exc, where)) from None
