"""Building a manager: its store, its leadership, and the group plugin it serves once it
leads. The settings come from ``infrakit manager``'s options or, for ``infrakit plugin
start manager``, from the environment variables those options read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from infrakit.manager.leader import LeaderInfo, LockLeadership
from infrakit.rpc.paths import infrakit_home
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

    @classmethod
    def from_env(cls) -> Settings:
        endpoints = os.environ.get("INFRAKIT_ETCD_ENDPOINTS", "")
        try:
            ttl = int(os.environ.get("INFRAKIT_LEASE_TTL", DEFAULT_LEASE_TTL))
        except ValueError:
            raise PluginError("INFRAKIT_LEASE_TTL: must be a whole number of seconds") from None
        return cls(store=os.environ.get("INFRAKIT_MANAGER_STORE", "sqlite"),
                   endpoints=tuple(e for e in endpoints.split(",") if e), lease_ttl=ttl,
                   prefix=os.environ.get("INFRAKIT_ETCD_PREFIX", "/infrakit/"))

    def check(self) -> None:
        if self.store not in ("sqlite", "etcd"):
            raise PluginError(f"--store: {self.store!r} is neither sqlite nor etcd")
        if self.store == "etcd" and not self.endpoints:
            raise PluginError("--etcd-endpoints: required with --store etcd")
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise PluginError(f"--etcd-prefix: {self.prefix!r} must start and end with /")


def current_leader(settings: Settings) -> LeaderInfo | None:
    """Who leads the managers these settings describe."""
    settings.check()
    if settings.store == "sqlite":
        return LockLeadership(infrakit_home() / "manager").leader()
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.store.etcd import EtcdStore

    store = EtcdStore(list(settings.endpoints), prefix=settings.prefix)
    return EtcdLeadership(store, settings.lease_ttl).leader()


def build_manager(settings: Settings) -> dict[str, Any]:
    """Wait until this process leads; then the ``serve()`` arguments of the manager."""
    from infrakit.plugins.group.plugin import DEFAULT_POLL, GroupPlugin

    settings.check()
    poll = float(os.environ.get("INFRAKIT_GROUP_POLL", DEFAULT_POLL))
    if settings.store == "sqlite":
        from infrakit.store.sqlite import SQLiteStore

        home = infrakit_home() / "manager"
        path = home / "groups.db"
        LockLeadership(home).acquire(f"sqlite:{path}")
        log.info("leading; store sqlite:%s", path)
        return {"group": GroupPlugin(SQLiteStore(path), poll=poll)}
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.store.etcd import EtcdStore

    store = EtcdStore(list(settings.endpoints), prefix=settings.prefix)
    election = EtcdLeadership(store, settings.lease_ttl)
    election.acquire(f"etcd:{','.join(settings.endpoints)}")
    store.fence_on(election.key, election.term)
    log.info("leading (term %d); store etcd:%s", election.term, ",".join(settings.endpoints))
    return {"group": GroupPlugin(store, poll=poll, fence=election.fence)}
