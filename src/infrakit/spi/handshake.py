"""Handshake: what every plugin answers so that callers can tell what it implements."""

from __future__ import annotations

import msgspec

from infrakit.spi.types import InterfaceSpec, Wire

#: The name of the default (untyped) sub-plugin in ``Handshake.Types``.
DEFAULT_TYPE = "."


class ImplementsResult(Wire, kw_only=True):
    """``Handshake.Implements``: the interfaces and versions served."""

    apis: list[InterfaceSpec] = msgspec.field(name="APIs")


class TypesResult(Wire, kw_only=True):
    """``Handshake.Types``: per interface (``Name/Version``), the type names served."""

    types: dict[str, list[str]]


class LegacyImplementsResult(Wire, kw_only=True):
    """``Plugin.Implements``, the handshake of clients older than InfraKit 0.4."""

    interfaces: list[InterfaceSpec]
