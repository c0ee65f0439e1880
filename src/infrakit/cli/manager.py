"""``infrakit manager``: every group at once: commit a whole configuration, inspect it,
export it (for backup, or to move it to another manager)."""

from __future__ import annotations

import json
from typing import Any

import click

from infrakit.cli.connect import plugin_client, remote_of, timeout_option
from infrakit.cli.output import dump, emit
from infrakit.cli.specfile import SpecFileError, read_document
from infrakit.manager.config import export_document, parse_configuration
from infrakit.manager.run import DEFAULT_LEASE_TTL, Settings, build_manager, current_leader
from infrakit.rpc.typed import GroupClient
from infrakit.spi.errors import CallFailed, PluginError
from infrakit.spi.group import GroupSpec


@click.group("manager", params=[timeout_option()], invoke_without_command=True)
@click.option("--name", default="group", show_default=True,
              help="The name the manager serves under (or the one to talk to).")
@click.option("--store", type=click.Choice(["sqlite", "etcd"]), default="sqlite",
              show_default=True, envvar="INFRAKIT_MANAGER_STORE",
              help="sqlite: one machine, specs in $INFRAKIT_HOME/manager, a lock file "
                   "elects the leader. etcd: specs in etcd, a lease elects the leader.")
@click.option("--etcd-endpoints", default="", envvar="INFRAKIT_ETCD_ENDPOINTS",
              metavar="URL,...", help="The etcd cluster, with --store etcd.")
@click.option("--etcd-prefix", default="/infrakit/", show_default=True,
              envvar="INFRAKIT_ETCD_PREFIX", help="Where in etcd these managers keep "
              "their state: one prefix per set of managers sharing a cluster.")
@click.option("--lease-ttl", type=click.IntRange(min=2), default=DEFAULT_LEASE_TTL,
              show_default=True, envvar="INFRAKIT_LEASE_TTL",
              help="Seconds a leader's etcd lease lives without renewal: a dead leader's "
                   "successor starts within this time.")
@click.option("--listen", default="", envvar="INFRAKIT_MANAGER_LISTEN", metavar="[HOST:]PORT",
              help="Also serve on TCP (HOST defaults to 127.0.0.1), for managers "
                   "on other machines to forward to: needs --tls-cert, --tls-key and "
                   "--token-file.")
@click.option("--tls-cert", default="", envvar="INFRAKIT_TLS_CERT", metavar="FILE",
              help="The listener's certificate (PEM).")
@click.option("--tls-key", default="", envvar="INFRAKIT_TLS_KEY", metavar="FILE",
              help="The certificate's private key (PEM).")
@click.option("--tls-ca", default="", envvar="INFRAKIT_TLS_CA", metavar="FILE",
              help="What to trust in another manager's certificate [default: --tls-cert].")
@click.option("--token-file", default="", envvar="INFRAKIT_MANAGER_TOKEN_FILE",
              metavar="FILE", help="The bearer token every TCP caller must send, in a file "
                                   "only its owner may read (mode 600).")
@click.option("--advertise", default="", envvar="INFRAKIT_MANAGER_ADVERTISE", metavar="HOST",
              help="The name other machines reach the listener by [default: the address "
                   "it binds, or this machine's name].")
@click.option("--url", default="", envvar="INFRAKIT_MANAGER_URL", metavar="https://HOST:PORT/",
              help="With a command: talk to the manager listening there, with --token-file "
                   "and --tls-ca, instead of the local socket NAME.")
@click.pass_context
def command(ctx: click.Context, name: str, timeout: float, store: str, etcd_endpoints: str,
            etcd_prefix: str, lease_ttl: int, listen: str, tls_cert: str, tls_key: str,
            tls_ca: str, token_file: str, advertise: str, url: str) -> None:
    """Without a command: run the manager in the foreground, serving Group as plugin NAME;
    its group controllers run only while it leads. With sqlite a second manager on this
    machine waits, serving nothing until it leads. With etcd every manager serves at once:
    a follower answers InspectGroups from etcd and forwards every other call to the leader.
    When the leader dies another takes over, resuming every group from the store. With a
    command: see who leads; commit, inspect and export the whole configuration, every
    group at once."""
    ctx.obj = (name, timeout, remote_of(url, token_file, tls_ca or tls_cert)
               if ctx.invoked_subcommand else None)
    settings = Settings(store=store, lease_ttl=lease_ttl, prefix=etcd_prefix,
                        endpoints=tuple(e for e in etcd_endpoints.split(",") if e),
                        listen=listen, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
                        token_file=token_file, advertise=advertise)
    ctx.meta["manager"] = settings
    if ctx.invoked_subcommand is None:
        from infrakit.cli.main import configure_logging, log_level
        from infrakit.rpc.paths import plugin_dir
        from infrakit.rpc.server import serve

        configure_logging(log_level())
        serve(name, directory=plugin_dir(), **build_manager(settings, name))


@command.command()
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True, help="How to print the result.")
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """Who leads, since when, which store it uses, and the socket it serves on."""
    import time

    leader = current_leader(ctx.meta["manager"])
    if leader is None:
        click.echo("no manager leads (none is running)" if output == "table"
                   else dump(None, output))
        return
    emit(leader, output, ["LEADER", "HOST", "SINCE", "STORE", "SERVES"], lambda: [[
        str(leader.pid), leader.host,
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(leader.since)), leader.store,
        " ".join(filter(None, (leader.address, leader.url))) or "-"]])


@command.command()
@click.argument("file", metavar="FILE|-")
@click.option("--pretend", is_flag=True, help="Say what the commit would do; change nothing.")
@click.option("--prune", is_flag=True,
              help="Destroy the groups that FILE does not name (with their members).")
@click.pass_context
def commit(ctx: click.Context, file: str, pretend: bool, prune: bool) -> None:
    """Commit every group of FILE (JSON or YAML): {"Groups": {ID: spec, ...}}, as `export`
    writes and the reference InfraKit's manager keeps, or a list of group specs. Every group
    is validated before any is committed; groups missing from FILE are left alone unless
    --prune is given."""
    try:
        specs = parse_configuration(read_document(file))
    except PluginError as exc:
        raise SpecFileError(f"{file}: {exc}") from None
    with plugin_client(*ctx.obj) as (rpc, _):
        client = GroupClient(rpc)
        plans = {}
        for gid, spec in specs.items():  # every group validated before any is committed
            try:
                plans[gid] = client.commit_group(spec, True)
            except CallFailed as exc:
                raise click.ClickException(f"{gid}: {exc.reason}; nothing was committed"
                                           ) from None
        missing = [s.id for s in client.inspect_groups() if s.id not in specs]
        for gid, spec in specs.items():
            click.echo(f"{gid}: {plans[gid] if pretend else client.commit_group(spec, False)}")
        for gid in missing:
            if not prune:
                click.echo(f"{gid}: left alone (not in {file}; --prune destroys it)")
            elif pretend:
                click.echo(f"{gid}: would be destroyed with its members (not in {file})")
            else:
                client.destroy_group(gid)
                click.echo(f"{gid}: destroyed with its members (not in {file})")


@command.command()
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True, help="How to print the result.")
@click.pass_context
def inspect(ctx: click.Context, output: str) -> None:
    """Show every committed group: its size, its plugins."""
    with plugin_client(*ctx.obj) as (rpc, _):
        specs = GroupClient(rpc).inspect_groups()
    emit(export_document(specs), output, ["ID", "ALLOCATION", "INSTANCE", "FLAVOR"],
         lambda: [_row(s) for s in specs])


def _row(spec: GroupSpec) -> list[str]:
    props: dict[str, Any] = spec.properties if isinstance(spec.properties, dict) else {}
    alloc = props.get("Allocation") or {}
    ids = alloc.get("LogicalIDs")
    size = f"LogicalIDs: {', '.join(ids)}" if ids else f"Size: {alloc.get('Size', 0)}"
    plugins = [str((props.get(block) or {}).get("Plugin", "-")) for block in ("Instance", "Flavor")]
    return [spec.id, size, *plugins]


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
