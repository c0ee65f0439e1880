"""Decoding a plugin's free-form ``Properties`` into a typed struct, with errors that say
which field is wrong and why."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from infrakit.spi.errors import PluginError

T = TypeVar("T")


def decode_properties(value: Any, into: type[T], where: str = "Properties") -> T:
    """Convert JSON-shaped ``value`` into ``into``; a :class:`PluginError` names the field."""
    try:
        return msgspec.convert({} if value is None else value, into)
    except msgspec.ValidationError as exc:
        raise PluginError(f"{where}: {str(exc).replace('`$', f'`{where}')}") from None
