"""A stub instance plugin for simulations: a member is a number, not a resource. Per group
it keeps only how many members were ever made, which of them were destroyed, and the
tags they share, so that a million members cost a few megabytes and no file, process or
API call. DescribeInstances answers with every live member (``<group>.<n>``), as a real
plugin would, so a group controller does its full work on them.

It can start with members already made (``--seed FILE``: ``{group: {"Count": n,
"Tags": {...}}}``), so that a simulation starts from converged groups instead of first
provisioning a million members one call at a time.

Run: ``python -m bench.count_instance NAME [--seed FILE]`` (with ``INFRAKIT_HOME`` set).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

import msgspec

from infrakit.plugins.group.plan import GROUP_TAG
from infrakit.rpc.server import serve
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.types import Description, Spec


class Seed(msgspec.Struct, rename="pascal"):
    count: int
    tags: dict[str, str]


class _Members:
    def __init__(self, tags: dict[str, str], made: int = 0) -> None:
        self.tags = tags
        self.made = made
        self.gone: set[int] = set()
        self.described: list[Description] | None = None
        """The answer to DescribeInstances, until the members change."""

    def describe(self, group: str) -> list[Description]:
        if self.described is None:
            self.described = [Description(id=f"{group}.{n}", tags=self.tags)
                              for n in range(self.made) if n not in self.gone]
        return self.described


class CountingInstances:
    """Instance/0.5.0 over counters."""

    def __init__(self, seed: dict[str, Seed]) -> None:
        self._groups = {g: _Members(s.tags, s.count) for g, s in seed.items()}
        self._lock = threading.Lock()

    def validate(self, properties: Any) -> None:
        return None

    def provision(self, spec: Spec) -> str:
        group = (spec.tags or {}).get(GROUP_TAG, "")
        with self._lock:
            members = self._groups.setdefault(group, _Members(dict(spec.tags or {})))
            members.tags = dict(spec.tags or {})
            members.made += 1
            members.described = None
            return f"{group}.{members.made - 1}"

    def label(self, instance: str, labels: dict[str, str]) -> None:
        raise PluginError("the counting stub keeps one set of tags per group; it does not "
                          "label single members")

    def destroy(self, instance: str) -> None:
        group, _, number = instance.rpartition(".")
        with self._lock:
            members = self._groups.get(group)
            n = int(number) if number.isdigit() else -1
            if members is None or not 0 <= n < members.made or n in members.gone:
                raise NotFoundError(f"Instance {instance!r}: no such instance")
            members.gone.add(n)
            members.described = None

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        with self._lock:
            return [d for group, members in self._groups.items()
                    if tags.items() <= members.tags.items()
                    for d in members.describe(group)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--seed", type=Path, help="members made before the start (JSON)")
    args = parser.parse_args()
    seed = (msgspec.json.decode(args.seed.read_bytes(), type=dict[str, Seed])
            if args.seed else {})
    serve(args.name, instance=CountingInstances(seed))


if __name__ == "__main__":
    main()
