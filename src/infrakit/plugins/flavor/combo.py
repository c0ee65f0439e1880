"""The ``combo`` flavor: composes several flavors into one.

``Properties``: ``{"Flavors": [{"Plugin": name, "Properties": ...}, ...]}``. Each flavor
prepares its own copy of the spec (so none sees another's changes); the results are merged:
tags merged in order (a later flavor wins a clash), init scripts concatenated after the
spec's own, attachments appended. An instance is healthy only when every flavor says so,
unhealthy when any says so, and unknown otherwise; draining drains through every flavor.

A flavor named may be a combo itself, this one included, with flavors of its own: a spec
may name at most :data:`MAX_FLAVORS` flavors in all, nested ones counted, at most
:data:`MAX_DEPTH` lists deep. Every flavor named is one call in flight at once, and the
calls of a nested combo wait on the calls above them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import msgspec.structs

from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import PluginError
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Allocation, Description, Health, HealthReport, Index, Spec, Wire

MAX_FLAVORS = 32
"""Flavors a spec may name in all, counting those that nested combos name."""
MAX_DEPTH = 3
"""Lists of flavors one inside another, the spec's own counted."""


class FlavorRef(Wire, kw_only=True, forbid_unknown_fields=True):
    plugin: str
    properties: Any = None


class ComboProperties(Wire, kw_only=True, forbid_unknown_fields=True):
    flavors: list[FlavorRef]


class ComboFlavor:
    """Flavor/0.1.0 over other flavor plugins, found through ``plugins``; their errors
    name them."""

    def __init__(self, plugins: PluginLookup) -> None:
        self.plugins = plugins

    async def stop(self) -> None:
        await self.plugins.close()

    def _flavors(self, properties: Any) -> list[FlavorRef]:
        props = decode_properties(properties, ComboProperties)
        if not props.flavors:
            raise PluginError("Properties.Flavors: must name at least one flavor")
        count, depth = _extent([ref.properties for ref in props.flavors])
        if count > MAX_FLAVORS:
            raise PluginError(f"Properties.Flavors: names {count} flavors or more, counting "
                              f"those of the combos in it; at most {MAX_FLAVORS}")
        if depth > MAX_DEPTH:
            raise PluginError(f"Properties.Flavors: combos nested {depth} lists deep or "
                              f"more; at most {MAX_DEPTH}")
        return props.flavors

    async def _each(self, properties: Any, call: str, *args: Any) -> list[Any]:
        async def one(ref: FlavorRef) -> Any:
            return await getattr(self.plugins.flavor(ref.plugin), call)(ref.properties, *args)

        return list(await asyncio.gather(*(one(ref) for ref in self._flavors(properties))))

    async def validate(self, properties: Any, allocation: Allocation) -> None:
        await self._each(properties, "validate", allocation)

    async def prepare(self, properties: Any, spec: Spec, allocation: Allocation,
                      index: Index) -> Spec:
        [prepared] = await self.prepare_each(properties, allocation, [(spec, index)])
        if isinstance(prepared, Exception):
            raise prepared
        return prepared

    async def prepare_each(self, properties: Any, allocation: Allocation,
                           items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        """Each flavor prepares its own blank copy of every spec, in one batch call per
        flavor; an item any flavor failed is that failure."""
        blanks = [(msgspec.structs.replace(spec, init="", tags=dict(spec.tags or {}),
                                           attachments=None), index) for spec, index in items]
        outputs = await self._each(properties, "prepare_each", allocation, blanks)
        results: list[Spec | Exception] = []
        for k, (spec, _) in enumerate(items):
            mine = [out[k] for out in outputs]
            failed = next((o for o in mine if isinstance(o, Exception)), None)
            results.append(failed if failed is not None else _merged(spec, mine))
        return results

    async def healthy(self, properties: Any, instance: Description) -> Health:
        [report] = await self.healthy_each(properties, [instance])
        if isinstance(report, Exception):
            raise report
        return report.health

    async def healthy_each(self, properties: Any,
                           instances: list[Description]) -> list[HealthReport | Exception]:
        """Healthy when every flavor says so, unhealthy when any does (with its reason),
        else unknown."""
        outputs = await self._each(properties, "healthy_each", instances)
        results: list[HealthReport | Exception] = []
        for k in range(len(instances)):
            answers = [out[k] for out in outputs]
            failed = next((a for a in answers if isinstance(a, Exception)), None)
            if failed is not None:
                results.append(failed)
                continue
            reports = [a for a in answers if isinstance(a, HealthReport)]
            worst = next((r for r in reports if r.health is Health.UNHEALTHY), None)
            worst = worst or next((r for r in reports if r.health is not Health.HEALTHY), None)
            results.append(worst or HealthReport(Health.HEALTHY))
        return results

    async def drain(self, properties: Any, instance: Description) -> None:
        for ref in self._flavors(properties):  # in order: the first flavor drains first
            await self.plugins.flavor(ref.plugin).drain(ref.properties, instance)


def _extent(properties: list[Any], depth: int = 1) -> tuple[int, int]:
    """How many flavors a list of flavors names, with those that the combos in it name
    (any flavor whose properties hold a list of ``Flavors``), and how many lists deep they
    go; it stops counting once past either limit."""
    count, deepest = len(properties), depth
    for props in properties:
        if count > MAX_FLAVORS or deepest > MAX_DEPTH:
            break
        nested = props.get("Flavors") if isinstance(props, dict) else None
        if isinstance(nested, list):
            inner = [ref.get("Properties") if isinstance(ref, dict) else None for ref in nested]
            more, deeper = _extent(inner, depth + 1)
            count += more
            deepest = max(deepest, deeper)
    return count, deepest


def _merged(spec: Spec, outputs: list[Spec]) -> Spec:
    """``spec`` with what every flavor added: tags merged in order, init scripts
    concatenated after the spec's own, attachments appended."""
    tags = dict(spec.tags or {})
    inits = [spec.init]
    attachments = list(spec.attachments or [])
    for out in outputs:
        tags.update(out.tags or {})
        inits.append(out.init)
        attachments += [a for a in out.attachments or [] if a not in attachments]
    return msgspec.structs.replace(spec, tags=tags or spec.tags,
                                   init="\n".join(i for i in inits if i),
                                   attachments=attachments or spec.attachments)
