"""``infrakit flavor``: drive any Flavor/0.1.0 plugin by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from infrakit.cli.connect import plugin_client, timeout_option
from infrakit.cli.output import emit, format_tags, output_option
from infrakit.cli.specfile import parse_pairs, read_as, read_document
from infrakit.rpc.typed import FlavorClient
from infrakit.spi.types import Allocation, Description, Index, Spec

F = TypeVar("F", bound=Callable[..., Any])


@click.group("flavor", params=[timeout_option()])
@click.option("--name", required=True, help="The flavor plugin, as NAME or NAME/TYPE.")
@click.pass_context
def command(ctx: click.Context, name: str, timeout: float) -> None:
    """Validate and prepare specs, and judge or drain instances, through a flavor plugin."""
    ctx.obj = (name, timeout)


def allocation_options(fn: F) -> F:
    fn = click.option("--logical-ids", metavar="ID,ID,...",
                      help="A quorum allocation: these logical IDs (instead of --size).")(fn)
    return click.option("--size", type=click.IntRange(min=0), default=None,
                        help="A size allocation of this many instances.")(fn)


def _allocation(size: int | None, logical_ids: str | None) -> Allocation:
    if size is not None and logical_ids:
        raise click.UsageError("give --size or --logical-ids, not both")
    if logical_ids:
        return Allocation(logical_ids=[i for i in logical_ids.split(",") if i])
    return Allocation(size=1 if size is None else size)


def instance_options(fn: F) -> F:
    fn = click.option("--tags", multiple=True, metavar="K=V", help="The instance's tags.")(fn)
    fn = click.option("--logical-id", default=None, help="The instance's logical ID.")(fn)
    return click.option("--id", "instance_id", required=True, help="The instance's ID.")(fn)


def _description(instance_id: str, logical_id: str | None, tags: tuple[str, ...]) -> Description:
    return Description(id=instance_id, logical_id=logical_id, tags=parse_pairs(tags, "--tags"))


@command.command()
@click.argument("file", metavar="FILE|-")
@allocation_options
@click.pass_context
def validate(ctx: click.Context, file: str, size: int | None, logical_ids: str | None) -> None:
    """Check flavor properties (JSON or YAML) for an allocation."""
    properties = read_document(file)
    with plugin_client(*ctx.obj) as (rpc, type_name):
        FlavorClient(rpc, type_name).validate(properties, _allocation(size, logical_ids))
    click.echo("valid")


@command.command()
@click.argument("file", metavar="PROPERTIES")
@click.argument("spec_file", metavar="SPEC")
@allocation_options
@click.option("--group", default="", help="The group the instance is for (Index.Group).")
@click.option("--sequence", type=click.IntRange(min=0), default=0,
              help="The instance's sequence number in its group (Index.Sequence).")
@output_option(default="json")
@click.pass_context
def prepare(ctx: click.Context, file: str, spec_file: str, size: int | None,
            logical_ids: str | None, group: str, sequence: int, output: str) -> None:
    """Show the instance Spec the flavor makes of SPEC (files, JSON or YAML): JSON unless
    told (-o table gives it in a line, -o wide with its properties)."""
    properties = read_document(file)
    spec = read_as(spec_file, Spec, "instance Spec")
    with plugin_client(*ctx.obj) as (rpc, type_name):
        out = FlavorClient(rpc, type_name).prepare(
            properties, spec, _allocation(size, logical_ids), Index(group=group, sequence=sequence))
    emit(out, output, ["LOGICAL", "TAGS", "ATTACHMENTS", "INIT",
                       *(["PROPERTIES"] if output == "wide" else [])],
         lambda: [_spec_row(out, output == "wide")])


def _spec_row(spec: Spec, wide: bool) -> list[str]:
    """A prepared spec in a line: its Init's lines joined by ``\\n`` (-o yaml shows them
    as lines), and with ``wide`` its properties."""
    import json

    attached = ",".join(f"{a.id}:{a.type}" for a in spec.attachments or [])
    row = [spec.logical_id or "-", format_tags(spec.tags) or "-", attached or "-",
           spec.init or "-"]
    return [*row, json.dumps(spec.properties, separators=(",", ":"))] if wide else row


@command.command()
@click.argument("file", metavar="PROPERTIES")
@instance_options
@output_option()
@click.pass_context
def healthy(ctx: click.Context, file: str, instance_id: str, logical_id: str | None,
            tags: tuple[str, ...], output: str) -> None:
    """Ask the flavor whether an instance is healthy."""
    properties = read_document(file)
    inst = _description(instance_id, logical_id, tags)
    with plugin_client(*ctx.obj) as (rpc, type_name):
        health = FlavorClient(rpc, type_name).healthy(properties, inst)
    emit({"ID": instance_id, "Health": int(health), "State": health.name.lower()}, output,
         ["ID", "HEALTH", "TAGS"],
         lambda: [[instance_id, health.name.lower(), format_tags(inst.tags)]])


@command.command()
@click.argument("file", metavar="PROPERTIES")
@instance_options
@click.pass_context
def drain(ctx: click.Context, file: str, instance_id: str, logical_id: str | None,
          tags: tuple[str, ...]) -> None:
    """Ask the flavor to drain an instance before it is destroyed."""
    properties = read_document(file)
    with plugin_client(*ctx.obj) as (rpc, type_name):
        FlavorClient(rpc, type_name).drain(properties, _description(instance_id, logical_id,
                                                                    tags))
    click.echo(f"drained {instance_id}")
