"""Leadership across machines: an etcd lease and a leader key created under it.

A manager campaigns by creating ``<prefix>leader`` with its lease, in a transaction that
succeeds only if the key does not exist; the key's create revision names its term. The
leader renews the lease every third of its TTL. It must stop acting before another can
start, so it gives up, by ending its process at once, when renewing has failed for two
thirds of the TTL or etcd says the lease is gone; the next leader can only create the key
after the TTL. A leader that was frozen (SIGSTOP) past its TTL finds, when it runs again,
that its term is over: :meth:`EtcdLeadership.fence`, awaited before every action that
changes a provider, compares the leader key's create revision with its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import msgspec

from infrakit.manager.leader import LeaderInfo
from infrakit.spi.errors import PluginError
from infrakit.store.etcd import EtcdStore, b64, created_at

log = logging.getLogger("infrakit.manager")

LOST_LEADERSHIP = 3
"""The exit status of a manager that lost its lease."""


class EtcdLeadership:
    def __init__(self, store: EtcdStore, ttl: int) -> None:
        if ttl < 2:
            raise PluginError("--lease-ttl: must be at least 2 seconds")
        self.store = store
        self.ttl = ttl
        self.key = f"{store.prefix}leader"
        self.term = 0
        """The leader key's create revision while this manager leads."""
        self._renewed = 0.0

    def leader(self) -> LeaderInfo | None:
        value, _ = self.store.get_value(self.key)
        return None if value is None else msgspec.json.decode(value, type=LeaderInfo)

    def acquire(self, store: str) -> LeaderInfo:
        """Campaign until this manager leads; then keep its lease alive in a thread."""
        waiting_said = False
        while True:
            if self.store.get_value(self.key)[0] is None:
                lease = self.store.call("/lease/grant", {"TTL": self.ttl, "ID": 0})["ID"]
                info = LeaderInfo.me(store)
                answer = self.store.call("/kv/txn", {
                    "compare": [created_at(self.key, 0)],
                    "success": [{"request_put": {"key": b64(self.key),
                                                 "value": b64(msgspec.json.encode(info)),
                                                 "lease": lease}}],
                    "failure": []})
                if answer.get("succeeded"):
                    self.term = int(answer["header"]["revision"])
                    self._renewed = time.monotonic()
                    threading.Thread(target=self._keep, args=(lease,), daemon=True,
                                     name="lease").start()
                    return info
                self.store.call("/lease/revoke", {"ID": lease})
            if not waiting_said:
                leader = self.leader()
                if leader is not None:
                    log.info("waiting to lead: pid %d on %s leads", leader.pid, leader.host)
                    waiting_said = True
            time.sleep(min(0.5, self.ttl / 4))

    def _keep(self, lease: Any) -> None:
        """Renew the lease; end the process the moment leadership may be lost."""
        while True:
            time.sleep(self.ttl / 3)
            try:
                answer = self.store.call("/lease/keepalive", {"ID": lease})
                ttl = int(answer.get("result", {}).get("TTL", -1))
            except PluginError as exc:
                ttl = 0
                log.warning("lease renewal failed: %s", exc)
            if ttl > 0:
                self._renewed = time.monotonic()
            elif ttl < 0 or time.monotonic() - self._renewed > self.ttl * 2 / 3:
                log.critical("lost leadership (the lease %s); stopping now", "expired"
                             if ttl < 0 else "could not be renewed in time")
                logging.shutdown()
                os._exit(LOST_LEADERSHIP)

    def fence(self) -> None:
        """Raise unless this manager still leads: its lease was renewed within the TTL and
        the leader key is still the one it created."""
        if time.monotonic() - self._renewed > self.ttl * 2 / 3:
            raise PluginError("not acting: this manager's lease may have expired")
        if self.store.created_revision(self.key) != self.term:
            raise PluginError("not acting: another manager leads now")
