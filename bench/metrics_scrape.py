"""What one scrape of a group plugin's ``/metrics`` costs with 100 groups of 100 members
(10,000 in all), on its socket and on its ``--metrics-listen`` TCP port: the median and the
95th percentile of ``--scrapes`` scrapes each, one after the other, once every group has
converged and its passes go on as usual (every 5 s, by default); and the CPU the group
process spends per scrape, beyond what its passes take."""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from tests.helpers import http_request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_socket(sock: Path) -> tuple[float, bytes]:
    start = time.perf_counter()
    answer = http_request(sock, method="GET", path="/metrics", headers={})
    assert answer.status == 200, answer.body[:200]
    return time.perf_counter() - start, answer.body


def over_tcp(port: int) -> tuple[float, bytes]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    assert answer.status == 200, body[:200]
    return time.perf_counter() - start, body


def summary(where: str, times: list[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (f"{where}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
            f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} scrapes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--members", type=int, default=100, help="per group")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--poll", type=float, default=5.0,
                        help="the groups' poll interval (5 s by default, as a plugin's)")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    port = free_port()
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=args.poll,
                      parent=args.parent,
                      options={"group": ["--metrics-listen", str(port)]}) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as conn:
        group = GroupClient(conn)
        ids = [f"g{i:03d}" for i in range(args.groups)]
        for gid in ids:
            group.commit_group(spec(gid, args.members, 100), False)
        started = time.monotonic()
        while not all(group.describe_group(gid).converged for gid in ids):
            time.sleep(1)
        print(f"{args.groups} groups of {args.members} converged in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        time.sleep(2 * args.poll)
        pid = stack.pid("group")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2 * args.poll)  # the CPU the passes take, without scrapes
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        sock_times, body = zip(*(over_socket(stack.socket("group"))
                                 for _ in range(args.scrapes)), strict=True)
        tcp_times, _ = zip(*(over_tcp(port) for _ in range(args.scrapes)), strict=True)
        cpu2, t2 = cpu_seconds(pid), time.monotonic()
        at_rest = (cpu1 - cpu0) / (t1 - t0)
        print(f"group process CPU per scrape: "
              f"{(cpu2 - cpu1 - at_rest * (t2 - t1)) / (2 * args.scrapes) * 1e3:.1f} ms "
              f"(the passes' own {at_rest * 1e3:.0f} ms/s taken out)")
        text = body[-1].decode()
        samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        healthy = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("infrakit_group_members{") and 'state="healthy"' in line)
        print(f"page: {len(body[-1]) / 1024:.0f} KiB, {samples} samples, "
              f"{healthy:.0f} healthy members in all")
        print(summary("socket", list(sock_times)))
        print(summary(f"TCP port {port}", list(tcp_times)))
        for gid in ids:
            group.destroy_group(gid)


if __name__ == "__main__":
    main()
