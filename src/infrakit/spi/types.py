"""Wire types shared by every plugin interface.

Field names are snake_case in Python and PascalCase on the wire, spelled exactly as the
reference InfraKit v0.5 spells them (``ID``, ``LogicalID``, ``OK``, ``APIs``). Optional
lists and maps default to ``None`` so that they encode as ``null``, as the reference sends
them; ``Description.properties`` is ``UNSET`` unless a caller asked for it, so that it is
left out of the JSON entirely.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class Wire(msgspec.Struct, rename="pascal"):
    """Base of every wire struct: PascalCase field names. Subclasses declare `kw_only`."""


class InterfaceSpec(Wire):
    """One interface a plugin implements, e.g. ``Instance/0.5.0``."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


class Attachment(Wire, kw_only=True):
    """A resource attached to an instance (a volume, a network interface, ...)."""

    id: str = msgspec.field(name="ID")
    type: str = ""


class Spec(Wire, kw_only=True):
    """What an instance plugin is asked to provision."""

    properties: Any = None
    tags: dict[str, str] | None = None
    init: str = ""
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    attachments: list[Attachment] | None = None


class Description(Wire, kw_only=True, gc=False):
    """One existing instance as an instance plugin reports it.

    Not tracked by the cycle collector: a description holds decoded JSON, which cannot
    form a cycle, and a group of 10,000 members makes as many on every pass; tracking them
    cost over a quarter of a pass's CPU time in the collector's sweeps."""

    id: str = msgspec.field(name="ID")
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    tags: dict[str, str] | None = None
    properties: Any = msgspec.UNSET


class Allocation(Wire, kw_only=True, forbid_unknown_fields=True):
    """How many members a group has: a size (cattle) or named logical IDs (pets). Give
    one of the two."""

    size: Annotated[int, Meta(description=(
        "How many interchangeable members the group keeps (cattle)."))] = 0
    logical_ids: Annotated[list[str] | None, Meta(description=(
        "One member for each of these names, each keeping its name across replacements "
        "(pets: a database's nodes, hosts with fixed addresses)."))] = msgspec.field(
        default=None, name="LogicalIDs")


class Index(Wire, kw_only=True):
    """Where an instance stands in its group, given to ``Flavor.Prepare``."""

    group: str = ""
    sequence: int = 0


class Health(enum.IntEnum):
    """A flavor's verdict on one instance."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


class HealthReport(msgspec.Struct, frozen=True):
    """A flavor's verdict on one instance with its reason in words (``HTTP 503``,
    ``connection refused``), so that a user sees why a member is judged as it is.
    ``Flavor.Healthy`` answers the bare verdict, as the reference does; ``HealthyEach``
    carries the reason too."""

    health: Health
    reason: str = ""


INSTANCE_API = InterfaceSpec(name="Instance", version="0.5.0")
FLAVOR_API = InterfaceSpec(name="Flavor", version="0.1.0")
GROUP_API = InterfaceSpec(name="Group", version="0.1.0")

MAX_BODY = 4 * 1024 * 1024
"""The largest request body, in bytes, that a plugin of this toolkit accepts: its server
answers 413 to a larger one. A caller splits its batches to fit, and refuses to send a
request that cannot."""


def mebibytes(size: int) -> str:
    """A size as people read it: ``4 MiB``, ``5.2 MiB``, ``0.3 MiB``."""
    mib = size / 2**20
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"
