"""A manager's lease and the groups it leads under it, when managers share the groups.

A manager registers ``<prefix>managers/<name>`` under its own lease (an
:class:`~infrakit.manager.etcd_leader.EtcdLeadership` of that key, renewed and watched as
a leader's is). It leads a group by creating ``<prefix>owners/<group>`` under the same
lease, in a transaction that requires the key not to exist, no single leader
(``<prefix>leader``) to exist, and its own registration to be the one it made. The owner
key's create revision is that group's fence: every action of the group's controller first
checks, in one etcd transaction, that the key still has it; every write of the group's
state compares it inside the write's own transaction. When the manager dies, etcd drops
its lease after the TTL, and with it every owner key it held, at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from infrakit.manager.etcd_leader import EtcdLeadership
from infrakit.manager.shards import MANAGERS, OWNERS
from infrakit.spi.errors import PluginError
from infrakit.store.etcd_client import TXN_OPS, EtcdClient, b64, created_at

log = logging.getLogger("infrakit.manager")


class Holdings:
    """Owner keys: claimed, checked, given up. Its calls block (run them in a thread)."""

    def __init__(self, client: EtcdClient, prefix: str, ttl: int, name: str) -> None:
        """``client`` answers within a quarter of ``ttl`` (see :class:`EtcdLeadership`);
        ``name`` is this manager's, unique among the managers of ``prefix``."""
        self.client = client
        self.prefix = prefix
        self.name = name
        self.lease = EtcdLeadership(client, prefix, ttl, name=f"{MANAGERS}{name}")
        self.held: dict[str, int] = {}
        """The groups this manager leads, each with its owner key's create revision."""
        self.claimed_at: dict[str, float] = {}
        """When each was claimed (monotonic): a snapshot read before cannot show it."""

    def owner_key(self, group: str) -> str:
        return f"{self.prefix}{OWNERS}{group}"

    def claim(self, *groups: str) -> list[str]:
        """Lead those of ``groups`` that nobody leads; returns those now led here. None
        when a single leader leads, or this manager's registration is gone. Many are
        claimed in one transaction each 100 (a dead manager's hundreds, at once); when
        one of a batch is taken already, each of that batch is tried alone."""
        won: list[str] = []
        for start in range(0, len(groups), TXN_OPS):
            batch = groups[start:start + TXN_OPS]
            if len(batch) > 1 and self._claim(batch):
                won += batch
            else:
                won += [g for g in batch if self._claim((g,))]
        return won

    def _claim(self, groups: tuple[str, ...]) -> bool:
        term, lease = self.lease.term, self.lease.lease
        if not term or lease is None:
            return False
        answer = self.client.call("/kv/txn", {
            "compare": [created_at(f"{self.prefix}leader", 0),
                        created_at(self.lease.key, term),
                        *(created_at(self.owner_key(g), 0) for g in groups)],
            "success": [{"request_put": {"key": b64(self.owner_key(g)),
                                         "value": b64(self.name), "lease": lease}}
                        for g in groups],
            "failure": []})
        if not answer.get("succeeded"):
            return False
        for group in groups:
            self.held[group] = int(answer["header"]["revision"])
            self.claimed_at[group] = time.monotonic()
        return True

    def give_up(self, group: str) -> None:
        """Stop leading ``group``: its owner key goes, if it is still this manager's."""
        revision = self.held.pop(group, 0)
        self.claimed_at.pop(group, None)
        if revision:
            self.client.txn([{"request_delete_range": {"key": b64(self.owner_key(group))}}],
                            [created_at(self.owner_key(group), revision)], fence=[])

    def forget_all(self) -> None:
        """The lease is gone, and every owner key with it."""
        self.held.clear()
        self.claimed_at.clear()

    def write_fence(self, group: str) -> list[tuple[str, int]]:
        """What a write of ``group``'s state compares: its owner key as this manager
        created it, and no single leader. Raises when this manager does not lead it."""
        revision = self.held.get(group)
        if not revision or not self.lease.fresh():
            raise PluginError(f"not writing: this manager does not lead group {group!r} "
                              "(or its lease may have expired)")
        return [(self.owner_key(group), revision), (f"{self.prefix}leader", 0)]

    def fence(self, group: str) -> Callable[[], None]:
        """What ``group``'s controller calls before every action: it raises unless this
        manager still leads the group, as etcd says now."""

        def check() -> None:
            fences = self.write_fence(group)
            if not self.client.txn([], [created_at(*f) for f in fences], fence=[]):
                raise PluginError(f"not acting: another manager leads group {group!r} now")

        return check
