"""The ``vanilla`` flavor: adds an init script, tags and attachments. Members are healthy,
unless a ``Health`` probe (a command, a TCP connect or an HTTP GET) says otherwise."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.structs

from infrakit.plugins.flavor.probes import ProbeSpec, probe
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Allocation, Attachment, Description, Health, Index, Spec


class VanillaProperties(msgspec.Struct, rename="pascal", forbid_unknown_fields=True):
    """``Init``: a script, as one string or a list of lines. ``Tags``: merged into the
    instance's tags. ``Attachments``: per logical ID, what to attach to that instance."""

    init: str | list[str] = ""
    tags: dict[str, str] | None = None
    attachments: dict[str, list[Attachment]] | None = None
    health: ProbeSpec | None = None
    """How to tell whether a member is healthy; without it, every member is."""

    def init_lines(self) -> list[str]:
        return [self.init] if isinstance(self.init, str) else list(self.init)


class VanillaFlavor:
    """Flavor/0.1.0 with no knowledge of what runs on the instance."""

    def validate(self, properties: Any, allocation: Allocation) -> None:
        props = decode_properties(properties, VanillaProperties)
        if props.health is not None:
            props.health.check()

    def prepare(self, properties: Any, spec: Spec, allocation: Allocation, index: Index) -> Spec:
        props = decode_properties(properties, VanillaProperties)
        lines = [line for line in [spec.init, *props.init_lines()] if line]
        tags = {**(spec.tags or {}), **(props.tags or {})}
        attachments = spec.attachments
        if spec.logical_id is not None and props.attachments:
            extra = props.attachments.get(spec.logical_id)
            if extra:
                attachments = [*(attachments or []), *extra]
        return msgspec.structs.replace(
            spec, init="\n".join(lines), tags=tags or spec.tags, attachments=attachments
        )

    async def healthy(self, properties: Any, instance: Description) -> Health:
        props = decode_properties(properties, VanillaProperties)
        if props.health is None:
            return Health.HEALTHY
        props.health.check()
        return await probe(props.health, instance)

    def drain(self, properties: Any, instance: Description) -> None:
        """Nothing runs that needs draining."""
