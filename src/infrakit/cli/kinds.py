"""The plugin kinds ``infrakit plugin start`` knows, and how to build each.

It sits in the CLI layer because a kind may be built of any layer below: the manager
builds on the store and the group plugin. Factories import their implementation lazily so
that listing kinds costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infrakit.rpc.paths import infrakit_home
from infrakit.settings import GROUP_POLL, KEEP_ENDED, KEEP_ENDED_SECONDS, MANAGER, METRICS_LISTEN


@dataclass(frozen=True)
class Kind:
    """A built-in plugin kind: a summary, a factory of serve() kwargs, the name it is
    served under unless told (the kind's own name, by default), whether its process
    may need TLS from its event loop (one that does not runs without OpenSSL loaded), and
    the pip extra its libraries come in (none: the base package has them)."""

    summary: str
    build: Callable[[str], dict[str, Any]]
    default_name: str = ""
    tls: bool = True
    extra: str = ""


def _file(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.file import FileInstancePlugin

    return {"instance": FileInstancePlugin(infrakit_home() / "instance-file" / name)}


def _process(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.process import ProcessInstancePlugin

    return {"instance": ProcessInstancePlugin(infrakit_home() / "instance-process" / name,
                                              name)}


def _qemu(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.qemu import QemuInstancePlugin

    return {"instance": QemuInstancePlugin(infrakit_home() / "instance-qemu" / name)}


def _docker(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.docker import DockerInstancePlugin

    return {"instance": DockerInstancePlugin(name, infrakit_home() / "instance-docker" / name)}


def _aws(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.aws import AwsInstancePlugin

    return {"instance": AwsInstancePlugin(name, infrakit_home() / "instance-aws" / name)}


def _cloud(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.cloud import CloudInstancePlugin

    return {"instance": CloudInstancePlugin(name, infrakit_home() / "instance-cloud" / name)}


def _redfish(name: str) -> dict[str, Any]:
    from infrakit.plugins.instance.redfish import RedfishInstancePlugin

    return {"instance": RedfishInstancePlugin(name,
                                              infrakit_home() / "instance-redfish" / name)}


def _vanilla(name: str) -> dict[str, Any]:
    from infrakit.plugins.flavor.vanilla import VanillaFlavor

    return {"flavor": VanillaFlavor()}


def _combo(name: str) -> dict[str, Any]:
    from infrakit.plugins.flavor.combo import ComboFlavor
    from infrakit.rpc.lookup import SocketPlugins

    # no cap on its connections: a combo that names a combo calls itself, and nested calls
    # waiting on a pool held by the calls above them would never get a connection
    return {"flavor": ComboFlavor(SocketPlugins(connections=0))}


def _group(name: str) -> dict[str, Any]:
    from infrakit.manager.run import served_group
    from infrakit.plugins.group.plugin import GroupPlugin
    from infrakit.rpc.lookup import SocketPlugins
    from infrakit.store.sqlite import SQLiteStore

    poll = GROUP_POLL.read()
    store = SQLiteStore(infrakit_home() / "group" / name / "groups.db")
    return served_group(GroupPlugin(store, SocketPlugins(), poll=poll))


def _manager(name: str) -> dict[str, Any]:
    from infrakit.manager.run import Settings, build_manager

    return build_manager(Settings.from_env(), name)


_POLL = f"poll: ${GROUP_POLL.env} seconds, default {GROUP_POLL.default}"

KINDS: dict[str, Kind] = {
    "group": Kind("the group controller: keeps committed groups converged; specs in "
                  f"$INFRAKIT_HOME/group/NAME ({_POLL})", _group),
    "manager": Kind("the group controller, served as 'group', acting while it leads; on "
                    "etcd followers forward to the leader, which another replaces when it "
                    "dies (the settings of `infrakit manager`, from "
                    f"{', '.join('$' + s.env for s in MANAGER.values())}; {_POLL})",
                    _manager, default_name="group"),
    "instance-file": Kind("instances as JSON files under $INFRAKIT_HOME/instance-file/NAME",
                          _file, tls=False),
    "instance-process": Kind("instances as local process groups that outlive the plugin; "
                             "state under $INFRAKIT_HOME/instance-process/NAME; the files of "
                             f"the last ${KEEP_ENDED.env} (default {KEEP_ENDED.default}) "
                             "of each group that ended, and of as many destroyed, are kept "
                             f"for at most ${KEEP_ENDED_SECONDS.env} seconds (default a "
                             "week)", _process),
    "instance-qemu": Kind("virtual machines run by qemu-system-x86_64 (KVM where it works, "
                          "else TCG) that outlive the plugin; overlays, seeds, consoles and "
                          "state under $INFRAKIT_HOME/instance-qemu/NAME", _qemu,
                          extra="qemu"),
    "instance-docker": Kind("containers on the Docker engine of $DOCKER_HOST; labels given "
                            "by Instance.Label in $INFRAKIT_HOME/instance-docker/NAME",
                            _docker, extra="docker"),
    "instance-aws": Kind("EC2 instances through boto3 (endpoint, region and credentials from "
                         "the standard AWS settings); launches not yet listed in "
                         "$INFRAKIT_HOME/instance-aws/NAME", _aws, extra="aws"),
    "instance-cloud": Kind("nodes of any Apache Libcloud compute driver (Properties.Driver); "
                           "credentials from $INFRAKIT_CLOUD_KEY/$INFRAKIT_CLOUD_SECRET, "
                           "endpoint $INFRAKIT_CLOUD_ENDPOINT; state in "
                           "$INFRAKIT_HOME/instance-cloud/NAME", _cloud, extra="cloud"),
    "instance-redfish": Kind("physical servers claimed from a pool of Redfish BMCs (pool file "
                             "$INFRAKIT_REDFISH_POOL, mode 600, default pool.yml in "
                             "$INFRAKIT_HOME/instance-redfish/NAME, which also holds the "
                             "claims)", _redfish, extra="redfish"),
    "flavor-combo": Kind("composes the flavors listed in its Properties.Flavors", _combo),
    "flavor-vanilla": Kind("init script, tags and attachments; members are healthy unless "
                           "its optional Properties.Health probe (TCP, HTTP or Command) "
                           "says otherwise", _vanilla, tls=False),
}


def parse_kind(spec: str) -> tuple[str, str]:
    """``KIND[:NAME]`` -> (kind, name); the name defaults to the kind."""
    kind, _, name = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    return kind, name or KINDS[kind].default_name or kind


def check_installed(kind: str) -> None:
    """Refuse a kind whose pip extra is not installed, saying the line that installs it."""
    extra = KINDS[kind].extra
    if extra:
        from infrakit.extras import require

        require(extra, f"the plugin kind {kind}")


def serve_kind(kind: str, name: str, level: int) -> None:
    """Run the built-in plugin ``kind`` as ``name`` until SIGINT or SIGTERM, logging at
    ``--log`` level ``level``, serving its metrics on $INFRAKIT_METRICS_LISTEN too if set.
    A kind that needs no TLS first imports asyncio without it (when nothing has imported
    asyncio or ssl yet), so its process holds no OpenSSL."""
    check_installed(kind)
    if not KINDS[kind].tls:
        from infrakit.rpc.eventloop import import_asyncio_without_tls

        import_asyncio_without_tls()
    from infrakit.rpc.logs import configure_logging
    from infrakit.rpc.paths import plugin_dir
    from infrakit.rpc.server import serve

    configure_logging(level)
    served = {"metrics": METRICS_LISTEN.read(), **KINDS[kind].build(name)}
    serve(name, directory=plugin_dir(), **served)
