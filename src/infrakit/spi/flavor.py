"""Flavor/0.1.0: what runs on an instance, whether it is healthy, and draining it."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from infrakit.spi.instance import OKResult
from infrakit.spi.methods import MaybeAwaitable, Method, interface, nothing
from infrakit.spi.types import FLAVOR_API, Allocation, Description, Health, Index, Spec, Wire


class FlavorPlugin(Protocol):
    """What a flavor plugin author implements; each method may also be ``async``."""

    def validate(self, properties: Any, allocation: Allocation) -> MaybeAwaitable[None]: ...

    def prepare(
        self, properties: Any, spec: Spec, allocation: Allocation, index: Index
    ) -> MaybeAwaitable[Spec]: ...

    def healthy(self, properties: Any, instance: Description) -> MaybeAwaitable[Health]: ...

    def drain(self, properties: Any, instance: Description) -> MaybeAwaitable[None]: ...


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


class PrepareResult(Wire, kw_only=True):
    type: str = ""
    spec: Spec


class HealthResult(Wire, kw_only=True):
    type: str = ""
    health: Health


def _ok(req: Any, _: Any) -> OKResult:
    return OKResult(type=req.type, ok=True)


FLAVOR = interface(
    FLAVOR_API,
    Method("Flavor.Validate", ValidateRequest, OKResult, "validate",
           lambda r: (r.properties, r.allocation), _ok, nothing),
    Method("Flavor.Prepare", PrepareRequest, PrepareResult, "prepare",
           lambda r: (r.properties, r.spec, r.allocation, r.index),
           lambda r, v: PrepareResult(type=r.type, spec=v), lambda res: res.spec),
    Method("Flavor.Healthy", InstanceRequest, HealthResult, "healthy",
           lambda r: (r.properties, r.instance),
           lambda r, v: HealthResult(type=r.type, health=Health(v)), lambda res: res.health),
    Method("Flavor.Drain", InstanceRequest, OKResult, "drain",
           lambda r: (r.properties, r.instance), _ok, nothing),
)
