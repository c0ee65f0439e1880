"""The aws instance plugin under the group controller, against moto's EC2 server behind the
counting proxy of the tests: how long a group of N instances takes to converge, and how
many EC2 calls the controller's passes cost once the group is steady."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.stack import PARENT_HELP, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from tests.moto_engine import aws_environment, ec2_proxy, moto_client, moto_server


def spec(size: int, image: str) -> GroupSpec:
    return GroupSpec(id="bench", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-aws",
                     "Properties": {"ImageId": image, "InstanceType": "t2.micro"}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Init": ["echo hello"]}},
        "MaxParallel": size,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--poll", type=float, default=1.0, help="the group's poll, seconds")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds of steady state over which calls are counted")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    with moto_server() as moto, ec2_proxy(moto.url) as proxy:
        env = aws_environment(proxy.url)
        with plugin_stack("instance-aws", "flavor-vanilla", "group", poll=args.poll,
                          parent=args.parent, extra_env=env) as stack:
            run(stack.socket("group"), proxy.calls, proxy.reset_counts, args, proxy.url)


def run(group_socket: Path, calls: Counter[str], reset: Callable[[], None],
        args: argparse.Namespace, endpoint: str) -> None:
    image = moto_client(endpoint).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    with RPCClient(group_socket, timeout=300) as conn:
        group = GroupClient(conn)
        reset()
        start = time.perf_counter()
        group.commit_group(spec(args.size, image), False)
        while True:
            desc = group.describe_group("bench")
            if desc.converged and len(desc.instances or []) == args.size:
                break
            time.sleep(0.05)
        converged = time.perf_counter() - start
        print(f"size {args.size}: converged in {converged:.2f} s (group poll {args.poll:g} "
              f"s); EC2 calls meanwhile: {dict(calls)}")
        first = group.describe_status("bench").passes
        reset()
        time.sleep(args.window)  # steady: the controller's own passes only
        steady = dict(calls)
        passes = group.describe_status("bench").passes - first
        per_pass = {k: round(v / max(passes, 1), 2) for k, v in steady.items()}
        print(f"steady {args.window:g} s ({passes} passes): EC2 calls {steady}; "
              f"per pass {per_pass}")
        group.destroy_group("bench")


if __name__ == "__main__":
    main()
