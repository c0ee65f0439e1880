"""Flavor/0.1.0: what runs on an instance, whether it is healthy, and draining it."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from infrakit.spi.access import Role
from infrakit.spi.errors import PluginError
from infrakit.spi.instance import OKResult
from infrakit.spi.methods import MaybeAwaitable, Method, interface, nothing, outcomes
from infrakit.spi.types import (
    FLAVOR_API,
    Allocation,
    Description,
    Health,
    HealthReport,
    Index,
    Spec,
    Wire,
)


class FlavorPlugin(Protocol):
    """What a flavor plugin author implements; each method may also be ``async``."""

    def validate(self, properties: Any, allocation: Allocation) -> MaybeAwaitable[None]: ...

    def prepare(
        self, properties: Any, spec: Spec, allocation: Allocation, index: Index
    ) -> MaybeAwaitable[Spec]: ...

    def healthy(self, properties: Any, instance: Description) -> MaybeAwaitable[Health]: ...

    def drain(self, properties: Any, instance: Description) -> MaybeAwaitable[None]: ...

    # Optional batch forms (our extensions ``Flavor.PrepareEach`` and ``Flavor.HealthyEach``;
    # without them the runtime calls the one-item method per item):
    # ``prepare_each(properties, allocation, items: list[tuple[Spec, Index]])
    # -> list[Spec | Exception]`` and
    # ``healthy_each(properties, instances) -> list[Health | HealthReport | Exception]``,
    # where a :class:`HealthReport` also says why (callers always get reports).


class ValidateRequest(Wire, kw_only=True):
    type: str = ""
    properties: Any = None
    allocation: Allocation = msgspec.field(default_factory=Allocation)


class PrepareRequest(Wire, kw_only=True):
    type: str = ""
    properties: Any = None
    spec: Spec = msgspec.field(default_factory=Spec)
    allocation: Allocation = msgspec.field(default_factory=Allocation)
    index: Index = msgspec.field(default_factory=Index)


class InstanceRequest(Wire, kw_only=True):
    type: str = ""
    properties: Any = None
    instance: Description


class PrepareItem(Wire, kw_only=True):
    spec: Spec
    index: Index = msgspec.field(default_factory=Index)


class PrepareEachRequest(Wire, kw_only=True):
    """``Flavor.PrepareEach``, our extension: several prepares of one group in one call."""

    type: str = ""
    properties: Any = None
    allocation: Allocation = msgspec.field(default_factory=Allocation)
    items: list[PrepareItem] = msgspec.field(default_factory=list)


class HealthyEachRequest(Wire, kw_only=True):
    """``Flavor.HealthyEach``, our extension: the health of several members in one call."""

    type: str = ""
    properties: Any = None
    instances: list[Description] = msgspec.field(default_factory=list)


class PrepareOutcome(Wire, kw_only=True, omit_defaults=True):
    spec: Spec | None = None
    error: str | None = None


class HealthOutcome(Wire, kw_only=True, omit_defaults=True):
    health: Health | None = None
    reason: str | None = None
    """Why, in words (our extension; a caller that does not know it ignores it)."""
    error: str | None = None


class PrepareEachResult(Wire, kw_only=True):
    type: str = ""
    results: list[PrepareOutcome]


class HealthyEachResult(Wire, kw_only=True):
    type: str = ""
    results: list[HealthOutcome]


class PrepareResult(Wire, kw_only=True):
    type: str = ""
    spec: Spec


class HealthResult(Wire, kw_only=True):
    type: str = ""
    health: Health


def _ok(req: Any, _: Any) -> OKResult:
    return OKResult(type=req.type, ok=True)


def _verdict(value: Health | HealthReport) -> Health:
    return Health(value.health if isinstance(value, HealthReport) else value)


def _health_fields(value: Health | HealthReport) -> dict[str, Any]:
    if isinstance(value, HealthReport):
        return {"health": Health(value.health), "reason": value.reason or None}
    return {"health": Health(value)}


_BARE = {h: HealthReport(h) for h in Health}
"""The reports without a reason, made once: a large group's every member gets one on every
pass."""


def _report(outcome: HealthOutcome) -> HealthReport | PluginError:
    if outcome.error is not None or outcome.health is None:
        return PluginError(outcome.error or "no verdict")
    if outcome.reason:
        return HealthReport(outcome.health, outcome.reason)
    return _BARE[outcome.health]


PREPARE = Method("Flavor.Prepare", PrepareRequest, PrepareResult, "prepare",
                 lambda r: (r.properties, r.spec, r.allocation, r.index),
                 lambda r, v: PrepareResult(type=r.type, spec=v), lambda res: res.spec,
                 role=Role.OPERATOR)
HEALTHY = Method("Flavor.Healthy", InstanceRequest, HealthResult, "healthy",
                 lambda r: (r.properties, r.instance),
                 lambda r, v: HealthResult(type=r.type, health=_verdict(v)),
                 lambda res: res.health)

FLAVOR = interface(
    FLAVOR_API,
    Method("Flavor.Validate", ValidateRequest, OKResult, "validate",
           lambda r: (r.properties, r.allocation), _ok, nothing),
    PREPARE,
    Method("Flavor.PrepareEach", PrepareEachRequest, PrepareEachResult, "prepare_each",
           lambda r: (r.properties, r.allocation, [(i.spec, i.index) for i in r.items]),
           lambda r, v: PrepareEachResult(
               type=r.type, results=outcomes(v, PrepareOutcome, lambda s: {"spec": s})),
           lambda res: [PluginError(o.error) if o.error is not None else o.spec
                        for o in res.results],
           single=PREPARE,
           items=lambda r: [(r.properties, i.spec, r.allocation, i.index) for i in r.items],
           pack=lambda a: (a[0], a[1], [PrepareItem(spec=s, index=i) for s, i in a[2]]),
           role=Role.OPERATOR),
    Method("Flavor.HealthyEach", HealthyEachRequest, HealthyEachResult, "healthy_each",
           lambda r: (r.properties, r.instances),
           lambda r, v: HealthyEachResult(
               type=r.type, results=outcomes(v, HealthOutcome, _health_fields)),
           lambda res: [_report(o) for o in res.results],
           single=HEALTHY,
           items=lambda r: [(r.properties, i) for i in r.instances],
           lift=lambda health: HealthReport(Health(health))),
    HEALTHY,
    Method("Flavor.Drain", InstanceRequest, OKResult, "drain",
           lambda r: (r.properties, r.instance), _ok, nothing, role=Role.OPERATOR),
)
