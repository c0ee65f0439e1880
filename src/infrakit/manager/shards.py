"""Which manager leads which group, when managers share the groups (``--share-groups``):
what etcd says now, and what each manager does about it in one round.

The rule is rendezvous hashing (highest random weight): every manager scores every group
by a hash of the pair, and the group prefers the live manager with the highest score. It
was chosen over a shard map kept by an elected coordinator because it needs no
coordinator and no map: each manager works out the same answer from the list of live
managers alone, so a dead manager's groups are claimed by the survivors in the very round
its lease disappears, with no second election in between. Adding or removing a manager
moves only the groups that prefer it (about 1/N of them), never reshuffles the rest.

Preference decides only who *claims* a group nobody leads; leading is an etcd key,
``owners/<group>``, created under the claiming manager's lease in a transaction that
requires it not to exist, so two managers can never both hold it. A manager hands over a
group it holds but that prefers another live manager (one that came back, or joined) at
most ``moves`` per round, so that a returning manager takes its share gradually instead
of every manager stopping and starting many groups at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from infrakit.manager.leader_info import LeaderInfo
from infrakit.spi.types import Wire
from infrakit.store.etcd_client import EtcdClient

MANAGERS = "managers/"
"""Under the prefix: one key per live manager (its record), under its lease."""
OWNERS = "owners/"
"""Under the prefix: one key per led group (the leading manager's name), under its lease."""


def score(manager: str, group: str) -> int:
    """How much ``group`` prefers ``manager``: the same on every machine and Python."""
    digest = hashlib.blake2b(f"{manager}\0{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred(group: str, managers: Iterable[str]) -> str | None:
    """The manager ``group`` prefers among ``managers`` (None when there is none)."""
    return max(managers, key=lambda m: score(m, group), default=None)


@dataclass(frozen=True)
class Owner:
    manager: str
    revision: int
    """The owner key's create revision: what every write and action of the group compares."""


@dataclass(frozen=True)
class Snapshot:
    """What etcd says at one moment: the live managers, the led groups and the stored ones."""

    managers: dict[str, LeaderInfo]
    owners: dict[str, Owner]
    groups: frozenset[str]
    single_leader: bool = False
    """A manager that does not share groups leads them all: nobody else may lead any."""

    def leading(self, manager: str) -> list[str]:
        return sorted(g for g, o in self.owners.items() if o.manager == manager)


def live_managers(client: EtcdClient, prefix: str) -> dict[str, LeaderInfo]:
    """The managers sharing the groups under ``prefix``, by name."""
    managers = {}
    for name, raw in client.get_prefix(prefix + MANAGERS).items():
        try:
            managers[name] = msgspec.json.decode(raw, type=LeaderInfo)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a record this version cannot read: not a manager it can defer to
    return managers


def read_snapshot(client: EtcdClient, prefix: str) -> Snapshot:
    """Four reads: the managers, the owners (with their create revisions), the spec keys,
    and whether a single leader leads."""
    import base64

    managers = live_managers(client, prefix)
    owners = {}
    where = prefix + OWNERS
    for kv in client.get_range(where, prefix=True):
        group = base64.b64decode(kv["key"]).decode()[len(where):]
        owners[group] = Owner(base64.b64decode(kv.get("value", "")).decode(),
                              int(kv["create_revision"]))
    return Snapshot(managers, owners, frozenset(client.get_keys(prefix + "spec/")),
                    bool(client.get_range(f"{prefix}leader", keys_only=True)))


@dataclass
class Round:
    """What one manager does in one round."""

    claim: list[str] = field(default_factory=list)
    """Groups nobody leads that this manager takes."""
    hand_over: list[str] = field(default_factory=list)
    """Groups it leads that prefer another live manager: it lets them go."""
    drop: list[str] = field(default_factory=list)
    """Groups it leads that are stored no more (freed or destroyed)."""


def plan_round(me: str, snap: Snapshot, unowned_since: dict[str, float], now: float,
               patience: float, moves: int, claims: int = 100) -> Round:
    """What manager ``me`` does now. It claims the groups nobody leads that prefer it, and
    any that nobody has led for ``patience`` seconds (their preferred manager is alive but
    does not claim them: stuck, or of a version that cannot), at most ``claims`` of them:
    the first of many managers to start does not take every stored group before the
    others have registered. ``unowned_since`` is kept by the caller across rounds: when
    each group was first seen without a leader."""
    plan = Round()
    if me not in snap.managers:
        return plan  # not registered (yet): it claims nothing
    live = list(snap.managers)
    for gone in set(unowned_since) - (snap.groups - set(snap.owners)):
        del unowned_since[gone]
    for group in sorted(snap.groups):
        owner = snap.owners.get(group)
        if owner is None:
            since = unowned_since.setdefault(group, now)
            if (preferred(group, live) == me or now - since >= patience) \
                    and len(plan.claim) < claims:
                plan.claim.append(group)
        elif owner.manager == me and preferred(group, live) != me \
                and len(plan.hand_over) < moves:
            plan.hand_over.append(group)
    plan.drop = [g for g in snap.leading(me) if g not in snap.groups]
    return plan


class ManagerShare(Wire, kw_only=True):
    """One manager sharing the groups, as ``infrakit manager status`` shows it."""

    name: str
    pid: int = msgspec.field(name="PID")
    host: str
    since: float
    address: str = ""
    url: str = msgspec.field(default="", name="URL")
    groups: list[str]
    """The groups it leads now."""


class ShareStatus(Wire, kw_only=True):
    """Who leads which group: every live manager with its groups, and every stored group
    with the name of the manager leading it (null while none does: being handed over)."""

    managers: list[ManagerShare]
    groups: dict[str, str | None]


def share_status(snap: Snapshot) -> ShareStatus:
    return ShareStatus(
        managers=[ManagerShare(name=name, pid=m.pid, host=m.host, since=m.since,
                               address=m.address, url=m.url, groups=snap.leading(name))
                  for name, m in sorted(snap.managers.items())],
        groups={g: (o.manager if (o := snap.owners.get(g)) else None)
                for g in sorted(snap.groups)})
