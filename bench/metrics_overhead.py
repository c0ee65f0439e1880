"""What the group's events and metrics cost its steady pass: the CPU per pass over a large
converged group (as bench/group_steady.py measures it), side by side with a checkout of
the code from before them, in one run.

The sides alternate (this checkout, the others, the others in reverse, this one, ...),
each with its own plugins started by its own ``infrakit``. During each window a scraper GETs
``/metrics`` from the group's socket every ``--scrape`` seconds, as a Prometheus server
would (the older code answers 404 to it, at the cost of a request). The scrapes count in
this checkout's CPU: they are part of having metrics on.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, Stack, cpu_seconds, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from tests.helpers import http_request


@dataclass(frozen=True)
class Run:
    side: str
    ms_per_pass: float
    passes: int
    scrapes: list[float]
    """Seconds each scrape took (this checkout's answer; the other side's 404)."""


class Scraper(threading.Thread):
    """GETs /metrics every ``period`` seconds until stopped."""

    def __init__(self, sock: Path, period: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.period = sock, period
        self.stopped = threading.Event()
        self.times: list[float] = []
        self.statuses: set[int] = set()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            start = time.perf_counter()
            answer = http_request(self.sock, method="GET", path="/metrics", headers={})
            self.times.append(time.perf_counter() - start)
            self.statuses.add(answer.status)


def steady(stack: Stack, side: str, size: int, poll: float, window: float,
           scrape: float) -> Run:
    with RPCClient(stack.socket("group"), timeout=300) as conn:
        group = GroupClient(conn)
        group.commit_group(spec("steady", size, 500), False)
        while not group.describe_group("steady").converged:
            time.sleep(1)
        time.sleep(2 * poll)  # let the passes that resolved the provisions end
        pid = stack.pid("group")
        scraper = Scraper(stack.socket("group"), scrape)
        before = group.describe_status("steady").passes
        cpu0 = cpu_seconds(pid)
        scraper.start()
        time.sleep(window)
        cpu1 = cpu_seconds(pid)
        scraper.stopped.set()
        scraper.join()
        passes = group.describe_status("steady").passes - before
        group.destroy_group("steady")
    print(f"{side}: {passes} passes, {(cpu1 - cpu0) / passes * 1e3:.1f} ms CPU per pass, "
          f"{len(scraper.times)} scrapes answered {sorted(scraper.statuses)}", flush=True)
    return Run(side, (cpu1 - cpu0) / passes * 1e3, passes, scraper.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", action="append", metavar="NAME=CHECKOUT",
                        help="a checkout to compare with, named (its .venv/bin/infrakit is "
                        "used); again for more [default: before=/work/wt-base]")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--poll", type=float, default=1.0, help="the group's poll interval")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of passes")
    parser.add_argument("--scrape", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    sides: dict[str, str | None] = {"with metrics": None}
    for other in args.other or ["before=/work/wt-base"]:
        name, _, checkout = other.partition("=")
        sides[name] = str(Path(checkout) / ".venv" / "bin" / "infrakit")
    order = [side for i in range(args.pairs) for side in
             (list(sides) if i % 2 == 0 else list(reversed(sides)))]
    runs = []
    for side in order:
        with plugin_stack("instance-file", "flavor-vanilla", "group", poll=args.poll,
                          parent=args.parent, infrakit=sides[side]) as stack:
            runs.append(steady(stack, side, args.size, args.poll, args.window, args.scrape))
    for side in sides:
        mine = [r.ms_per_pass for r in runs if r.side == side]
        print(f"{side}: CPU per pass {' / '.join(f'{m:.1f}' for m in mine)} ms, median "
              f"{statistics.median(mine):.1f} ms")
    medians = {s: statistics.median([r.ms_per_pass for r in runs if r.side == s])
               for s in sides}
    for side in list(sides)[1:]:
        print(f"with metrics / {side}: {medians['with metrics'] / medians[side]:.3f}")
    scrapes = [t for r in runs if r.side == "with metrics" for t in r.scrapes]
    print(f"scrapes during the windows: {len(scrapes)}, median "
          f"{statistics.median(scrapes) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
