"""Building a manager: its store, its leadership, and the group plugin it serves. The
settings come from ``infrakit manager``'s options or, for ``infrakit plugin start
manager``, from the environment variables those options read (one table of both:
:data:`infrakit.settings.MANAGER`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.leadership import Leadership
from infrakit.manager.metrics import watch_manager
from infrakit.plugins.group.storage import GroupStore
from infrakit.rpc.client import Remote
from infrakit.rpc.paths import infrakit_home, socket_path
from infrakit.rpc.tcp import TcpListener, parse_listen, remote
from infrakit.rpc.tokens import Tokens
from infrakit.settings import GROUP_POLL, MANAGER
from infrakit.spi.errors import PluginError

if TYPE_CHECKING:
    from infrakit.console.app import Console
    from infrakit.manager.alerting import Alerting
    from infrakit.manager.elected import ElectedGroup
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.manager.lock_leader import LockLeadership
    from infrakit.manager.shards import ShareStatus
    from infrakit.manager.shared import SharedGroups
    from infrakit.plugins.group.plugin import GroupPlugin
    from infrakit.store.etcd import EtcdStore
    from infrakit.store.sqlite import SQLiteStore

log = logging.getLogger("infrakit.manager")


@dataclass(frozen=True)
class Settings:
    """A manager's settings, each parsed by its entry in :data:`infrakit.settings.MANAGER`."""

    store: str
    """``sqlite`` (one machine, a lock file) or ``etcd`` (many, a lease and an election)."""
    endpoints: tuple[str, ...]
    lease_ttl: int
    prefix: str
    """Where in etcd the managers keep everything: one prefix per set of managers."""
    listen: str
    """``[HOST:]PORT`` of a TCP listener (TLS and a token required), for other machines."""
    tls_cert: str
    tls_key: str
    tls_ca: str
    """What a follower trusts in the leader's certificate; by default ``tls_cert`` itself."""
    token_file: str
    peer_token_file: str
    """The token a follower forwards calls to the leader with, where ``token_file`` lists
    several; by default ``token_file``'s one token."""
    advertise: str
    """The host name other machines reach this manager's listener by."""
    metrics_listen: tuple[str, int] | None
    """Where to serve ``GET /metrics`` over plain HTTP too, if anywhere."""
    alert_webhooks: tuple[str, ...] = ()
    """Where the leader POSTs the groups' alerts (Alertmanager's webhook format)."""
    alert_not_converged_for: float = 600.0
    alert_for: float = 60.0
    alert_repeat: float = 14400.0
    share_groups: bool = False
    """With etcd: each group led by one of the managers, instead of all by one leader."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(**{field: setting.read() for field, setting in MANAGER.items()})

    def check(self) -> None:
        """Refuse settings that are each valid but do not go together."""
        if self.share_groups and self.store != "etcd":
            raise PluginError("--share-groups: managers share groups only with --store etcd "
                              "(on one machine, one manager leads them all)")
        if self.store == "etcd" and not self.endpoints:
            raise PluginError("--etcd-endpoints: required with --store etcd")
        if self.store == "etcd":
            from infrakit.extras import require

            require("etcd", "--store etcd")
        if self.listen:
            for option, value in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                                  ("--token-file", self.token_file)):
                if not value:
                    raise PluginError(f"{option}: required with --listen (a TCP listener "
                                      "serves only over TLS, to callers with the token)")

    def alerting(self) -> Alerting | None:
        """What sends the groups' alerts while this manager leads; None without webhooks."""
        if not self.alert_webhooks:
            return None
        from infrakit.manager.alerting import Alerting
        from infrakit.manager.alerts import Holds

        return Alerting(self.alert_webhooks, Holds(self.alert_not_converged_for,
                                                   self.alert_for), self.alert_repeat)

    def tcp_listener(self) -> TcpListener | None:
        if not self.listen:
            return None
        host, port = parse_listen(self.listen)
        return TcpListener(host, port, Path(self.tls_cert), Path(self.tls_key),
                           Tokens.load(self.token_file))

    def remote(self, url: str) -> Remote | None:
        """How this manager reaches another's listener at ``url``: with the managers'
        token, trusting their certificate; None without TLS settings."""
        ca = self.tls_ca or self.tls_cert
        token_file = self.peer_token_file or self.token_file
        if not url or not ca or not token_file:
            return None
        try:
            return remote(url, token_file, ca)
        except PluginError as exc:
            if self.peer_token_file or "holds a list of tokens" not in str(exc):
                raise
            raise PluginError(f"{exc}; with named tokens, give managers the admin token "
                              "they call each other with by --peer-token-file") from None


S = TypeVar("S", bound=GroupStore)
L = TypeVar("L", bound=Leadership)


@dataclass(frozen=True)
class StoreKind(Generic[S, L]):
    """What managers on one kind of store are made of."""

    where: Callable[[Settings], str]
    """The store, as ``infrakit manager status`` names it."""
    store: Callable[[Settings], S]
    leadership: Callable[[Settings], L]
    serve: Callable[[S, L, LeaderInfo, float, Settings], Any]
    """The group plugin a manager serves, from its store, its leadership, what it records
    of itself when it leads, and the controllers' poll."""
    term: Callable[[Any], int]
    """The term the group plugin that ``serve`` made leads in; 0 while it does not lead."""


def _manager_home() -> Path:
    return infrakit_home() / "manager"


def _sqlite_path() -> Path:
    return _manager_home() / "groups.db"


def _sqlite_store(settings: Settings) -> SQLiteStore:
    from infrakit.store.sqlite import SQLiteStore

    return SQLiteStore(_sqlite_path())


def _lock_leadership(settings: Settings) -> LockLeadership:
    from infrakit.manager.lock_leader import LockLeadership

    return LockLeadership(_manager_home())


def _lead_then_serve(store: GroupStore, leadership: Leadership, me: LeaderInfo, poll: float,
                     settings: Settings) -> GroupPlugin:
    """Wait until this process leads, then serve: managers on one machine share one plugin
    directory, so only the leader can serve there."""
    from infrakit.plugins.group.plugin import GroupPlugin
    from infrakit.rpc.lookup import SocketPlugins

    leadership.acquire(me, threading.Event())
    log.info("leading; store %s", me.store)
    return GroupPlugin(store, SocketPlugins(), poll=poll, fence=leadership.fence,
                       watcher=settings.alerting())


def _etcd_store(settings: Settings) -> EtcdStore:
    from infrakit.store.etcd import EtcdStore
    from infrakit.store.etcd_client import EtcdClient

    return EtcdStore(EtcdClient(settings.endpoints), prefix=settings.prefix)


def _etcd_leadership(settings: Settings) -> EtcdLeadership:
    from infrakit.manager.etcd_leader import EtcdLeadership
    from infrakit.manager.shards import MANAGERS
    from infrakit.store.etcd_client import EtcdClient

    # the lease's own connection answers within a quarter of the TTL, or counts as failed
    client = EtcdClient(settings.endpoints, timeout=settings.lease_ttl / 4)
    return EtcdLeadership(client, settings.prefix, settings.lease_ttl,
                          yield_to="" if settings.share_groups else settings.prefix + MANAGERS)


def _serve_elected(store: EtcdStore, election: EtcdLeadership, me: LeaderInfo, poll: float,
                   settings: Settings) -> ElectedGroup | SharedGroups:
    """Serve at once, leading or following (see :mod:`infrakit.manager.elected`), or
    leading a share of the groups (:mod:`infrakit.manager.shared`)."""
    if settings.share_groups:
        from infrakit.manager.holdings import Holdings
        from infrakit.manager.shared import SharedGroups
        from infrakit.manager.sharing import Sharing

        holdings = Holdings(election.client, settings.prefix, settings.lease_ttl,
                            _manager_name(me))
        return SharedGroups(Sharing(store, holdings, poll, me, settings.alerting()),
                            settings.remote)
    from infrakit.manager.elected import ElectedGroup

    return ElectedGroup(store, election, poll, me, settings.remote, settings.alerting())


def _manager_name(me: LeaderInfo) -> str:
    """What a manager sharing groups is known by: its host and the name it serves as, the
    same when it comes back, so that the groups it led prefer it again."""
    return f"{me.host}:{Path(me.address).name}"


_SQLITE = StoreKind(lambda s: f"sqlite:{_sqlite_path()}", _sqlite_store,
                    _lock_leadership, _lead_then_serve, lambda _group: 1)
_ETCD = StoreKind(lambda s: f"etcd:{','.join(s.endpoints)}", _etcd_store, _etcd_leadership,
                  _serve_elected, lambda group: group.term)
STORE_KINDS: dict[str, StoreKind[Any, Any]] = {"sqlite": _SQLITE, "etcd": _ETCD}
"""By the names :data:`infrakit.settings.STORES` accepts."""


def current_leader(settings: Settings) -> LeaderInfo | None:
    """Who leads the managers these settings describe."""
    settings.check()
    leader: LeaderInfo | None = STORE_KINDS[settings.store].leadership(settings).leader()
    return leader


def shared_status(settings: Settings) -> ShareStatus | None:
    """Who leads which group, when managers share the groups these settings describe
    (None when none does: no manager runs with ``--share-groups``)."""
    settings.check()
    if settings.store != "etcd":
        return None
    from infrakit.manager.shards import read_snapshot, share_status
    from infrakit.store.etcd_client import EtcdClient

    client = EtcdClient(settings.endpoints)
    try:
        snap = read_snapshot(client, settings.prefix)
    finally:
        client.close()
    return share_status(snap) if snap.managers else None


def build_manager(settings: Settings, name: str) -> dict[str, Any]:
    """The ``serve()`` arguments of a manager serving as ``name``."""
    settings.check()
    poll = GROUP_POLL.read()
    tcp = settings.tcp_listener()
    kind = STORE_KINDS[settings.store]
    me = LeaderInfo.me(kind.where(settings), str(socket_path(name).absolute()),
                       tcp.url(settings.advertise or None) if tcp else "")
    group = kind.serve(kind.store(settings), kind.leadership(settings), me, poll, settings)
    watch_manager(lambda: kind.term(group))
    web = None if tcp is None else _console(group, tcp, name, settings)
    return {**served_group(group), "tcp": tcp, "metrics": settings.metrics_listen, "web": web}


def _console(group: Any, tcp: TcpListener, name: str, settings: Settings) -> Console:
    """The web console on the manager's TLS listener: logins by the listener's tokens,
    calls to the manager's own group plugin object (so that they run as the logged-in
    caller), pages made live by the manager's own event stream."""
    from infrakit.console.app import Console
    from infrakit.console.inprocess import awaited

    async def leadership() -> str:
        leader = await asyncio.to_thread(current_leader, settings)
        if leader is None:
            return "no manager leads"
        return (f"{leader.host} (pid {leader.pid}) leads since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(leader.since))}"
                + (" (this manager)" if leader.is_me() else ""))

    return Console(awaited(group), socket_path(name), tcp.tokens.who, leadership)


def served_group(group: object) -> dict[str, Any]:
    """The ``serve()`` arguments of a group plugin: Group/0.1.0, and its events (under the
    typed object ``group``) and its state as the reference's tools read them (a group
    plugin's :attr:`~GroupPlugin.views`; a manager on etcd serves them itself, from the
    leader)."""
    from infrakit.plugins.group.plugin import GroupPlugin
    from infrakit.spi.group import EVENT_TYPE

    views = group.views if isinstance(group, GroupPlugin) else group
    return {"group": group, "event": {EVENT_TYPE: views}, "metadata": views}
