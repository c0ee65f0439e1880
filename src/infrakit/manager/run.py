"""Building a manager: its store, its leadership, and the group plugin it serves once it
leads. The settings come from ``infrakit manager``'s options or, for ``infrakit plugin
start manager``, from the environment variables those options read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrakit.manager.leader import LeaderInfo, LockLeadership
from infrakit.rpc.client import Remote
from infrakit.rpc.paths import infrakit_home, socket_path
from infrakit.rpc.tcp import TcpListener, parse_listen, read_token, remote
from infrakit.spi.errors import PluginError

log = logging.getLogger("infrakit.manager")

DEFAULT_LEASE_TTL = 5


@dataclass(frozen=True)
class Settings:
    store: str = "sqlite"
    """``sqlite`` (one machine, a lock file) or ``etcd`` (many, a lease and an election)."""
    endpoints: tuple[str, ...] = ()
    lease_ttl: int = DEFAULT_LEASE_TTL
    prefix: str = "/infrakit/"
    """Where in etcd the managers keep everything: one prefix per set of managers."""
    listen: str = ""
    """``[HOST:]PORT`` of a TCP listener (TLS and a token required), for other machines."""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    """What a follower trusts in the leader's certificate; by default ``tls_cert`` itself."""
    token_file: str = ""
    advertise: str = ""
    """The host name other machines reach this manager's listener by."""

    @classmethod
    def from_env(cls) -> Settings:
        endpoints = os.environ.get("INFRAKIT_ETCD_ENDPOINTS", "")
        try:
            ttl = int(os.environ.get("INFRAKIT_LEASE_TTL", DEFAULT_LEASE_TTL))
        except ValueError:
            raise PluginError("INFRAKIT_LEASE_TTL: must be a whole number of seconds") from None
        env = os.environ.get
        return cls(store=env("INFRAKIT_MANAGER_STORE", "sqlite"),
                   endpoints=tuple(e for e in endpoints.split(",") if e), lease_ttl=ttl,
                   prefix=env("INFRAKIT_ETCD_PREFIX", "/infrakit/"),
                   listen=env("INFRAKIT_MANAGER_LISTEN", ""),
                   tls_cert=env("INFRAKIT_TLS_CERT", ""), tls_key=env("INFRAKIT_TLS_KEY", ""),
                   tls_ca=env("INFRAKIT_TLS_CA", ""),
                   token_file=env("INFRAKIT_MANAGER_TOKEN_FILE", ""),
                   advertise=env("INFRAKIT_MANAGER_ADVERTISE", ""))

    def check(self) -> None:
        if self.store not in ("sqlite", "etcd"):
            raise PluginError(f"--store: {self.store!r} is neither sqlite nor etcd")
        if self.store == "etcd" and not self.endpoints:
            raise PluginError("--etcd-endpoints: required with --store etcd")
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise PluginError(f"--etcd-prefix: {self.prefix!r} must start and end with /")
        if self.listen:
            for option, value in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                                  ("--token-file", self.token_file)):
                if not value:
                    raise PluginError(f"{option}: required with --listen (a TCP listener "
                                      "serves only over TLS, to callers with the token)")

    def tcp_listener(self) -> TcpListener | None:
        if not self.listen:
            return None
        host, port = parse_listen(self.listen)
        return TcpListener(host, port, Path(self.tls_cert), Path(self.tls_key),
                           read_token(Path(self.token_file)))

    def remote(self, url: str) -> Remote | None:
        """How this manager reaches another's listener at ``url``: with the managers'
        token, trusting their certificate; None without TLS settings."""
        ca = self.tls_ca or self.tls_cert
        if not url or not ca or not self.token_file:
            return None
        return remote(url, self.token_file, ca)


def current_leader(settings: Settings) -> LeaderInfo | None:
    """Who leads the managers these settings describe."""
    settings.check()
    if settings.store == "sqlite":
        return LockLeadership(infrakit_home() / "manager").leader()
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.store.etcd_client import EtcdClient

    client = EtcdClient(settings.endpoints)
    return EtcdLeadership(client, settings.prefix, settings.lease_ttl).leader()


def build_manager(settings: Settings, name: str) -> dict[str, Any]:
    """The ``serve()`` arguments of a manager serving as ``name``.

    On SQLite, first wait until this process leads: managers on one machine share one
    plugin directory, so only the leader can serve there. On etcd, serve at once, leading
    or following (see :mod:`infrakit.manager.elected`)."""
    from infrakit.plugins.group.plugin import DEFAULT_POLL, GroupPlugin

    settings.check()
    poll = float(os.environ.get("INFRAKIT_GROUP_POLL", DEFAULT_POLL))
    tcp = settings.tcp_listener()
    address = str(socket_path(name).absolute())
    url = tcp.url(settings.advertise or None) if tcp else ""
    if settings.store == "sqlite":
        from infrakit.store.sqlite import SQLiteStore

        home = infrakit_home() / "manager"
        path = home / "groups.db"
        LockLeadership(home).acquire(LeaderInfo.me(f"sqlite:{path}", address, url))
        log.info("leading; store sqlite:%s", path)
        return {"group": GroupPlugin(SQLiteStore(path), poll=poll), "tcp": tcp}
    from infrakit.manager.elected import ElectedGroup
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.store.etcd import EtcdStore
    from infrakit.store.etcd_client import EtcdClient

    store = EtcdStore(EtcdClient(settings.endpoints), prefix=settings.prefix)
    # the lease's own client answers within a quarter of the TTL, or counts as failed
    votes = EtcdClient(settings.endpoints, timeout=settings.lease_ttl / 4)
    election = EtcdLeadership(votes, settings.prefix, settings.lease_ttl)
    me = LeaderInfo.me(f"etcd:{','.join(settings.endpoints)}", address, url)
    return {"group": ElectedGroup(store, election, poll, me, settings.remote), "tcp": tcp}
