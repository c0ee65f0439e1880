"""Leadership across machines: an etcd lease and a leader key created under it.

A manager campaigns by creating ``<prefix>leader`` with its lease, in a transaction that
succeeds only if the key does not exist; the key's create revision names its term. The
leader renews the lease every quarter of its TTL, and at once again after a renewal failed.
It must stop acting before another can start, so its term ends, for this process, when
renewing has failed for two thirds of the TTL or etcd says the lease is gone; the next
leader can only create the key after the TTL.
:meth:`EtcdLeadership.fence`, awaited before every action that changes a provider, raises
from that moment, and also when the leader key is no longer the one this manager created:
so a leader that was frozen (SIGSTOP) past its TTL acts on nothing when it runs again.
A manager whose term ended campaigns again, and leads again once etcd lets it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from infrakit.manager.leader_info import LeaderInfo
from infrakit.spi.errors import PluginError
from infrakit.store.etcd_client import EtcdClient, b64, created_at

log = logging.getLogger("infrakit.manager")


class EtcdLeadership:
    """A :class:`~infrakit.manager.leadership.Leadership` whose term can end while the
    manager runs: it also says when (``on_lost``), and resigns."""

    def __init__(self, client: EtcdClient, prefix: str, ttl: int,
                 on_lost: Callable[[], None] = lambda: None, name: str = "leader",
                 yield_to: str = "") -> None:
        """``client`` should answer within a quarter of ``ttl`` (its timeout), so that a
        renewal that hangs is noticed in time; the leader key is ``<prefix><name>`` (a
        manager sharing groups holds ``managers/<its name>`` instead, see
        :mod:`infrakit.manager.shared`); ``on_lost`` is called, from a thread, when this
        manager's term ends; while any key is under ``yield_to``, it does not campaign
        (managers sharing the groups run there)."""
        self.client = client
        self.yield_to = yield_to
        self.ttl = ttl
        self.key = f"{prefix}{name}"
        self.term = 0
        """The leader key's create revision while this manager leads; 0 when it does not."""
        self.on_lost = on_lost
        self._lease: Any = None
        self._stale_lease: Any = None
        """The lease of a term that ended while etcd could not be told: revoked as soon as
        it can be, so that the next election need not wait for it to expire."""
        self._renewed = 0.0

    def leader(self) -> LeaderInfo | None:
        value, _ = self.client.get_value(self.key)
        return None if value is None else msgspec.json.decode(value, type=LeaderInfo)

    def acquire(self, info: LeaderInfo, stop: threading.Event) -> bool:
        """Campaign until this manager leads (True), keeping its lease alive in a thread
        from then on, or until ``stop`` is set (False). etcd being out of reach, or without
        a quorum, only delays the campaign."""
        said = ""
        while not stop.is_set():
            try:
                if self._campaign(info):
                    return True
                leader = self.leader()
                news = f"{leader.pid}@{leader.host}" if leader else self._yielding()
                if leader is not None and news != said:
                    log.info("waiting to lead: pid %d on %s leads", leader.pid, leader.host)
                elif news and news != said:
                    log.warning("waiting to lead: %s", news)
            except PluginError as exc:
                news = str(exc)
                if news != said:
                    log.warning("cannot campaign for leadership: %s", exc)
            said = news
            stop.wait(min(0.25, self.ttl / 8))  # a follower polls: a few reads a second
        return False

    def _campaign(self, info: LeaderInfo) -> bool:
        if self._stale_lease is not None:
            lease, self._stale_lease = self._stale_lease, None
            try:
                self.client.call("/lease/revoke", {"ID": lease})
            except PluginError as exc:
                if "lease not found" not in str(exc):  # not expired: etcd is still away
                    self._stale_lease = lease
                    raise
        if self.client.get_value(self.key)[0] is not None or self._yielding():
            return False
        lease = self.client.call("/lease/grant", {"TTL": self.ttl, "ID": 0})["ID"]
        answer = self.client.call("/kv/txn", {
            "compare": [created_at(self.key, 0)],
            "success": [{"request_put": {"key": b64(self.key),
                                         "value": b64(msgspec.json.encode(info.now())),
                                         "lease": lease}}],
            "failure": []})
        if not answer.get("succeeded"):
            self.client.call("/lease/revoke", {"ID": lease})
            return False
        self.term = int(answer["header"]["revision"])
        self._lease = lease
        self._renewed = time.monotonic()
        threading.Thread(target=self._keep, args=(lease, self.term), daemon=True,
                         name="lease").start()
        return True

    def _yielding(self) -> str:
        """Why this manager may not campaign now, or ""."""
        if self.yield_to and self.client.get_keys(self.yield_to):
            return (f"managers started with --share-groups run under {self.yield_to}; stop "
                    "them, or start this one with --share-groups too")
        return ""

    def _keep(self, lease: Any, term: int) -> None:
        """Renew the lease until the term ends: the moment leadership may be lost."""
        wait = self.ttl / 4
        while self.term == term:
            time.sleep(wait)
            if self.term != term:
                return  # resigned
            try:
                answer = self.client.call("/lease/keepalive", {"ID": lease})
                ttl = int(answer.get("result", {}).get("TTL", -1))
            except PluginError as exc:
                ttl = 0
                log.warning("lease renewal failed: %s", exc)
            wait = self.ttl / 4 if ttl > 0 else 0.1
            if ttl > 0:
                self._renewed = time.monotonic()
            elif ttl < 0 or time.monotonic() - self._renewed > self.ttl * 2 / 3:
                log.critical("lost leadership (the lease %s); not acting until elected "
                             "again", "expired" if ttl < 0 else "could not be renewed in time")
                self._end(revoke=ttl == 0)
                self.on_lost()
                return

    def _end(self, revoke: bool) -> None:
        """End this manager's term; with ``revoke``, let etcd know (now or, if it cannot
        be reached, before the next campaign)."""
        lease, self._lease, self.term = self._lease, None, 0
        if not revoke or lease is None:
            return
        try:
            self.client.call("/lease/revoke", {"ID": lease})
        except PluginError:
            self._stale_lease = lease

    def resign(self) -> None:
        """Step down on purpose (a clean shutdown): the lease and the leader key go at
        once, so the next manager leads without waiting out the TTL."""
        if self.term:
            self._end(revoke=True)

    @property
    def lease(self) -> Any:
        """The lease of this manager's term (None when it does not lead): keys created
        under it go when it does."""
        return self._lease

    def fresh(self) -> bool:
        """Whether this manager's term has not ended and its lease was renewed within two
        thirds of the TTL: no other manager can have taken over yet."""
        return bool(self.term) and time.monotonic() - self._renewed <= self.ttl * 2 / 3

    def fence(self) -> None:
        """Raise unless this manager still leads: its term has not ended, its lease was
        renewed within two thirds of the TTL, and the leader key is the one it created."""
        term = self.term
        if not self.fresh():
            raise PluginError("not acting: this manager's lease may have expired")
        if self.client.created_revision(self.key) != term:
            raise PluginError("not acting: another manager leads now")
