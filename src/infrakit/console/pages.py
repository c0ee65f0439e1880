"""The console's pages and their live parts, each from fresh answers of the group plugin.

A page is drawn whole on a normal ``GET``; its live part (``/ui/part/...``) is the same
template's block alone, which the page fetches again when its event stream says something
changed, every :data:`REFRESH` seconds, and when its stream comes back after a drop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from infrakit.console.actions import ACTIONS, spec_of
from infrakit.console.render import page
from infrakit.console.view import progress, spec_diff, spec_text, summary
from infrakit.rpc.web import Response
from infrakit.spi.access import Role
from infrakit.spi.calls import AsyncGroupAPI
from infrakit.spi.errors import PluginError, Unsupported
from infrakit.spi.group import GroupSpec, GroupSummary

if TYPE_CHECKING:
    from infrakit.console.app import Caller, Console

REFRESH = 5
"""Seconds between two fetches of a page's live part when nothing else asks for one (the
members' health changes without an event)."""
EVENTS_SHOWN = 50
"""The newest events of a group its page shows."""


def _common(caller: Caller) -> dict[str, Any]:
    session = caller.session
    return {"who": session.principal, "csrf": session.csrf, "refresh": REFRESH,
            "operator": session.principal.role >= Role.OPERATOR}


def message(caller: Caller, status: int, words: str) -> Response:
    return page("message.html", status, words=words, **_common(caller))


def confirm(caller: Caller, gid: str, action: str, label: str, warning: str,
            form: dict[str, str], back: str) -> Response:
    fields = {k: v for k, v in form.items() if k not in ("csrf", "confirm")}
    return page("confirm.html", gid=gid, action=action, label=label, warning=warning,
                fields=fields, back=back, **_common(caller))


async def _rows(console: Console) -> tuple[list[GroupSummary], str]:
    """Every group's line (one call, whatever the number of members), and who leads."""
    if console.leadership is None:
        return await console.groups.summaries(), ""
    rows, leader = await asyncio.gather(console.groups.summaries(), console.leadership(),
                                        return_exceptions=True)
    if isinstance(rows, BaseException):
        raise rows
    return rows, f"unknown ({leader})" if isinstance(leader, BaseException) else leader


async def overview(console: Console, caller: Caller) -> Response:
    rows, leader = await _rows(console)
    return page("overview.html", rows=rows, leader=leader, **_common(caller))


async def groups_part(console: Console, caller: Caller) -> Response:
    rows, leader = await _rows(console)
    return page("groups_part.html", rows=rows, leader=leader, **_common(caller))


async def _group(console: Console, gid: str) -> dict[str, Any]:
    groups = console.groups
    status, events = await asyncio.gather(groups.describe_status(gid),
                                          groups.events(gid, None, None, EVENTS_SHOWN))
    return {"gid": gid, "status": status, "row": summary(status),
            "progress": progress(status), "events": list(reversed(events))}


async def group(console: Console, caller: Caller, gid: str) -> Response:
    live = await _group(console, gid)
    spec, previous = await asyncio.gather(spec_of(console.groups, gid),
                                          _previous(console.groups, gid))
    try:
        usage = await console.groups.usage(gid, None)
    except PluginError as exc:  # a plugin that keeps no usage
        usage, live["usage_error"] = [], str(exc)
    notice = caller.session.take_notice()
    return page("group.html", spec=spec_text(spec), diff=spec_diff(previous, spec),
                usage=usage, notice=notice, actions=ACTIONS, size=spec_size(spec.properties),
                **live, **_common(caller))


async def group_part(console: Console, caller: Caller, gid: str) -> Response:
    return page("group_part.html", **await _group(console, gid), **_common(caller))


async def _previous(groups: AsyncGroupAPI, gid: str) -> GroupSpec | None:
    """The spec committed before the current one; None from a plugin that does not say
    (one of an earlier version): the page then shows no diff."""
    try:
        return await groups.previous_spec(gid)
    except Unsupported:
        return None


def spec_size(properties: Any) -> int | None:
    """The spec's ``Allocation.Size``, if it is a size group."""
    if isinstance(properties, dict):
        allocation = properties.get("Allocation")
        if isinstance(allocation, dict) and isinstance(allocation.get("Size"), int):
            return int(allocation["Size"])
    return None
