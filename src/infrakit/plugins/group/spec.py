"""The default group plugin's ``Properties`` and their validation.

The reference's fields, ``Allocation``, ``Instance`` and ``Flavor``, keep its meaning and its
error messages. Our additions are optional and sit beside them; they are not part of the
config hash, so changing them never triggers a rolling update.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from infrakit.plugins.group.confighash import config_hash
from infrakit.spi.durations import Duration
from infrakit.spi.errors import PluginError
from infrakit.spi.group import GroupSpec
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Allocation, Wire

_PERCENT = re.compile(r"(100|[0-9]{1,2})(\.[0-9]+)?%")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Control characters (C0, DEL, C1): in an ID, every listing would print them, and a
terminal would act on them or start a new line."""

DEFAULT_PROVISION_DEADLINE = 600.0
DEFAULT_MAX_PARALLEL = 16
DEFAULT_BACKOFF_LIMIT = 300.0
MAX_MEMBERS = 100_000
"""The most members one group may have: far beyond any real group, and far below what
would exhaust the controller's memory planning a typo's worth of instances."""
MAX_PARALLEL = 10_000
MAX_SECONDS = 30 * 24 * 3600.0
"""The longest duration a spec may give (30 days)."""


def _about(text: str) -> Meta:
    """A field's meaning, as ``infrakit explain`` and docs/spec.md show it."""
    return Meta(description=text)


class PluginSpec(Wire, kw_only=True, forbid_unknown_fields=True):
    """Which plugin to call (``name`` or ``name/type``) and the properties to give it."""

    plugin: Annotated[str, _about(
        "The plugin's name as it serves on its socket (instance-file, flavor-vanilla), "
        "or name/type for one type of a plugin that serves several. Required.")] = ""
    properties: Annotated[Any, _about(
        "The plugin's own properties, passed to it as they are: their fields are that "
        "plugin's to define and to check.")] = None


class GroupProperties(Wire, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The group plugin's ``Properties``: how many members, made how, and how the group
    heals and updates them. ``Allocation``, ``Instance`` and ``Flavor`` are the reference
    InfraKit's; the others are optional tunables, outside the config hash, so that
    changing one never rolls the members.

    Encoded, only what differs from the defaults is written, so a spec the plugin changes
    (a new size) keeps the shape its author gave it."""

    allocation: Annotated[Allocation, _about(
        "How many members: a Size, or LogicalIDs (not both). Required.")] = \
        msgspec.field(default_factory=Allocation)
    instance: Annotated[PluginSpec, _about(
        "The instance plugin that makes and destroys the members, and what it is to "
        "make. Changing it rolls every member.")] = msgspec.field(default_factory=PluginSpec)
    flavor: Annotated[PluginSpec, _about(
        "The flavor plugin that says what runs on a member and judges its health. "
        "Changing it rolls every member.")] = msgspec.field(default_factory=PluginSpec)
    provision_deadline: Annotated[Duration, _about(
        "How long a provision counts toward the size before its instance must be "
        "described by the instance plugin; after it, the group provisions again.")] = \
        DEFAULT_PROVISION_DEADLINE
    max_parallel: Annotated[int, _about(
        "Provisions and destroys of this group that may run at once (1 to 10000).")] = \
        DEFAULT_MAX_PARALLEL
    max_surge: Annotated[int, _about(
        "During a rolling update, members the group may have above its size.")] = 1
    max_unavailable: Annotated[int, _about(
        "During a rolling update, healthy members the group may have below its size. "
        "MaxSurge and MaxUnavailable may not both be 0.")] = 0
    update_pause: Annotated[Duration, _about(
        "During a rolling update, the wait between the start of one batch and the "
        "next.")] = 0.0
    update_failure_limit: Annotated[int, _about(
        "Members of the new config that may be replaced for failing their health checks "
        "during one rolling update before the update halts (0: never halt).")] = 3
    max_unhealthy: Annotated[int | str, _about(
        "Unhealthy members at once (a count, or a percentage of the size such as "
        '"50%") above which the circuit breaker opens and no member is replaced for its '
        "health.")] = "50%"
    health_grace: Annotated[Duration, _about(
        "How long a member may stay unhealthy before it is drained, destroyed and "
        "replaced.")] = 60.0
    startup_grace: Annotated[Duration, _about(
        "How long a new member is left unjudged while it starts; one that is not healthy "
        "within StartupGrace + HealthGrace failed to launch.")] = 0.0
    backoff_limit: Annotated[Duration, _about(
        "The longest wait between launches after failed launches or members that died "
        "young (the wait starts at 1s and doubles with each failure in a row; at least "
        "1s).")] = DEFAULT_BACKOFF_LIMIT
    scale_in_order: Annotated[Literal["newest", "oldest"], _about(
        "Which members go first when the group shrinks, after unhealthy and outdated "
        "ones.")] = "newest"

    def target(self) -> int:
        """How many members the group should have."""
        return len(self.allocation.logical_ids or ()) or self.allocation.size

    def unhealthy_limit(self) -> int:
        """``MaxUnhealthy`` as a count of members."""
        limit = self.max_unhealthy
        if isinstance(limit, int):
            return limit
        return int(self.target() * float(limit.rstrip("%")) / 100)


def parse_group(spec: GroupSpec) -> GroupProperties:
    """Check a committed spec in the reference's order, with its messages; then ours."""
    if not spec.id:
        raise PluginError("Group ID must not be blank")
    if _CONTROL.search(spec.id):
        raise PluginError(f"ID: {spec.id!r} must not contain control characters")
    props = decode_properties(spec.properties, GroupProperties)
    alloc = props.allocation
    if alloc.size == 0 and not alloc.logical_ids:
        raise PluginError("Allocation must not be blank")
    if alloc.size and alloc.logical_ids:
        raise PluginError("Only one Allocation method may be used")
    if alloc.size < 0:
        raise PluginError("Properties.Allocation.Size: must not be negative")
    if alloc.logical_ids and len(set(alloc.logical_ids)) != len(alloc.logical_ids):
        raise PluginError("Properties.Allocation.LogicalIDs: must not repeat an ID")
    for lid in alloc.logical_ids or ():
        if _CONTROL.search(lid):
            raise PluginError(f"Properties.Allocation.LogicalIDs: {lid!r} must not contain "
                              "control characters")
    if max(alloc.size, len(alloc.logical_ids or ())) > MAX_MEMBERS:
        raise PluginError(f"Properties.Allocation: at most {MAX_MEMBERS} members in one group")
    for block, name in ((props.instance, "Instance"), (props.flavor, "Flavor")):
        if not block.plugin:
            raise PluginError(f"Properties.{name}.Plugin: must name a plugin")
    if props.provision_deadline <= 0:
        raise PluginError("Properties.ProvisionDeadline: must be a positive number of seconds")
    if not 1 <= props.max_parallel <= MAX_PARALLEL:
        raise PluginError(f"Properties.MaxParallel: must be from 1 to {MAX_PARALLEL}")
    if max(props.max_surge, props.max_unavailable) > MAX_MEMBERS:
        raise PluginError(f"Properties.MaxSurge and MaxUnavailable: at most {MAX_MEMBERS}")
    if props.max_surge < 0 or props.max_unavailable < 0:
        raise PluginError("Properties.MaxSurge and MaxUnavailable: must not be negative")
    if props.max_surge == 0 and props.max_unavailable == 0:
        raise PluginError("Properties.MaxSurge and MaxUnavailable: may not both be 0, or a "
                          "rolling update could never make progress")
    limit = props.max_unhealthy
    if isinstance(limit, str) and not _PERCENT.fullmatch(limit):
        raise PluginError(f"Properties.MaxUnhealthy: {limit!r} is neither a count nor a "
                          "percentage such as '50%'")
    if isinstance(limit, int) and limit < 0:
        raise PluginError("Properties.MaxUnhealthy: must not be negative")
    if props.update_pause < 0:
        raise PluginError("Properties.UpdatePause: must not be negative")
    if props.update_failure_limit < 0:
        raise PluginError("Properties.UpdateFailureLimit: must not be negative")
    if props.health_grace < 0 or props.startup_grace < 0:
        raise PluginError("Properties.HealthGrace and StartupGrace: must not be negative")
    if props.backoff_limit < 1:
        raise PluginError("Properties.BackoffLimit: must be at least 1 second")
    for name, seconds in (("ProvisionDeadline", props.provision_deadline),
                          ("BackoffLimit", props.backoff_limit),
                          ("UpdatePause", props.update_pause),
                          ("HealthGrace", props.health_grace),
                          ("StartupGrace", props.startup_grace)):
        if seconds > MAX_SECONDS:
            raise PluginError(f"Properties.{name}: at most {MAX_SECONDS:.0f} seconds (30 days)")
    return props


def resized(spec: GroupSpec, size: int) -> GroupSpec:
    """``spec`` with a new ``Allocation.Size``: the spec ``set-size`` and a shrinking
    ``destroy-instances`` commit."""
    props = parse_group(spec)
    if props.allocation.logical_ids:
        raise PluginError(f"Allocation: group '{spec.id}' is allocated by LogicalIDs, not by "
                          "size; commit a spec with the IDs you want")
    # the author's own words for the rest (``HealthGrace: 5m``), not their decoded values
    return GroupSpec(id=spec.id, properties={**spec.properties, "Allocation": {"Size": size}})


def config_sha(props: GroupProperties) -> str:
    """The ``infrakit.config_sha`` of these properties, as the reference computes it from
    its decoded ``Instance`` and ``Flavor`` blocks."""
    return config_hash(msgspec.to_builtins(props.instance), msgspec.to_builtins(props.flavor))
