"""Instance/0.5.0: make, label, destroy and describe one resource per instance."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from infrakit.spi.access import Role
from infrakit.spi.errors import PluginError
from infrakit.spi.methods import MaybeAwaitable, Method, interface, nothing, outcomes
from infrakit.spi.types import INSTANCE_API, Description, Spec, Wire

GROUP_TAG = "infrakit.group"
"""The tag a group puts on its members, with the group's ID, as the reference's does: an
instance plugin may read it to tell a group's instances from another's."""


class InstancePlugin(Protocol):
    """What an instance plugin author implements; each method may also be ``async``.

    Raise :class:`infrakit.spi.errors.PluginError` with a message that names the field and
    the reason to refuse a call.
    """

    def validate(self, properties: Any) -> MaybeAwaitable[None]: ...

    def provision(self, spec: Spec) -> MaybeAwaitable[str]: ...

    # Optional: ``provision_each(specs) -> list[str | Exception]`` provisions several at
    # once (``Instance.ProvisionEach``); without it the runtime calls ``provision`` per spec.

    def label(self, instance: str, labels: dict[str, str]) -> MaybeAwaitable[None]: ...

    def destroy(self, instance: str) -> MaybeAwaitable[None]: ...

    def describe_instances(
        self, tags: dict[str, str], properties: bool
    ) -> MaybeAwaitable[list[Description]]: ...

    # Optional: ``describe_ended(tags) -> list[EndedInstance]`` (``Instance.DescribeEnded``,
    # our extension) tells how the instances that ended without a ``Destroy`` ended. A
    # plugin that knows its instances (a process's exit status, a container's) serves it;
    # without it, a group counts an instance it never saw as in flight until its deadline.

    # Optional: ``logs(instance, offset, tail, previous) -> InstanceLogs`` (``Instance.Logs``,
    # our extension) reads an instance's output, a bounded piece per call; see LogsRequest.


class EndedInstance(Wire, kw_only=True, omit_defaults=True):
    """An instance that ended without a ``Destroy``: how and when. A plugin keeps what it
    learnt for a while (at least the last 100 endings, or the last hour) and reports it on
    every call; the caller tells new endings from those it has seen by ``ID``."""

    id: str = msgspec.field(name="ID")
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    tags: dict[str, str] | None = None
    reason: str
    """In words: ``exited with status 2``, ``killed by signal 9 (SIGKILL)``."""
    crashed: bool = True
    """It ended by itself (it exited or crashed); false when someone removed it outside
    the plugin, which is no fault of the spec."""
    exit_status: int | None = None
    """The exit status, when it exited."""
    started: float = 0.0
    """When it started (seconds since the epoch; 0 when unknown)."""
    ended: float = 0.0
    """When the plugin found it ended."""
    output: list[str] | None = None
    """The last lines of its output, when the plugin has them."""


LOGS_MAX_BYTES = 1 << 20
"""The most text one ``Instance.Logs`` answer carries."""


class InstanceLogs(Wire, kw_only=True):
    """A piece of an instance's output, as ``Instance.Logs`` answers."""

    data: str = ""
    """The text, at most :data:`LOGS_MAX_BYTES` of it (UTF-8), whole lines where it can."""
    offset: str = ""
    """The cursor to pass on the next call to get what follows (opaque: the plugin's own)."""
    ended: bool = False
    """The instance has ended and ``data`` reaches the end of what it wrote: no more will
    come."""


class LogsRequest(Wire, kw_only=True):
    """``Instance.Logs``, our extension: an instance's output (stdout and stderr, as the
    plugin keeps it), without streaming: a follower calls again with the ``Offset`` the
    last answer gave until one says ``Ended``. A plugin without it answers "method not
    found"."""

    type: str = ""
    instance: str
    offset: str = ""
    """Where to go on from: ``""`` for the first call, else the last answer's ``Offset``."""
    tail: int | None = None
    """First call only: start this many lines before the end (None: from the start, or
    from the last :data:`LOGS_MAX_BYTES` when there is more)."""
    previous: bool = False
    """Read only an instance that has ended (what it left): refused for one that runs, so
    that a caller asking for the output of an ended instance never gets a live one's."""


class LogsResult(Wire, kw_only=True):
    type: str = ""
    data: str = ""
    offset: str = ""
    ended: bool = False


class ValidateRequest(Wire, kw_only=True):
    type: str = ""
    properties: Any = None


class ProvisionRequest(Wire, kw_only=True):
    type: str = ""
    spec: Spec = msgspec.field(default_factory=Spec)


class ProvisionEachRequest(Wire, kw_only=True):
    """``Instance.ProvisionEach``, our extension: several provisions in one call."""

    type: str = ""
    specs: list[Spec] = msgspec.field(default_factory=list)


class ProvisionOutcome(Wire, kw_only=True, omit_defaults=True):
    """One spec's answer: the new instance's ID, or why none was made."""

    id: str | None = msgspec.field(default=None, name="ID")
    error: str | None = None


class ProvisionEachResult(Wire, kw_only=True):
    type: str = ""
    results: list[ProvisionOutcome]


class LabelRequest(Wire, kw_only=True):
    type: str = ""
    instance: str
    labels: dict[str, str] | None = None


class DestroyRequest(Wire, kw_only=True):
    type: str = ""
    instance: str


class DescribeRequest(Wire, kw_only=True):
    type: str = ""
    tags: dict[str, str] | None = None
    properties: bool = False


class DescribeEndedRequest(Wire, kw_only=True):
    type: str = ""
    tags: dict[str, str] | None = None


class DescribeEndedResult(Wire, kw_only=True):
    type: str = ""
    ended: list[EndedInstance] | None


class OKResult(Wire, kw_only=True):
    type: str = ""
    ok: bool = msgspec.field(name="OK")


class ProvisionResult(Wire, kw_only=True):
    type: str = ""
    id: str = msgspec.field(name="ID")


class DescribeResult(Wire, kw_only=True):
    type: str = ""
    descriptions: list[Description] | None


def _ok(req: Any, _: Any) -> OKResult:
    return OKResult(type=req.type, ok=True)


PROVISION = Method("Instance.Provision", ProvisionRequest, ProvisionResult, "provision",
                   lambda r: (r.spec,), lambda r, v: ProvisionResult(type=r.type, id=v),
                   lambda res: res.id, role=Role.OPERATOR)

INSTANCE = interface(
    INSTANCE_API,
    Method("Instance.Validate", ValidateRequest, OKResult, "validate",
           lambda r: (r.properties,), _ok, nothing),
    PROVISION,
    Method("Instance.ProvisionEach", ProvisionEachRequest, ProvisionEachResult,
           "provision_each", lambda r: (r.specs,),
           lambda r, v: ProvisionEachResult(
               type=r.type, results=outcomes(v, ProvisionOutcome, lambda i: {"id": i})),
           lambda res: [PluginError(o.error) if o.error is not None else o.id
                        for o in res.results],
           single=PROVISION, items=lambda r: [(s,) for s in r.specs], role=Role.OPERATOR),
    Method("Instance.Label", LabelRequest, OKResult, "label",
           lambda r: (r.instance, r.labels or {}), _ok, nothing, role=Role.OPERATOR),
    Method("Instance.Destroy", DestroyRequest, OKResult, "destroy",
           lambda r: (r.instance,), _ok, nothing, role=Role.OPERATOR),
    Method("Instance.DescribeInstances", DescribeRequest, DescribeResult, "describe_instances",
           lambda r: (r.tags or {}, r.properties),
           lambda r, v: DescribeResult(type=r.type, descriptions=list(v)),
           lambda res: res.descriptions or []),
    Method("Instance.DescribeEnded", DescribeEndedRequest, DescribeEndedResult,
           "describe_ended", lambda r: (r.tags or {},),
           lambda r, v: DescribeEndedResult(type=r.type, ended=list(v)),
           lambda res: res.ended or []),
    Method("Instance.Logs", LogsRequest, LogsResult, "logs",
           lambda r: (r.instance, r.offset, r.tail, r.previous),
           lambda r, v: LogsResult(type=r.type, data=v.data, offset=v.offset, ended=v.ended),
           lambda res: InstanceLogs(data=res.data, offset=res.offset, ended=res.ended)),
)
