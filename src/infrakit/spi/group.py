"""Group/0.1.0: commit, describe, free and destroy declared groups of instances."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec
from msgspec import Meta

from infrakit.spi.access import Role
from infrakit.spi.methods import MaybeAwaitable, Method, interface, nothing
from infrakit.spi.types import GROUP_API, Description, Wire


class GroupSpec(Wire, kw_only=True, forbid_unknown_fields=True):
    """A declared group: its ID and the group plugin's own properties."""

    id: Annotated[str, Meta(description=(
        "The group's name, unique among the groups of one group plugin or manager. "
        "Required."))] = msgspec.field(default="", name="ID")
    properties: Annotated[Any, Meta(description=(
        "What the group plugin is to keep: how many members, made by which instance "
        "plugin, running which flavor."))] = None


class GroupDescription(Wire, kw_only=True):
    """The members of a group and whether they match the declared spec."""

    instances: list[Description] | None = None
    converged: bool = False


class MemberStatus(Wire, kw_only=True):
    id: str = msgspec.field(name="ID")
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    health: str
    """``healthy``, ``starting``, ``unhealthy``, ``failed`` (to be replaced) or
    ``unknown`` (the flavor cannot tell)."""
    age: float
    """Seconds since the controller first saw the member."""
    current: bool
    """Whether the member carries the committed config hash."""
    reason: str = ""
    """Why its health is what it is, when it is not healthy (``GET ...: HTTP 503``)."""
    restarts: int = 0
    """How many members ended before it in its place."""
    last_exit: str = ""
    """How the member before it ended (``proc-4 exited with status 2 after 0.1s``)."""
    last_output: list[str] | None = None
    """The last lines of that member's output, when its plugin has them."""


class OperationStatus(Wire, kw_only=True):
    op: str
    instance: str | None = None
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    age: float
    expires_in: float


class GroupEvent(Wire, kw_only=True):
    """One thing that happened to a group (``Group.Events``, our extension), kept in the
    group's store: the last ``EVENTS_KEPT`` of each group, deleted with it."""

    seq: int = 0
    """Its number in the group's history, from 1, given by the store."""
    time: float
    group: str
    member: str = ""
    kind: str
    """``provisioned``, ``destroyed``, ``launch failed``, ``member died``, ``breaker
    opened``, ``breaker closed``, ``update started``, ``batch done``, ``update halted``,
    ``update finished``, ``backoff started``, ``committed``, ``update paused`` or ``update
    resumed``."""
    reason: str = ""
    actor: str = ""
    """Who asked for it (the audit log): the name of the caller's token, or ``local:USER``
    for a caller on the plugin's UNIX socket; empty for the controller's own decisions."""
    verb: str = ""
    """The call that caused it (``commit``, ``destroy-instances``, ``cancel-update``,
    ``pause-update``, ``resume-update``), or empty for the controller's own decisions."""
    details: dict[str, Any] | None = None


EVENT_KINDS = ("provisioned", "destroyed", "launch failed", "member died", "breaker opened",
               "breaker closed", "update started", "batch done", "update halted",
               "update finished", "backoff started", "committed", "update paused",
               "update resumed")
"""Every :attr:`GroupEvent.kind`; on the event stream each is a topic under its group,
spelt with ``-`` for a blank (``group/<ID>/member-died``)."""


def event_topic(kind: str) -> str:
    """The topic of a kind of event under its group (``launch failed`` ->
    ``launch-failed``)."""
    return kind.replace(" ", "-")


EVENT_TYPE = "group"
"""The typed object of Event/0.1.0 that group events are published under: a group's events
are on the topics ``group/<ID>/<kind>``."""

EVENTS_KEPT = 1000
"""Events kept per group: appending beyond drops the oldest."""


class UsageRecord(Wire, kw_only=True):
    """Member time of one group and one config (``Group.Usage``, our extension): the
    seconds its members existed, summed over the (UTC) days from ``First`` to ``Last``.

    A member counts from when the group's controller first sees it to the last pass that
    sees it; the time no controller of the group runs (the plugin or the manager is
    down, or a new leader has not yet made its first pass) is not counted. Usage is kept
    when its group is destroyed, by the day, for ``USAGE_KEPT_DAYS`` days."""

    group: str
    config: str
    """The config hash the members carried (their ``infrakit.config_sha`` tag)."""
    plugin: str = ""
    """The instance plugin of that config, when the group plugin knew the spec."""
    properties: Any = None
    """The instance properties of that config, likewise."""
    seconds: float
    first: str
    """The first day (UTC, ``2026-11-29``) with usage."""
    last: str


USAGE_KEPT_DAYS = 400
"""Days of usage kept (a year and a month, for a year's bills and last year's): each day's
usage is dropped once it is older, destroyed groups' included."""


class GroupStatus(Wire, kw_only=True):
    """``Group.DescribeStatus``, our extension: everything an operator asks about a group."""

    id: str = msgspec.field(name="ID")
    target: int
    converged: bool
    members: list[MemberStatus]
    in_flight: list[OperationStatus]
    outdated: int
    """Members still to be replaced by the rolling update (0 when none is running)."""
    update_paused: bool
    """An operator paused the rolling update."""
    update_halted: str = ""
    """Why the rolling update halted by itself (too many new members failed), if it did."""
    unhealthy: int
    max_unhealthy: int
    breaker_open: bool
    errors: list[str]
    failures: int
    """Passes in a row that met an error; the controller backs off exponentially."""
    passes: int = 0
    """Reconcile passes since the group plugin started watching the group."""
    backoff: str = ""
    """The crash-loop backoff, when launches are being held back
    (``next launch in 40s after 5 failures in a row (last: ...)``)."""
    health_unknown: str = ""
    """Why some members' health is unknown (a flavor plugin that does not answer)."""
    destroying: bool = False
    """The group is being destroyed: it provisions nothing; destroy it again to finish."""


class GroupSummary(Wire, kw_only=True):
    """One group in a line (``Group.Summaries``, our extension): what ``infrakit group ls``
    and the web console show, for every group in one call, from what each group's last
    pass met (no call to any other plugin).

    ``Status`` is one phrase, the first of these that holds (see
    :func:`infrakit.plugins.group.summary.summarize`): ``destroying``, ``update halted``,
    ``failing``, ``breaker open``, ``backing off``, ``paused``, ``updating``,
    ``converging``, ``converged``."""

    id: str = msgspec.field(name="ID")
    size: int
    """Members the committed spec asks for."""
    members: int | None = None
    """Members that exist and are not being destroyed; None until the group's first pass."""
    ready: int | None = None
    """Healthy members; None until the first pass."""
    up_to_date: int | None = None
    """Members on the committed config; None until the first pass."""
    status: str
    reason: str = ""
    """Why the status is what it is, when it is not ``converged`` (the halted update's
    reason, the backoff, the last error), in words."""
    created: datetime.datetime | None = None
    """When the group was first committed (UTC); None for a group stored before this was
    kept."""
class FieldChange(Wire, kw_only=True):
    """One field of a group spec that a commit would change, as ``terraform plan`` shows
    one attribute."""

    path: str
    """Where, from the spec's top: ``Properties.Instance.Properties.Image``,
    ``Properties.Flavor.Properties.Init[0]``."""
    change: Literal["changed", "added", "removed"]
    old: Any = None
    """The committed value (none when ``added``)."""
    new: Any = None
    """The value committed next (none when ``removed``)."""


class GroupPlan(Wire, kw_only=True):
    """What committing a spec would do (``Group.PlanGroup``, our extension): the fields
    that change, and what the controller would do to the members, found by running its
    own decision over the members it sees now."""

    id: str = msgspec.field(name="ID")
    new_group: bool = False
    """The group is not watched yet: the commit creates it (adopting members it finds)."""
    changed: bool
    """Whether the commit would change anything: a field, or a member."""
    fields: list[FieldChange]
    """The fields that differ from the committed spec (tunables included), in the spec's
    order; for a new group, every field given."""
    steps: list[str]
    """What will happen, in words, in the order the controller does it (``roll 5
    members to the new config, 1 at a time (MaxSurge 1, MaxUnavailable 0): about 5
    batches``); ``no change`` when nothing would."""
    add: int = 0
    """Members provisioned beyond those that replace others."""
    remove: int = 0
    """Members destroyed and not replaced."""
    removed: list[str] | None = None
    """Which members go, in the order the controller picks them, when the commit only
    shrinks the group."""
    roll: int = 0
    """Members replaced by a rolling update."""
    batches: int = 0
    """Rounds of the rolling update."""
    per_batch: int = 0
    """Members replaced in most rounds."""
    held: int = 0
    """Members that keep the old config because the rolling update is paused or halted."""
    tunables: list[str] | None = None
    """The fields that change how the group behaves, not its members (``HealthGrace``)."""
    notes: list[str] | None = None
    """What the plan assumes or cannot foresee (members not healthy now, work in flight)."""
    details: str = ""
    """What ``Group.CommitGroup`` answers for this spec, the reference's words first."""


class GroupPlugin(Protocol):
    """What a group plugin implements; each method may also be ``async``."""

    def commit_group(self, spec: GroupSpec, pretend: bool) -> MaybeAwaitable[str]: ...

    def free_group(self, id: str) -> MaybeAwaitable[None]: ...

    def describe_group(self, id: str) -> MaybeAwaitable[GroupDescription]: ...

    def destroy_group(self, id: str) -> MaybeAwaitable[None]: ...

    def inspect_groups(self) -> MaybeAwaitable[list[GroupSpec]]: ...

    # Our extensions, served when the plugin has them; the reference's clients never call
    # them.

    def describe_status(self, id: str) -> MaybeAwaitable[GroupStatus]: ...

    def destroy_instances(self, id: str, instances: list[str],
                          shrink: bool) -> MaybeAwaitable[str]: ...

    def pause_update(self, id: str) -> MaybeAwaitable[str]: ...

    def resume_update(self, id: str) -> MaybeAwaitable[str]: ...

    def cancel_update(self, id: str) -> MaybeAwaitable[str]: ...

    def events(self, id: str, since: float | None, after: int | None,
               limit: int) -> MaybeAwaitable[list[GroupEvent]]: ...

    def usage(self, id: str, since: float | None) -> MaybeAwaitable[list[UsageRecord]]: ...

    def summaries(self) -> MaybeAwaitable[list[GroupSummary]]: ...
    def plan_group(self, spec: GroupSpec) -> MaybeAwaitable[GroupPlan]: ...

    def previous_spec(self, id: str) -> MaybeAwaitable[GroupSpec | None]: ...


class CommitRequest(Wire, kw_only=True):
    spec: GroupSpec = msgspec.field(default_factory=GroupSpec)
    pretend: bool = False


class PlanRequest(Wire, kw_only=True):
    spec: GroupSpec = msgspec.field(default_factory=GroupSpec)


class PlanResult(Wire, kw_only=True):
    plan: GroupPlan


class IDRequest(Wire, kw_only=True):
    id: str = msgspec.field(name="ID")


class DestroyInstancesRequest(Wire, kw_only=True):
    id: str = msgspec.field(name="ID")
    instances: list[str]
    shrink: bool = False
    """Lower the group's size by their number, instead of replacing them."""


class InspectRequest(Wire, kw_only=True):
    pass


class EventsRequest(Wire, kw_only=True):
    id: str = msgspec.field(name="ID")
    since: float | None = None
    """Only the events at or after this time (seconds since the epoch)."""
    after: int | None = None
    """Only the events numbered after this one (to follow a group's history)."""
    limit: int = 0
    """At most this many, the newest (0: every one kept)."""


class EventsResult(Wire, kw_only=True):
    events: list[GroupEvent]


class UsageRequest(Wire, kw_only=True):
    id: str = msgspec.field(default="", name="ID")
    """One group, or every group with usage (empty)."""
    since: float | None = None
    """Only the days from the (UTC) day holding this time (seconds since the epoch)."""


class UsageResult(Wire, kw_only=True):
    usage: list[UsageRecord]


class SummariesResult(Wire, kw_only=True):
    groups: list[GroupSummary]


class PreviousSpecResult(Wire, kw_only=True):
    spec: GroupSpec | None
    """The spec committed before the current one (what ``cancel-update`` rolls back to);
    null when there is none."""


class CommitResult(Wire, kw_only=True):
    details: str


class OKResult(Wire, kw_only=True):
    ok: bool = msgspec.field(name="OK")


class DescribeResult(Wire, kw_only=True):
    description: GroupDescription


class StatusResult(Wire, kw_only=True):
    status: GroupStatus


class InspectResult(Wire, kw_only=True):
    groups: list[GroupSpec] | None


def _ok(_: Any, __: Any) -> OKResult:
    return OKResult(ok=True)


def _details(_: Any, value: str) -> CommitResult:
    return CommitResult(details=value)


def _unwrap_details(res: CommitResult) -> str:
    return res.details


GROUP = interface(
    GROUP_API,
    Method("Group.CommitGroup", CommitRequest, CommitResult, "commit_group",
           lambda r: (r.spec, r.pretend), _details, _unwrap_details, role=Role.OPERATOR),
    Method("Group.FreeGroup", IDRequest, OKResult, "free_group", lambda r: (r.id,), _ok,
           nothing, role=Role.ADMIN),
    Method("Group.DescribeGroup", IDRequest, DescribeResult, "describe_group",
           lambda r: (r.id,), lambda r, v: DescribeResult(description=v),
           lambda res: res.description),
    Method("Group.DestroyGroup", IDRequest, OKResult, "destroy_group", lambda r: (r.id,), _ok,
           nothing, role=Role.ADMIN),
    # The reference answers an empty list as null.
    Method("Group.InspectGroups", InspectRequest, InspectResult, "inspect_groups",
           lambda r: (), lambda r, v: InspectResult(groups=list(v) or None),
           lambda res: res.groups or []),
    Method("Group.DescribeStatus", IDRequest, StatusResult, "describe_status",
           lambda r: (r.id,), lambda r, v: StatusResult(status=v), lambda res: res.status),
    Method("Group.DestroyInstances", DestroyInstancesRequest, CommitResult, "destroy_instances",
           lambda r: (r.id, r.instances, r.shrink), _details, _unwrap_details,
           role=Role.OPERATOR),
    Method("Group.PauseUpdate", IDRequest, CommitResult, "pause_update",
           lambda r: (r.id,), _details, _unwrap_details, role=Role.OPERATOR),
    Method("Group.ResumeUpdate", IDRequest, CommitResult, "resume_update",
           lambda r: (r.id,), _details, _unwrap_details, role=Role.OPERATOR),
    Method("Group.CancelUpdate", IDRequest, CommitResult, "cancel_update",
           lambda r: (r.id,), _details, _unwrap_details, role=Role.OPERATOR),
    Method("Group.Events", EventsRequest, EventsResult, "events",
           lambda r: (r.id, r.since, r.after, r.limit),
           lambda r, v: EventsResult(events=list(v)), lambda res: res.events),
    Method("Group.Usage", UsageRequest, UsageResult, "usage", lambda r: (r.id, r.since),
           lambda r, v: UsageResult(usage=list(v)), lambda res: res.usage),
    Method("Group.Summaries", InspectRequest, SummariesResult, "summaries", lambda r: (),
           lambda r, v: SummariesResult(groups=list(v)), lambda res: res.groups),
    Method("Group.PlanGroup", PlanRequest, PlanResult, "plan_group", lambda r: (r.spec,),
           lambda r, v: PlanResult(plan=v), lambda res: res.plan),
    Method("Group.PreviousSpec", IDRequest, PreviousSpecResult, "previous_spec",
           lambda r: (r.id,), lambda r, v: PreviousSpecResult(spec=v), lambda res: res.spec),
)
