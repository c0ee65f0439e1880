"""``infrakit instance``: drive any Instance/0.5.0 plugin by hand."""

from __future__ import annotations

import json
import sys

import click

from infrakit.cli.connect import plugin_client, timeout_option
from infrakit.cli.output import (
    emit,
    emit_ids,
    format_tags,
    output_option,
    printable,
    readable,
)
from infrakit.cli.specfile import parse_pairs, read_as, read_document
from infrakit.rpc.typed import InstanceClient
from infrakit.spi import facts
from infrakit.spi.order import natural
from infrakit.spi.types import Description, Spec


@click.group("instance", params=[timeout_option()])
@click.option("--name", required=True, help="The instance plugin, as NAME or NAME/TYPE.")
@click.pass_context
def command(ctx: click.Context, name: str, timeout: float) -> None:
    """Validate, provision, describe, label and destroy instances through a plugin, and
    read their logs."""
    ctx.obj = (name, timeout)


def _client(ctx: click.Context) -> tuple[str, float]:
    name, timeout = ctx.obj
    return name, timeout


@command.command()
@click.argument("file", metavar="FILE|-")
@click.pass_context
def validate(ctx: click.Context, file: str) -> None:
    """Check instance properties (JSON or YAML) with the plugin."""
    properties = read_document(file)
    name, timeout = _client(ctx)
    with plugin_client(name, timeout) as (rpc, type_name):
        InstanceClient(rpc, type_name).validate(properties)
    click.echo("valid")


@command.command()
@click.argument("file", metavar="FILE|-")
@click.pass_context
def provision(ctx: click.Context, file: str) -> None:
    """Provision one instance from a Spec (Properties, Tags, Init, LogicalID,
    Attachments) and print its ID."""
    spec = read_as(file, Spec, "instance Spec")
    name, timeout = _client(ctx)
    with plugin_client(name, timeout) as (rpc, type_name):
        click.echo(printable(InstanceClient(rpc, type_name).provision(spec)))


@command.command()
@click.option("--tags", "tags", multiple=True, metavar="K=V",
              help="Only instances with this tag; repeat to require several.")
@click.option("--properties", is_flag=True, help="Also show each instance's properties (in "
              "the table, times in them as ISO 8601).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the IDs (a list with -o json "
              "or yaml).")
@output_option()
@click.pass_context
def describe(ctx: click.Context, tags: tuple[str, ...], properties: bool, quiet: bool,
             output: str) -> None:
    """List the instances that carry every given tag. -o wide adds ADDRESS, PORTS and PID
    where the plugin's properties name them (Address, Ports, PID: see the README's "What
    a plugin's properties may say")."""
    wanted = parse_pairs(tags, "--tags")
    wide = output == "wide"
    name, timeout = _client(ctx)
    with plugin_client(name, timeout) as (rpc, type_name):
        found = InstanceClient(rpc, type_name).describe_instances(wanted, properties or wide)
    found.sort(key=lambda d: natural(d.id))
    if quiet:
        emit_ids([d.id for d in found], output)
        return
    headers = ["ID", "LOGICAL", "TAGS", *(["ADDRESS", "PORTS", "PID"] if wide else []),
               *(["PROPERTIES"] if properties else [])]
    emit(found, output, headers, lambda: [_row(d, wide, properties) for d in found])


def _row(d: Description, wide: bool, properties: bool) -> list[str]:
    row = [d.id, d.logical_id or "-", format_tags(d.tags)]
    if wide:
        row += [facts.address(d.properties) or "-", facts.ports(d.properties) or "-",
                facts.pid(d.properties) or "-"]
    if properties:
        row.append(json.dumps(readable(d.properties), separators=(",", ":")))
    return row


@command.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def destroy(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Destroy instances; goes on past one that fails and reports every failure."""
    from infrakit.spi.errors import CallFailed

    name, timeout = _client(ctx)
    failed = []
    with plugin_client(name, timeout) as (rpc, type_name):
        client = InstanceClient(rpc, type_name)
        for iid in ids:
            try:
                client.destroy(iid)
            except CallFailed as exc:
                failed.append(printable(f"{iid}: {exc.reason}"))
            else:
                click.echo(printable(f"destroyed {iid}"))
    if failed:
        raise click.ClickException("could not destroy:\n  " + "\n  ".join(failed))


@command.command()
@click.argument("instance", metavar="ID")
@click.argument("labels", nargs=-1, required=True, metavar="K=V...")
@click.pass_context
def label(ctx: click.Context, instance: str, labels: tuple[str, ...]) -> None:
    """Merge labels into an instance's tags."""
    pairs = parse_pairs(labels, "K=V")
    name, timeout = _client(ctx)
    with plugin_client(name, timeout) as (rpc, type_name):
        InstanceClient(rpc, type_name).label(instance, pairs)
    click.echo(f"labelled {instance}")


FOLLOW_POLL = 0.5
"""Seconds between two calls of ``logs -f`` that found nothing new."""


@command.command()
@click.argument("instance", metavar="ID")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing what comes until the instance ends (or Ctrl-C).")
@click.option("--previous", is_flag=True,
              help="Only an instance that has ended or was destroyed: what it left, while "
                   "its plugin keeps it (refused for one that runs). instance-process keeps "
                   "the last $INFRAKIT_KEEP_ENDED (5) of each group.")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="Start N lines before the end (default: all, at most the last 1 MiB).")
@click.pass_context
def logs(ctx: click.Context, instance: str, follow: bool, previous: bool,
         tail: int | None) -> None:
    """Print an instance's output, as its plugin keeps it (Instance.Logs, served by
    instance-process and instance-docker)."""
    import time

    from infrakit.spi.errors import CallFailed, Unsupported

    name, timeout = _client(ctx)
    offset = ""
    with plugin_client(name, timeout) as (rpc, type_name):
        client = InstanceClient(rpc, type_name)
        try:
            while True:
                try:
                    chunk = client.logs(instance, offset, tail, previous)
                except Unsupported:
                    raise click.ClickException(f"Instance plugin {name!r} has no logs (it "
                                               "does not serve Instance.Logs)") from None
                except CallFailed as exc:
                    raise click.ClickException(f"Instance plugin {name!r}: logs of "
                                               f"{instance}: {exc.reason}") from None
                click.echo(chunk.data, nl=False)
                sys.stdout.flush()
                offset = chunk.offset
                if not follow or chunk.ended:
                    return
                if not chunk.data:
                    time.sleep(FOLLOW_POLL)
        except KeyboardInterrupt:  # the usual end of -f: no "aborted"
            raise SystemExit(130) from None
