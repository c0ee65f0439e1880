"""``infrakit group``: commit, inspect, describe, resize, free and destroy groups."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from infrakit.cli.connect import plugin_client, remote_of, remote_options, timeout_option
from infrakit.cli.output import (
    NL,
    TABLES,
    age,
    dump,
    output_option,
    printable,
    quiet_option,
    table,
)
from infrakit.cli.specfile import located, read_as
from infrakit.cli.template import TemplateInput, is_template, template_options
from infrakit.rpc.typed import GroupClient
from infrakit.spi.errors import CallFailed, PluginError
from infrakit.spi.group import EVENT_TYPE, GroupEvent, GroupSpec

if TYPE_CHECKING:
    from infrakit.cli.group_tables import Facts
    from infrakit.spi.calls import GroupAPI
    from infrakit.spi.types import Description


@click.group("group", params=[timeout_option(calls_plugins=True), *remote_options()])
@click.option("--name", default="group", show_default=True,
              help="The group plugin (or manager) to talk to.")
@click.pass_context
def command(ctx: click.Context, name: str, timeout: float, url: str, token_file: str,
            tls_ca: str) -> None:
    """Declare groups and watch them converge."""
    ctx.obj = (name, timeout, remote_of(url, token_file, tls_ca))


@command.command()
@click.argument("file", metavar="FILE|-")
@click.option("--pretend", is_flag=True, help="Say what the commit would do; change nothing.")
@click.option("--wait", is_flag=True, help="Show progress until the group converges.")
@click.option("--wait-timeout", type=click.FloatRange(min=0.1), default=600.0,
              show_default=True, help="With --wait: seconds to wait before giving up "
              "(with exit status 3).")
@template_options
@click.pass_context
def commit(ctx: click.Context, file: str, pretend: bool, wait: bool,
           wait_timeout: float, template: TemplateInput) -> None:
    """Commit a group spec ({"ID": ..., "Properties": {...}}, JSON or YAML, or a Jinja2
    template of one: see `infrakit template --help`). Its fields, types and defaults:
    `infrakit explain group -r`, and docs/spec.md."""
    spec = read_as(file, GroupSpec, "group spec", template)
    with plugin_client(*ctx.obj) as (rpc, _):
        try:
            details = GroupClient(rpc).commit_group(spec, pretend)
        except CallFailed as exc:  # said where in the file the field it names is
            if is_template(file, template):  # its lines are not the rendered document's
                raise click.ClickException(str(exc)) from None
            raise click.ClickException(located(file, exc.reason).replace(
                exc.reason, str(exc), 1)) from None
        # the reference's words, which scripts compare
        gid, said = printable(spec.id), printable(details, keep=NL)  # its own lines
        click.echo(f"Committing {gid} would involve: {said}" if pretend
                   else f"Committed {gid}: {said}")
        if wait and not pretend:
            _wait_converged(GroupClient(rpc), spec.id, wait_timeout)


def _wait_converged(client: GroupAPI, group_id: str, timeout: float) -> None:
    """Poll the group's status and show ready/desired members, work in flight and errors,
    on one line redrawn in place on a terminal, or a line per change otherwise."""
    import sys
    import time

    tty = sys.stdout.isatty()
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        st = client.describe_status(group_id)
        ready = sum(m.health == "healthy" and m.current for m in st.members)
        line = printable(f"{ready}/{st.target} ready, {len(st.in_flight)} in flight"
                + (f", {st.outdated} to update" if st.outdated else "")
                + (" (update paused)" if st.update_paused and st.outdated else "")
                + (f" (update halted: {st.update_halted})" if st.update_halted else "")
                + (", breaker OPEN" if st.breaker_open else "")
                + (f", backoff: {st.backoff}" if st.backoff else "")
                + (f", health unknown: {st.health_unknown}" if st.health_unknown else "")
                # a backoff quotes the failure it waits after: the error would repeat it
                + (f", error: {st.errors[-1]}" if st.errors and not st.backoff else ""))
        if line != last:
            click.echo(f"\r\033[K{line}" if tty else line, nl=not tty)
            last = line
        if st.converged:
            if tty:
                click.echo()
            click.echo(f"converged: {len(st.members)} members")
            return
        if st.update_halted:  # it will not converge without an operator
            if tty:
                click.echo()
            raise click.ClickException(f"group {group_id!r}: the rolling update halted: "
                                       f"{printable(st.update_halted)}")
        if time.monotonic() >= deadline:
            if tty:
                click.echo()
            from infrakit.cli.exits import WaitTimeout

            raise WaitTimeout(f"group {group_id!r} did not converge within {timeout:g}s: {line}")
        time.sleep(0.25)


def refresh_option() -> click.Option:
    return click.Option(["--refresh"], type=click.FloatRange(min=0.1), default=5.0,
                        show_default=True, metavar="SECONDS",
                        help="With -w: also redraw this often, for what changes without an "
                             "event (ages, health).")


def _watch(ctx: click.Context, topic: str, title: str, draw: Callable[[GroupAPI], None],
           refresh: float) -> None:
    """Draw, then redraw as the plugin's events say it changed (see :mod:`.watch`)."""
    from infrakit.cli.watch import watch

    with plugin_client(*ctx.obj) as (rpc, _):
        watch(rpc, topic, title, lambda: draw(GroupClient(rpc)), refresh)


@command.command("ls", params=[refresh_option()])
@quiet_option("Print only the IDs.")
@output_option()
@click.option("-w", "--watch", "watching", is_flag=True,
              help="Redraw as the plugin's event stream says groups changed, until Ctrl-C: "
                   "in place on a terminal, else each view that differs is printed.")
@click.pass_context
def ls(ctx: click.Context, quiet: bool, output: str, watching: bool, refresh: float) -> None:
    """List the groups being watched, one line each, from one call to the plugin.

    \b
    SIZE        members the committed spec asks for
    READY       healthy members / SIZE
    UP-TO-DATE  members on the committed config
    AGE         since the group was first committed
    STATUS      the first that holds, in this order: destroying, update halted, failing,
                breaker open, backing off, paused, updating, converging, converged
    -o wide adds MEMBERS (those not being destroyed) and REASON (why the STATUS).
    """
    from infrakit.cli.group_tables import print_groups

    def draw(client: GroupAPI) -> None:
        print_groups(client, ctx.obj[0], output, quiet)

    if watching:
        _watch(ctx, f"{EVENT_TYPE}/", "infrakit group ls", draw, refresh)
        return
    with plugin_client(*ctx.obj) as (rpc, _):
        draw(GroupClient(rpc))


@command.command()
@click.argument("group_id", metavar="ID")
@output_option(default="yaml")
@click.pass_context
def inspect(ctx: click.Context, group_id: str, output: str) -> None:
    """Show a group's spec as committed (YAML unless told: -o table and -o wide give a
    line of its size and plugins)."""
    spec = _find(ctx, group_id)
    if output in TABLES:
        from infrakit.cli.group_tables import spec_row

        headers = ["ID", "ALLOCATION", "INSTANCE", "FLAVOR"]
        click.echo(table(headers, [spec_row(spec)]))
        return
    click.echo(dump(spec, output))


@command.command(params=[refresh_option()])
@click.argument("group_id", metavar="ID")
@click.option("-q", "--quiet", is_flag=True, help="Print only the member IDs (a list with "
              "-o json or yaml).")
@click.option("-v", "--verbose", is_flag=True, help="Also show why members are not healthy, "
              "operations in flight, the rolling update, errors, the circuit breaker and "
              "the last events.")
@output_option()
@click.option("-w", "--watch", "watching", is_flag=True,
              help="Redraw as the group's events say it changed, until Ctrl-C: in place on "
                   "a terminal, else each view that differs is printed.")
@click.pass_context
def describe(ctx: click.Context, group_id: str, quiet: bool, verbose: bool,
             output: str, watching: bool, refresh: float) -> None:
    """Show a group's members and whether it has converged.

    Members are listed with those that need a look first: unhealthy, then starting or
    of unknown health, then healthy; by ID within each (proc-2 before proc-10). -o wide
    adds ADDRESS, PORTS and PID, where the instance plugin describes them (read from it
    directly), and the TAGS. -o json gives the reference's answer (Instances, Converged);
    -v -o json everything the group plugin knows.
    """
    from infrakit.cli.group_tables import print_members

    described = _described(ctx, group_id)

    def draw(client: GroupAPI) -> None:
        if verbose and not quiet:
            _describe_status(client, group_id, output, described)
        else:
            print_members(client, group_id, output, quiet, described)

    if watching:
        title = f"infrakit group describe {group_id}{' -v' if verbose else ''}"
        _watch(ctx, f"{EVENT_TYPE}/{group_id}/", title, draw, refresh)
        return
    with plugin_client(*ctx.obj) as (rpc, _):
        draw(GroupClient(rpc))


def _described(ctx: click.Context, group_id: str) -> Facts:
    """The group's members as its instance plugin describes them, with their properties,
    for ``-o wide``: asked of that plugin's socket on this machine."""
    from infrakit.cli.group_tables import guarded, no_facts

    _, timeout, remote = ctx.obj
    if remote is not None:
        return no_facts("ADDRESS, PORTS, PID and TAGS are read from the instance plugin's "
                        "socket on this machine, which --url does not reach")

    def read() -> tuple[dict[str, Description], str]:
        from infrakit.rpc.typed import InstanceClient
        from infrakit.spi.instance import GROUP_TAG

        spec = _find(ctx, group_id)
        block = (spec.properties or {}).get("Instance") if isinstance(spec.properties,
                                                                       dict) else None
        plugin = block.get("Plugin") if isinstance(block, dict) else None
        if not isinstance(plugin, str) or not plugin:
            return {}, "the group's spec names no instance plugin (Instance.Plugin)"
        with plugin_client(plugin, timeout) as (rpc, type_name):
            found = InstanceClient(rpc, type_name).describe_instances({GROUP_TAG: group_id},
                                                                      True)
        return {d.id: d for d in found}, ""

    return guarded(read)


def _describe_status(client: GroupAPI, group_id: str, output: str, described: Facts) -> None:
    from infrakit.cli.group_tables import (
        event_rows,
        member_details,
        member_table,
        print_status_footer,
    )

    st = client.describe_status(group_id)
    if output not in TABLES:
        click.echo(dump(st, output))
        return
    recent: list[GroupEvent] = []
    with contextlib.suppress(PluginError):  # a plugin that keeps no events
        recent = client.events(group_id, None, None, 5)
    member_table(st.members, output, described)
    member_details(st)
    if st.in_flight:
        click.echo("\nin flight:")
        click.echo(table(["OP", "INSTANCE", "LOGICAL", "AGE", "EXPIRES IN"], [
            [o.op, o.instance or "(pending)", o.logical_id or "-", age(o.age),
             age(o.expires_in)] for o in st.in_flight]))
    print_status_footer(st)
    if recent:
        from infrakit.cli.group_tables import EVENT_HEADERS, EVENT_WIDE

        click.echo("\nlast events:")
        click.echo(table(EVENT_HEADERS + EVENT_WIDE, event_rows(recent, wide=True)))


FOLLOW_EVERY = 0.5
"""Seconds between two polls of ``group events --follow`` while it has no event stream
(it follows the stream, and asks for the events since the last it printed)."""


def parse_since(text: str, now: float) -> float:
    """``10m``, ``30s``, ``2h``, ``1d`` ago, or an ISO time (local, unless it says)."""
    import datetime

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a duration (10m, 30s, 2h, 1d) or an ISO "
                                 "time (2026-11-29T18:00:00)", param_hint="--since") from None


@command.command()
@click.argument("group_id", metavar="ID")
@click.option("--since", help="Only events since then: 10m, 2h, 1d ago, or an ISO time.")
@click.option("-f", "--follow", is_flag=True, help="Print new events as they happen, until "
              "Ctrl-C (told by the plugin's event stream; polled every 0.5s without one).")
@output_option()
@click.pass_context
def events(ctx: click.Context, group_id: str, since: str | None, follow: bool,
           output: str) -> None:
    """Show what happened to a group: members provisioned, destroyed and died, and why.

    The table gives each event's age; -o wide adds its time, and -o json or yaml give
    the time as ISO 8601 (UTC)."""
    import time

    start = parse_since(since, time.time()) if since else None
    with plugin_client(*ctx.obj) as (rpc, _):
        client = GroupClient(rpc)
        found = client.events(group_id, start, None, 0)
        _print_events(found, output, header=True)
        last = found[-1].seq if found else 0

        def more(said: str) -> None:
            nonlocal last
            if said:
                click.echo(said, err=True)
            found = client.events(group_id, start, last, 0)
            if found:
                _print_events(found, output, header=False)
                last = found[-1].seq

        if follow:
            from infrakit.cli.watch import REFRESH
            from infrakit.cli.watch import follow as following

            following(rpc, f"{EVENT_TYPE}/{group_id}/", more, REFRESH, FOLLOW_EVERY)


def _print_events(found: list[GroupEvent], output: str, header: bool) -> None:
    from infrakit.cli.group_tables import EVENT_HEADERS, EVENT_WIDE, event_rows, events_data

    if output not in TABLES:
        click.echo(dump(events_data(found), output))
    elif found or header:
        wide = output == "wide"
        click.echo(table(EVENT_HEADERS + (EVENT_WIDE if wide else []),
                         event_rows(found, wide), header=header))


@command.command(epilog="""\b
Example: a price table, prices.yml (the first price that matches counts):
  currency: USD
  prices:
    - plugin: instance-aws
      properties: {InstanceType: m5.large}
      per_hour: 0.096
    - plugin: instance-aws
      per_hour: 0.05
    - plugin: instance-process
      config: 6drwciyinzycumf3x2pkfcc6wzmg2wna
      per_hour: 0.01

\b
  infrakit group usage --since 2026-11-01 --prices prices.yml
  infrakit group usage web --since 7d -o json""")
@click.argument("group_id", metavar="[ID]", required=False, default="")
@click.option("--since", metavar="DATE", help="Only the UTC days from the one holding DATE: "
              "an ISO date or time (2026-11-01), or 10m, 2h, 7d ago. Default: every day kept "
              "(400).")
@click.option("--prices", "prices_file", metavar="FILE", help="A price table (YAML or JSON): "
              "adds each line's cost and the total cost.")
@output_option()
@click.pass_context
def usage(ctx: click.Context, group_id: str, since: str | None, prices_file: str | None,
          output: str) -> None:
    """Show member-hours per group and config hash, and what they cost.

    A member counts from when the group plugin first sees it to the last pass that sees
    it; the time the group plugin (or the manager) is down is not counted. Usage is kept
    by the UTC day for 400 days, destroyed groups' included, and all groups are shown
    when no ID is given. Each line is priced by the first entry of the price table that
    matches its instance plugin (and, if the entry says, its config hash or instance
    properties).
    """
    import time

    from infrakit.cli.prices import read_prices
    from infrakit.cli.usage import print_report, report
    from infrakit.plugins.group.storage import day_name, day_of
    from infrakit.spi.errors import Unsupported

    prices = read_prices(prices_file) if prices_file else None  # before any call
    start = parse_since(since, time.time()) if since else None
    name = ctx.obj[0]
    with plugin_client(*ctx.obj) as (rpc, _):
        try:
            records = GroupClient(rpc).usage(group_id, start)
        except Unsupported:
            raise click.ClickException(f"Group plugin {name!r} keeps no usage (it does not "
                                       "serve Group.Usage)") from None
    since_day = day_name(day_of(start)) if start is not None else None
    print_report(report(records, prices, since_day), output, prices_file)


@command.command("set-size")
@click.argument("group_id", metavar="ID")
@click.argument("size", type=click.IntRange(min=1))
@click.pass_context
def set_size(ctx: click.Context, group_id: str, size: int) -> None:
    """Change a size group's Allocation.Size and commit it."""
    from infrakit.plugins.group.spec import resized

    spec = resized(_find(ctx, group_id), size)
    with plugin_client(*ctx.obj) as (rpc, _):
        click.echo(printable(GroupClient(rpc).commit_group(spec, False), keep=NL))


@command.command()
@click.argument("group_id", metavar="ID")
@click.pass_context
def free(ctx: click.Context, group_id: str) -> None:
    """Stop managing a group; its members are left as they are."""
    with plugin_client(*ctx.obj) as (rpc, _):
        GroupClient(rpc).free_group(group_id)
    click.echo(f"Freed {group_id}")  # the reference's words


@command.command()
@click.argument("group_id", metavar="ID")
@click.pass_context
def destroy(ctx: click.Context, group_id: str) -> None:
    """Stop managing a group and destroy every member."""
    with plugin_client(*ctx.obj) as (rpc, _):
        GroupClient(rpc).destroy_group(group_id)
    click.echo(f"destroyed {group_id}")


@command.command("destroy-instances")
@click.argument("group_id", metavar="ID")
@click.argument("instances", nargs=-1, required=True, metavar="INSTANCE...")
@click.option("--shrink/--replace", default=False, show_default=True,
              help="Lower the group's size by their number, or let the group replace them.")
@click.pass_context
def destroy_instances(ctx: click.Context, group_id: str, instances: tuple[str, ...],
                      shrink: bool) -> None:
    """Destroy chosen members of a group."""
    with plugin_client(*ctx.obj) as (rpc, _):
        click.echo(printable(GroupClient(rpc).destroy_instances(group_id, list(instances),
                                                                shrink)))


def _update_verb(name: str, method: str, summary: str) -> None:
    """Define ``group NAME ID``, which calls ``GroupClient.METHOD(ID)`` and prints what it
    answers."""

    @command.command(name, help=summary)
    @click.argument("group_id", metavar="ID")
    @click.pass_context
    def verb(ctx: click.Context, group_id: str) -> None:
        with plugin_client(*ctx.obj) as (rpc, _):
            click.echo(printable(getattr(GroupClient(rpc), method)(group_id), keep=NL))


for _name, _method, _summary in (
    ("pause-update", "pause_update",
     "Pause a group's rolling update; healing and scaling go on. Survives restarts."),
    ("resume-update", "resume_update", "Resume a paused rolling update."),
    ("cancel-update", "cancel_update",
     "Cancel a rolling update by committing the previous spec again (members already "
     "updated are rolled back the same way)."),
):
    _update_verb(_name, _method, _summary)


def _find(ctx: click.Context, group_id: str) -> GroupSpec:
    with plugin_client(*ctx.obj) as (rpc, _):
        groups = GroupClient(rpc).inspect_groups()
    for spec in groups:
        if spec.id == group_id:
            return spec
    known = ", ".join(printable(g.id) for g in groups) or "none"
    raise click.ClickException(f"Group '{group_id}' is not being watched (groups: {known})")
