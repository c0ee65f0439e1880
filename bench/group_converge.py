"""How fast the group controller converges a new group, and how long DescribeGroup takes,
with the file instance plugin and the vanilla flavor (both real processes), as in the
reference's own figures."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.stack import PARENT_HELP, Stack, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec


def spec(gid: str, size: int, max_parallel: int = 64) -> GroupSpec:
    return GroupSpec(id=gid, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {"Note": "bench"}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Init": ["echo hello"]}},
        "MaxParallel": max_parallel,
    })


def creates_per_ms(parent: str, count: int = 1000) -> float:
    """How many small files this file system creates per millisecond right now (it varies
    several-fold on a shared virtual disk): the file plugin's floor."""
    where = Path(tempfile.mkdtemp(prefix=".ikc", dir=parent))
    try:
        start = time.perf_counter()
        for i in range(count):
            (where / f"f{i}").write_bytes(b"x" * 180)
        return count / ((time.perf_counter() - start) * 1e3)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def converge(stack: Stack, sizes: list[int], max_parallel: int) -> dict[str, float]:
    """Each size's group committed, converged and destroyed in turn; then a group of 3
    scaled to 5. Seconds each took, and each DescribeGroup of a converged group."""
    took: dict[str, float] = {}
    with RPCClient(stack.socket("group"), timeout=600) as conn:
        group = GroupClient(conn)
        for n in sizes:
            gid = f"bench{n}"
            start = time.perf_counter()
            group.commit_group(spec(gid, n, max_parallel), False)
            while not group.describe_group(gid).converged:
                time.sleep(0.05)
            took[f"{n:,} converged"] = time.perf_counter() - start
            t0 = time.perf_counter()
            members = group.describe_group(gid).instances or []
            took[f"DescribeGroup of {len(members):,}"] = time.perf_counter() - t0
            group.destroy_group(gid)
        # scaling 3 to 5 (the reference: 16.4 s at its default 10 s poll)
        group.commit_group(spec("scale", 3), False)
        while not group.describe_group("scale").converged:
            time.sleep(0.01)
        start = time.perf_counter()
        group.commit_group(spec("scale", 5), False)
        while not group.describe_group("scale").converged:
            time.sleep(0.01)
        took[f"scale 3 -> 5 (poll {stack.env['INFRAKIT_GROUP_POLL']} s)"] = \
            time.perf_counter() - start
        group.destroy_group("scale")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--max-parallel", type=int, default=500,
                        help="the group's MaxParallel: provisions per batch call")
    parser.add_argument("--other", action="append", metavar="NAME=CHECKOUT", default=[],
                        help="a checkout to compare with, named (its .venv/bin/infrakit is "
                        "used); again for more")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs of each side; the sides alternate (this, the others, "
                        "the others in reverse, this, ...)")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    sides: dict[str, str | None] = {"this": None}
    for other in args.other:
        name, _, checkout = other.partition("=")
        sides[name] = str(Path(checkout) / ".venv" / "bin" / "infrakit")
    order = [side for i in range(args.runs) for side in
             (list(sides) if i % 2 == 0 else list(reversed(sides)))]
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for side in order:
        print(f"{args.parent}: {creates_per_ms(args.parent):.1f} file creates per ms; "
              f"MaxParallel {args.max_parallel}; {side}; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        with plugin_stack("instance-file", "flavor-vanilla", "group", poll=5,
                          parent=args.parent, infrakit=sides[side]) as stack:
            took = converge(stack, [int(s) for s in args.sizes.split(",")],
                            args.max_parallel)
        results[side].append(took)
        print("  " + "; ".join(f"{what}: {t:.3f} s" for what, t in took.items()), flush=True)
    for side, runs in results.items():
        for what in runs[0]:
            times = [run[what] for run in runs]
            print(f"{side}: {what}: {' / '.join(f'{t:.3f}' for t in times)} s, median "
                  f"{statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
