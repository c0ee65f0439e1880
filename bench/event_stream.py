"""What the event stream costs the group plugin, and how soon a subscriber hears of a change.

1. Latency: a subscriber on ``group/`` reads the stream while the group is committed again
   and again (each commit publishes ``committed``); the time from sending the commit to the
   event's arrival.
2. Cost: a group of ``--size`` members converges from nothing (one ``provisioned`` event per
   member) with no subscriber, then (a new group) with ``--subscribers`` readers; the
   group process's CPU seconds over each convergence, and the events each reader got.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import threading
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.calls import GroupAPI


class Reader:
    """One subscriber, reading in a thread: each event's arrival time, by its kind."""

    def __init__(self, sock: Path, topic: str) -> None:
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.connect(os.fspath(sock))
        self.conn.sendall(f"GET /events?topic={topic} HTTP/1.1\r\nHost: e\r\n\r\n".encode())
        self.arrivals: list[tuple[float, bytes]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while chunk := self.conn.recv(1 << 16):
            now = time.monotonic()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    kind = line.split(b'"Type": "', 1)[1].split(b'"', 1)[0]
                    self.arrivals.append((now, kind))

    def count(self, kind: bytes) -> int:
        return sum(k == kind for _, k in self.arrivals)

    def more(self, kind: bytes, than: int) -> bool:
        return self.count(kind) > than


def latency(group: GroupAPI, sock: Path, rounds: int) -> list[float]:
    group.commit_group(spec("lat", 1), False)  # the topic exists once the group does
    reader = Reader(sock, "group/lat/")
    time.sleep(0.5)  # the subscription is made when its request is read
    seconds = []
    for i in range(rounds):
        sent, seen = time.monotonic(), reader.count(b"committed")
        group.commit_group(spec("lat", 1 + i % 2), False)
        wait(functools.partial(reader.more, b"committed", seen), 10)
        arrived = [t for t, k in reader.arrivals if k == b"committed"][seen]
        seconds.append(arrived - sent)
    group.destroy_group("lat")
    return seconds


def converge(group: GroupAPI, pid: int, sock: Path, gid: str, size: int,
             subscribers: int) -> tuple[float, float, list[int]]:
    readers = [Reader(sock, "group/") for _ in range(subscribers)]
    time.sleep(0.5)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    group.commit_group(spec(gid, size, 500), False)
    wait(lambda: group.describe_group(gid).converged, 600)
    took, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    time.sleep(1)
    got = [r.count(b"provisioned") for r in readers]
    group.destroy_group(gid)
    return took, cpu, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=1.0,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as conn:
        group, sock, pid = GroupClient(conn), stack.socket("group"), stack.pid("group")
        lat = sorted(latency(group, sock, args.rounds))
        print(f"commit -> 'committed' on the stream: p50 {statistics.median(lat) * 1e3:.1f} "
              f"ms, p95 {lat[int(len(lat) * 0.95) - 1] * 1e3:.1f} ms, max "
              f"{lat[-1] * 1e3:.1f} ms ({len(lat)} commits)")
        for n in (0, args.subscribers):
            took, cpu, got = converge(group, pid, sock, f"burst{n}", args.size, n)
            print(f"{args.size} members converged with {n} subscribers: {took:.1f} s, group "
                  f"CPU {cpu:.2f} s; 'provisioned' events per subscriber: "
                  f"{sorted(set(got)) or '-'}")


if __name__ == "__main__":
    main()
