"""``infrakit manager``: every group at once: commit a whole configuration, inspect it,
export it (for backup, or to move it to another manager)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from infrakit.cli.connect import plugin_client, remote_of, timeout_option
from infrakit.cli.group_tables import spec_row
from infrakit.cli.output import NL, TABLES, age, dump, emit, iso, output_option, printable, to_data
from infrakit.cli.setting_option import setting_option
from infrakit.cli.specfile import SpecFileError, read_document
from infrakit.cli.template import TemplateInput, template_options
from infrakit.manager.config import export_document, parse_configuration
from infrakit.manager.run import Settings, build_manager, current_leader
from infrakit.rpc.typed import GroupClient
from infrakit.settings import MANAGER
from infrakit.spi.errors import CallFailed, PluginError

F = TypeVar("F", bound=Callable[..., Any])


def _setting_options(command: F) -> F:
    """An option for each of the manager's settings, passed as the field it fills."""
    for field, setting in reversed(MANAGER.items()):
        command = setting_option(setting, field)(command)
    return command


@click.group("manager", params=[timeout_option()], invoke_without_command=True)
@click.option("--name", default="group", show_default=True,
              help="The name the manager serves under (or the one to talk to).")
@_setting_options
@click.option("--url", default="", envvar="INFRAKIT_MANAGER_URL", metavar="https://HOST:PORT/",
              help="With a command: talk to the manager listening there, with --token-file "
                   "and --tls-ca, instead of the local socket NAME.")
@click.pass_context
def command(ctx: click.Context, /, name: str, timeout: float, url: str, **fields: Any) -> None:
    """Without a command: run the manager in the foreground, serving Group as plugin NAME;
    its group controllers run only while it leads. With sqlite a second manager on this
    machine waits, serving nothing until it leads. With etcd every manager serves at once:
    a follower answers InspectGroups from etcd and forwards every other call to the leader.
    When the leader dies another takes over, resuming every group from the store. With a
    command: see who leads; commit, inspect and export the whole configuration, every
    group at once."""
    settings = Settings(**fields)
    ctx.obj = (name, timeout, remote_of(url, settings.token_file,
                                        settings.tls_ca or settings.tls_cert)
               if ctx.invoked_subcommand else None)
    ctx.meta["manager"] = settings
    if ctx.invoked_subcommand is None:
        from infrakit.cli.main import log_level
        from infrakit.rpc.logs import configure_logging
        from infrakit.rpc.paths import plugin_dir
        from infrakit.rpc.server import serve

        configure_logging(log_level())
        serve(name, directory=plugin_dir(), **build_manager(settings, name))


@command.command()
@output_option()
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """Who leads, for how long (AGE; -o wide, json and yaml give since when, as ISO
    8601), which store it uses, and the socket it serves on. Exits 1 when no manager
    leads, so that a script can wait for one."""
    import time

    leader = current_leader(ctx.meta["manager"])
    if leader is None:
        if output not in TABLES:
            click.echo(dump(None, output))
        raise click.ClickException("no manager leads (none is running)")
    data = {**to_data(leader), "Since": iso(leader.since)}
    wide = output == "wide"
    emit(data, output, ["LEADER", "HOST", "AGE", "STORE", "SERVES", *(["SINCE"] if wide else [])],
         lambda: [[str(leader.pid), leader.host, age(time.time() - leader.since), leader.store,
                   " ".join(filter(None, (leader.address, leader.url))) or "-",
                   *([iso(leader.since) or ""] if wide else [])]])


@command.command()
@click.argument("file", metavar="FILE|-")
@click.option("--pretend", is_flag=True, help="Say what the commit would do; change nothing.")
@click.option("--prune", is_flag=True,
              help="Destroy the groups that FILE does not name (with their members).")
@template_options
@click.pass_context
def commit(ctx: click.Context, file: str, pretend: bool, prune: bool,
           template: TemplateInput) -> None:
    """Commit every group of FILE (JSON or YAML, or a Jinja2 template of it: see `infrakit
    template --help`): {"Groups": {ID: spec, ...}}, as `export` writes and the reference
    InfraKit's manager keeps, or a list of group specs. Every group is validated before any
    is committed; groups missing from FILE are left alone unless --prune is given."""
    try:
        specs = parse_configuration(read_document(file, template))
    except PluginError as exc:
        raise SpecFileError(f"{file}: {exc}") from None
    with plugin_client(*ctx.obj) as (rpc, _):
        client = GroupClient(rpc)
        plans = {}
        for gid, spec in specs.items():  # every group validated before any is committed
            try:
                plans[gid] = client.commit_group(spec, True)
            except CallFailed as exc:
                raise click.ClickException(printable(f"{gid}: {exc.reason}; nothing was "
                                                     "committed")) from None
        missing = [s.id for s in client.inspect_groups() if s.id not in specs]
        for gid, spec in specs.items():
            plan = plans[gid] if pretend else client.commit_group(spec, False)
            click.echo(f"{printable(gid)}: {printable(plan, keep=NL)}")
        for gid in missing:
            shown = printable(gid)
            if not prune:
                click.echo(f"{shown}: left alone (not in {file}; --prune destroys it)")
            elif pretend:
                click.echo(f"{shown}: would be destroyed with its members (not in {file})")
            else:
                client.destroy_group(gid)
                click.echo(f"{shown}: destroyed with its members (not in {file})")


@command.command()
@output_option()
@click.pass_context
def inspect(ctx: click.Context, output: str) -> None:
    """Show every committed group: its size, its plugins."""
    with plugin_client(*ctx.obj) as (rpc, _):
        specs = GroupClient(rpc).inspect_groups()
    emit(export_document(specs), output, ["ID", "ALLOCATION", "INSTANCE", "FLAVOR"],
         lambda: [spec_row(s) for s in specs])


@command.command()
@click.argument("file", metavar="[FILE]", required=False)
@click.pass_context
def export(ctx: click.Context, file: str | None) -> None:
    """Write every committed group as one JSON document (to FILE, else standard output),
    which `infrakit manager commit` takes back."""
    with plugin_client(*ctx.obj) as (rpc, _):
        document = export_document(GroupClient(rpc).inspect_groups())
    text = json.dumps(document, indent=2) + "\n"
    if file is None:
        click.echo(text, nl=False)
        return
    from pathlib import Path

    from infrakit.atomicfile import write_atomic

    write_atomic(Path(file), text.encode(), mode=0o644)
    click.echo(f"exported {len(document['Groups'])} groups to {file}")


@command.group("token")
def token() -> None:
    """Mint, list and revoke the named tokens a manager's listener (--listen) accepts.

    \b
    Each token has a role:
      viewer    every read: describe, inspect, status, events, usage, metrics, logs
      operator  also commit, set-size, destroy-instances, pause/resume/cancel-update
      admin     also destroy and free groups (`manager commit --prune`)
    The file (YAML, mode 600) keeps each token's SHA-256, never the token. Start the
    manager with --token-file FILE; after a change send it SIGHUP (kill -HUP PID) to
    load the file again without a restart."""


_FILE = click.option("--file", "file", required=True, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="The tokens file (created, mode 600, if it does not exist).")


@token.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "operator", "admin"]),
              help="What the token's holder may do.")
@_FILE
def token_add(name: str, role: str, file: str) -> None:
    """Mint a token for NAME (the name its calls are recorded under in the groups'
    events) and print it, once: only its hash is kept. Give it to its holder, who puts
    it alone in a file of mode 600 and passes it as --token-file with --url."""
    from pathlib import Path

    from infrakit.manager import tokens_file
    from infrakit.spi.access import Role

    try:
        minted = tokens_file.add(Path(file), name, Role.named(role))
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(minted)
    click.echo(f"token for {name!r} ({role}) added to {file}; it is shown only this once. "
               "Send the manager SIGHUP to load it.", err=True)


@token.command("ls")
@_FILE
@output_option()
def token_ls(file: str, output: str) -> None:
    """List the names and roles in the tokens file (never the tokens)."""
    from pathlib import Path

    from infrakit.manager import tokens_file

    try:
        listed = [{"Name": e["name"], "Role": e["role"]}
                  for e in tokens_file.entries(Path(file))]
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    emit(listed, output, ["NAME", "ROLE"], lambda: [[printable(e["Name"]), e["Role"]]
                                                     for e in listed])


@token.command("rm")
@click.argument("name")
@_FILE
def token_rm(name: str, file: str) -> None:
    """Revoke NAME's token: the manager refuses it once it has reloaded the file
    (SIGHUP)."""
    from pathlib import Path

    from infrakit.manager import tokens_file

    try:
        tokens_file.remove(Path(file), name)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token {name!r} removed from {file}; send the manager SIGHUP to apply it")
