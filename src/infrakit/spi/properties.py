"""Decoding a plugin's free-form ``Properties`` into a typed struct, with errors that say
which field is wrong and why (see :mod:`infrakit.spi.strict`)."""

from __future__ import annotations

from typing import Any, TypeVar

from infrakit.spi.strict import decode_strict

T = TypeVar("T")


def decode_properties(value: Any, into: type[T], where: str = "Properties") -> T:
    """Convert JSON-shaped ``value`` into ``into``; a :class:`PluginError` names the field.
    A struct declared ``forbid_unknown_fields=True`` refuses a key it lacks, with the
    field most likely meant; a :data:`~infrakit.spi.durations.Duration` field takes
    ``"5m"`` as well as ``300``."""
    decoded: T = decode_strict({} if value is None else value, into, where)
    return decoded
