"""How fast the group controller converges a new group, and how long DescribeGroup takes,
with the file instance plugin and the vanilla flavor (both real processes), as in the
reference's own figures."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.stack import PARENT_HELP, plugin_stack
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--max-parallel", type=int, default=500,
                        help="the group's MaxParallel: provisions per batch call")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    print(f"{args.parent}: {creates_per_ms(args.parent):.1f} file creates per ms; "
          f"MaxParallel {args.max_parallel}")
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=5,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=120) as conn:
        group = GroupClient(conn)
        for n in (int(s) for s in args.sizes.split(",")):
            gid = f"bench{n}"
            start = time.perf_counter()
            group.commit_group(spec(gid, n, args.max_parallel), False)
            while not group.describe_group(gid).converged:
                time.sleep(0.05)
            converged = time.perf_counter() - start
            t0 = time.perf_counter()
            members = group.describe_group(gid).instances or []
            describe = time.perf_counter() - t0
            print(f"size {n:6d}: converged in {converged:6.2f} s; DescribeGroup of "
                  f"{len(members)} members {describe * 1e3:7.1f} ms")
            group.destroy_group(gid)
        # scaling 3 to 5 (the reference: 16.4 s at its default 10 s poll)
        group.commit_group(spec("scale", 3), False)
        while not group.describe_group("scale").converged:
            time.sleep(0.01)
        start = time.perf_counter()
        group.commit_group(spec("scale", 5), False)
        while not group.describe_group("scale").converged:
            time.sleep(0.01)
        print(f"scale 3 -> 5: converged {time.perf_counter() - start:.2f} s after the "
              f"commit (poll {stack.env['INFRAKIT_GROUP_POLL']} s)")
        group.destroy_group("scale")


if __name__ == "__main__":
    main()
