"""What an operator can do from the console: set a group's size; pause, resume or cancel
its rolling update; replace or destroy a member.

Each action is the group plugin's own verb (the one method table's entry says which role
may call it), run as the logged-in caller, so that the group's event history records who
asked. An action that destroys anything asks first: its form leads to a page that says
what will happen, whose button sends the form again with ``confirm=yes``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from infrakit.plugins.group.spec import parse_group, resized
from infrakit.spi.calls import AsyncGroupAPI
from infrakit.spi.errors import PluginError
from infrakit.spi.group import GROUP, GroupSpec
from infrakit.spi.methods import Method

Form = dict[str, str]


@dataclass(frozen=True)
class Action:
    label: str
    """What the button says."""
    method: Method  # type: ignore[type-arg]
    run: Callable[[AsyncGroupAPI, str, Form], Awaitable[str]]
    """Does it; answers what was done, in words."""
    warning: Callable[[AsyncGroupAPI, str, Form], Awaitable[str]] | None = None
    """What a confirmation page says would happen, or "" when there is nothing to confirm
    (a size that grows the group)."""


async def spec_of(groups: AsyncGroupAPI, gid: str) -> GroupSpec:
    for spec in await groups.inspect_groups():
        if spec.id == gid:
            return spec
    raise PluginError(f"Group '{gid}' is not being watched")


def _size(form: Form) -> int:
    value = form.get("size", "").strip()
    if not value.isdigit() or int(value) < 1:
        raise PluginError(f"Size: {value!r} is not a whole number of at least 1")
    return int(value)


def _member(form: Form) -> str:
    member = form.get("member", "")
    if not member:
        raise PluginError("Member: which member was not said")
    return member


async def _set_size(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    details = await groups.commit_group(resized(await spec_of(groups, gid), _size(form)),
                                        False)
    return details


async def _shrinks(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    size = _size(form)
    now = parse_group(await spec_of(groups, gid)).allocation.size
    if size >= now:
        return ""
    return (f"Group '{gid}' will shrink from {now} to {size} members: "
            f"{now - size} members will be destroyed.")


async def _replace(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return await groups.destroy_instances(gid, [_member(form)], False)


async def _destroy(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return await groups.destroy_instances(gid, [_member(form)], True)


async def _replace_warning(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return (f"Member '{_member(form)}' of group '{gid}' will be destroyed, and a new member "
            "created in its place.")


async def _destroy_warning(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return (f"Member '{_member(form)}' of group '{gid}' will be destroyed, and the group's "
            "size lowered by one.")


async def _cancel_warning(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return (f"The rolling update of group '{gid}' will be rolled back: the spec committed "
            "before the current one is committed again, and the members already updated "
            "are replaced once more.")


async def _pause(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return await groups.pause_update(gid)


async def _resume(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return await groups.resume_update(gid)


async def _cancel(groups: AsyncGroupAPI, gid: str, form: Form) -> str:
    return await groups.cancel_update(gid)


_M = GROUP.methods
ACTIONS = {
    "size": Action("Set size", _M["Group.CommitGroup"], _set_size, _shrinks),
    "pause": Action("Pause update", _M["Group.PauseUpdate"], _pause),
    "resume": Action("Resume update", _M["Group.ResumeUpdate"], _resume),
    "cancel": Action("Cancel update", _M["Group.CancelUpdate"], _cancel, _cancel_warning),
    "replace": Action("Replace", _M["Group.DestroyInstances"], _replace, _replace_warning),
    "destroy": Action("Destroy", _M["Group.DestroyInstances"], _destroy, _destroy_warning),
}
"""Every action, by the last part of its path (``POST /ui/group/<ID>/<action>``)."""
