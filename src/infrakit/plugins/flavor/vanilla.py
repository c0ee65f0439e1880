"""The ``vanilla`` flavor: adds an init script, tags and attachments. Members are healthy,
unless a ``Health`` probe (a command, a TCP connect or an HTTP GET) says otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import msgspec.structs

from infrakit.plugins.flavor.probes import PROBES_AT_ONCE, ProbeSpec, probe
from infrakit.spi.methods import nonblocking
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import (
    Allocation,
    Attachment,
    Description,
    Health,
    HealthReport,
    Index,
    Spec,
)


class VanillaProperties(msgspec.Struct, rename="pascal", forbid_unknown_fields=True):
    """``Init``: a script, as one string or a list of lines. ``Tags``: merged into the
    instance's tags. ``Attachments``: what to attach, as the reference has it (a list of
    ``{ID, Type}`` for every instance) or per logical ID (a map of such lists)."""

    init: str | list[str] = ""
    tags: dict[str, str] | None = None
    attachments: list[Attachment] | dict[str, list[Attachment]] | None = None
    health: ProbeSpec | None = None
    """How to tell whether a member is healthy; without it, every member is."""

    def init_lines(self) -> list[str]:
        return [self.init] if isinstance(self.init, str) else list(self.init)


def _prepared(props: VanillaProperties, spec: Spec) -> Spec:
    lines = [line for line in [spec.init, *props.init_lines()] if line]
    tags = {**(spec.tags or {}), **(props.tags or {})}
    attachments = spec.attachments
    extra = props.attachments
    if isinstance(extra, dict):
        extra = extra.get(spec.logical_id or "") if spec.logical_id is not None else None
    if extra:
        attachments = [*(attachments or []), *extra]
    return msgspec.structs.replace(
        spec, init="\n".join(lines), tags=tags or spec.tags, attachments=attachments
    )


class VanillaFlavor:
    """Flavor/0.1.0 with no knowledge of what runs on the instance."""

    def __init__(self) -> None:
        self._probes: asyncio.Semaphore | None = None

    def validate(self, properties: Any, allocation: Allocation) -> None:
        props = decode_properties(properties, VanillaProperties)
        if props.health is not None:
            props.health.check()

    def prepare(self, properties: Any, spec: Spec, allocation: Allocation, index: Index) -> Spec:
        return _prepared(decode_properties(properties, VanillaProperties), spec)

    @nonblocking
    def prepare_each(self, properties: Any, allocation: Allocation,
                     items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        """Pure computation: run on the event loop, the properties decoded once."""
        props = decode_properties(properties, VanillaProperties)
        return [_prepared(props, spec) for spec, _ in items]

    async def healthy(self, properties: Any, instance: Description) -> Health:
        [report] = await self.healthy_each(properties, [instance])
        return report.health

    async def healthy_each(self, properties: Any,
                           instances: list[Description]) -> list[HealthReport]:
        """Without a probe, every member is healthy at no cost; with one, at most
        ``PROBES_AT_ONCE`` probes run at a time, so that a large group cannot exhaust
        file descriptors or processes."""
        props = decode_properties(properties, VanillaProperties)
        spec = props.health
        if spec is None:
            return [HealthReport(Health.HEALTHY)] * len(instances)
        spec.check()
        if self._probes is None:
            self._probes = asyncio.Semaphore(PROBES_AT_ONCE)
        slots = self._probes

        async def one(instance: Description) -> HealthReport:
            async with slots:
                return await probe(spec, instance)

        return list(await asyncio.gather(*(one(i) for i in instances)))

    def drain(self, properties: Any, instance: Description) -> None:
        """Nothing runs that needs draining."""
