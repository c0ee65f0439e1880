"""What ``infrakit group ls`` and ``infrakit group describe`` print.

``group ls`` is one call for all groups (``Group.Summaries``), whatever their number; a
group plugin without it (the reference's) gets the IDs alone, and is told why. ``group
describe`` lists members with those that need a look first (unhealthy, then starting or
unknown, then healthy; by ID in natural order within each), and ``-o wide`` adds where
each member answers, as its instance plugin describes it (:mod:`infrakit.spi.facts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from infrakit.cli.output import (
    TABLES,
    age,
    dump,
    emit,
    emit_ids,
    format_tags,
    iso,
    printable,
    table,
)
from infrakit.spi import facts
from infrakit.spi.errors import PluginError, Unsupported
from infrakit.spi.group import GroupEvent, GroupSpec, GroupStatus, GroupSummary, MemberStatus
from infrakit.spi.order import member_order, natural
from infrakit.spi.types import Description

if TYPE_CHECKING:
    from infrakit.spi.calls import GroupAPI

GROUP_HEADERS = ["ID", "SIZE", "READY", "UP-TO-DATE", "AGE", "STATUS"]
GROUP_WIDE = ["MEMBERS", "REASON"]
MEMBER_HEADERS = ["ID", "LOGICAL", "HEALTH", "AGE", "CONFIG", "RESTARTS"]
MEMBER_WIDE = ["ADDRESS", "PORTS", "PID", "TAGS"]
EVENT_HEADERS = ["AGE", "MEMBER", "KIND", "REASON"]
EVENT_WIDE = ["TIME"]

Facts = Callable[[], tuple[dict[str, Description], str]]
"""The members as their instance plugin describes them, with properties, by ID; and, when
it cannot be asked, why (for ``-o wide``)."""


def print_groups(client: GroupAPI, plugin: str, fmt: str, quiet: bool) -> None:
    """``group ls``: a line per group, from one call."""
    try:
        found = client.summaries()
    except Unsupported:
        _print_ids_only(client, plugin, fmt, quiet)
        return
    if quiet:
        emit_ids([g.id for g in found], fmt)
        return
    wide, now = fmt == "wide", time.time()
    emit(found, fmt, GROUP_HEADERS + (GROUP_WIDE if wide else []),
         lambda: [_group_row(g, now, wide) for g in found])


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _group_row(g: GroupSummary, now: float, wide: bool) -> list[str]:
    created = g.created.timestamp() if g.created is not None else None
    row = [g.id, str(g.size), f"{_count(g.ready)}/{g.size}", _count(g.up_to_date),
           age(now - created if created is not None else None), g.status]
    return [*row, _count(g.members), g.reason or "-"] if wide else row


def _print_ids_only(client: GroupAPI, plugin: str, fmt: str, quiet: bool) -> None:
    """The IDs of a group plugin without ``Group.Summaries``, and why there is no more."""
    ids = [g.id for g in client.inspect_groups()]
    if quiet:
        emit_ids(ids, fmt)
        return
    why = (f"group plugin {plugin!r} does not serve Group.Summaries (the reference's group "
           "plugin has no such call): only the IDs are shown; 'infrakit group describe ID' "
           "shows a group's members")
    if fmt not in TABLES:
        click.echo(dump([{"ID": i} for i in ids], fmt))
        click.echo(f"note: {why}", err=True)
        return
    headers = GROUP_HEADERS + (GROUP_WIDE if fmt == "wide" else [])
    click.echo(table(headers, [[i] + [""] * (len(headers) - 1) for i in ids]))
    click.echo(f"note: {printable(why)}")


def print_members(client: GroupAPI, group_id: str, fmt: str, quiet: bool,
                  described: Facts) -> None:
    """``group describe ID``: the members, health first. JSON and YAML give the
    reference's answer (``Instances``, ``Converged``), as scripts written for it read it."""
    if fmt not in TABLES and not quiet:
        click.echo(dump(client.describe_group(group_id), fmt))
        return
    try:
        st = client.describe_status(group_id)
    except Unsupported:
        _print_described(client, group_id, fmt, quiet)
        return
    members = sorted(st.members, key=lambda m: member_order(m.health, m.id))
    if quiet:
        emit_ids([m.id for m in members], fmt)
        return
    member_table(members, fmt, described)
    click.echo(f"converged: {'yes' if st.converged else 'no'}, {len(members)} members")


def member_table(members: list[MemberStatus], fmt: str, described: Facts) -> None:
    """The members' table; with ``-o wide``, where each answers and its tags."""
    wide = fmt == "wide"
    found, why = described() if wide else ({}, "")
    rows = []
    for m in sorted(members, key=lambda m: member_order(m.health, m.id)):
        row = [m.id, m.logical_id or "-", m.health, age(m.age),
               "current" if m.current else "outdated", str(m.restarts)]
        if wide:
            desc = found.get(m.id)
            props = desc.properties if desc is not None else None
            row += [facts.address(props) or "-", facts.ports(props) or "-",
                    facts.pid(props) or "-", format_tags(desc.tags) if desc else "-"]
        rows.append(row)
    click.echo(table(MEMBER_HEADERS + (MEMBER_WIDE if wide else []), rows))
    if why:
        click.echo(f"note: {printable(why)}")


def _print_described(client: GroupAPI, group_id: str, fmt: str, quiet: bool) -> None:
    """The members as a group plugin without ``Group.DescribeStatus`` (the reference's)
    tells them: no health, age nor config."""
    desc = client.describe_group(group_id)
    members = sorted(desc.instances or [], key=lambda d: natural(d.id))
    if quiet:
        emit_ids([m.id for m in members], fmt)
        return
    wide = fmt == "wide"
    headers = ["ID", "LOGICAL", *(["TAGS"] if wide else [])]
    click.echo(table(headers, [[m.id, m.logical_id or "-",
                                *([format_tags(m.tags)] if wide else [])] for m in members]))
    click.echo(f"converged: {'yes' if desc.converged else 'no'}, {len(members)} members")
    click.echo("note: this group plugin does not serve Group.DescribeStatus: the members' "
               "health and age are not known")


def event_rows(events: list[GroupEvent], wide: bool) -> list[list[str]]:
    """Events as table rows: their age, and with ``wide`` their time (ISO 8601)."""
    now = time.time()
    return [[age(now - e.time), e.member or "-", e.kind,
             e.reason + _caused(e),
             *([iso(e.time) or ""] if wide else [])] for e in events]


def _caused(event: GroupEvent) -> str:
    """`` (commit by alice)``: the call behind an event and who made it, if anyone did."""
    said = " by ".join(part for part in (event.verb, event.actor) if part)
    return f" ({said})" if said else ""


def events_data(events: list[GroupEvent]) -> list[dict[str, object]]:
    """Events as JSON and YAML give them: their time as ISO 8601."""
    from infrakit.cli.output import to_data

    out = []
    for event, data in zip(events, to_data(events), strict=True):
        data["Time"] = iso(event.time)
        out.append(data)
    return out


def print_status_footer(st: GroupStatus) -> None:
    """What ``describe -v`` says under the members: the rolling update, the backoff, the
    breaker and the errors."""
    click.echo(f"\nconverged: {'yes' if st.converged else 'no'}; "
               f"{len(st.members)} of {st.target} members; {st.passes} passes")
    if st.outdated:
        if st.update_halted:
            state = (f" (halted: {printable(st.update_halted)}; commit a fixed spec, or "
                     "'infrakit group resume-update' tries again)")
        elif st.update_paused:
            state = " (paused: 'infrakit group resume-update' goes on)"
        else:
            state = ""
        click.echo(f"rolling update: {st.outdated} members still to replace{state}")
    if st.backoff:
        click.echo(f"backoff: {printable(st.backoff)}")
    if st.health_unknown:
        click.echo(f"health unknown: {printable(st.health_unknown)}")
    if st.destroying:
        click.echo(f"being destroyed: run 'infrakit group destroy {st.id}' again to finish")
    breaker = "OPEN: not replacing unhealthy members" if st.breaker_open else "closed"
    click.echo(f"unhealthy: {st.unhealthy} (breaker at more than {st.max_unhealthy}: "
               f"{breaker})")
    for err in st.errors:
        click.echo(f"error: {printable(err)}")
    if st.failures:
        click.echo(f"failing passes in a row: {st.failures} (backing off)")


def member_details(st: GroupStatus) -> None:
    """Why each member that is not healthy is not, and how the one before it ended."""
    lines = []
    for m in sorted(st.members, key=lambda m: member_order(m.health, m.id)):
        if m.reason:
            lines.append(printable(f"  {m.id}: {m.health}: {m.reason}"))
        if m.last_exit:
            lines.append(printable(f"  {m.id}: after {m.last_exit}"))
            lines += [f"      | {printable(line)}" for line in m.last_output or []]
    if lines:
        click.echo("\n".join(["", "members:", *lines]))


def no_facts(why: str) -> Facts:
    """A :data:`Facts` that has none, and says why."""
    return lambda: ({}, why)


def guarded(read: Facts) -> Facts:
    """``read``, with a plugin's refusal or silence as the reason there are no facts."""
    def run() -> tuple[dict[str, Description], str]:
        try:
            return read()
        except (PluginError, click.ClickException) as exc:
            text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            return {}, f"ADDRESS, PORTS, PID and TAGS are not shown: {text}"

    return run


def spec_row(spec: GroupSpec) -> list[str]:
    """A group's line; a stored spec that no longer parses still gets one, with ``-``."""
    from infrakit.plugins.group.spec import parse_group

    try:
        props = parse_group(spec)
    except PluginError:
        return [spec.id, "-", "-", "-"]
    ids = props.allocation.logical_ids
    size = f"LogicalIDs: {', '.join(ids)}" if ids else f"Size: {props.allocation.size}"
    return [spec.id, size, props.instance.plugin, props.flavor.plugin]
