"""What the manager's alerts cost its event loop: the CPU time of one evaluation (reading
every group's conditions, tracking them, queueing what is to be sent), which runs once a
second while the manager leads and sends to webhooks.

The groups are real controllers in this process, not started, put in a state by hand:
either converged with nothing wrong, or in every condition at once (breaker open, update
halted, crash looping, a plugin down, not converged), the worst case. The first
evaluation after the conditions appear queues one notification per alert name and
group; the next ones only re-read the conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from infrakit.manager.alerting import Alerting
from infrakit.manager.alerts import Holds
from infrakit.plugins.group.controller import GroupController
from infrakit.plugins.group.plugin import GroupPlugin
from infrakit.plugins.group.reach import Down
from infrakit.plugins.group.spec import parse_group
from infrakit.spi import GroupSpec
from infrakit.spi.calls import AsyncFlavorAPI, AsyncInstanceAPI
from infrakit.store.sqlite import SQLiteStore


class _NoPlugins:
    """The controllers are never started: nothing calls a plugin."""

    def instance(self, name: str) -> AsyncInstanceAPI:
        raise AssertionError(name)

    def flavor(self, name: str) -> AsyncFlavorAPI:
        raise AssertionError(name)

    async def close(self) -> None:
        pass


def _groups(n: int, troubled: bool, directory: Path) -> GroupPlugin:
    store = SQLiteStore(directory / "groups.db")
    plugin = GroupPlugin(store, _NoPlugins(), 5.0)
    for i in range(n):
        spec = GroupSpec(id=f"g{i}", properties={
            "Allocation": {"Size": 100},
            "Instance": {"Plugin": "instance-process", "Properties": {}},
            "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})
        c = GroupController(spec.id, parse_group(spec), store, plugin.plugins, 5.0)
        c.status.members, c.status.converged = 100, not troubled
        if troubled:
            c.status.breaker_open, c.status.unhealthy = True, 50
            c.rollout.halted = "3 members of the new config failed (last: proc-9 exited " \
                               "with status 1 after 0.1s (failed launch))"
            for _ in range(3):
                c.backoff.failed(time.time(), "proc-1 exited with status 2 after 0.1s")
        plugin._controllers[spec.id] = c
    if troubled:
        plugin.reach.down["flavor-vanilla"] = Down(
            "no plugin named 'flavor-vanilla' is running", time.time())
    return plugin


async def measure(n: int, troubled: bool, rounds: int) -> tuple[float, float]:
    """CPU seconds of the first evaluation, and the mean of the next ``rounds``."""
    with tempfile.TemporaryDirectory() as directory:
        alerting = Alerting(("http://127.0.0.1:9/",), Holds(0.0, 0.0), 14400)
        # the sender is started but its queue is what is measured, not the POSTs
        await alerting.sender.start()
        alerting._groups = _groups(n, troubled, Path(directory))
        try:
            start = time.process_time()
            alerting.evaluate(time.time())
            first = time.process_time() - start
            start = time.process_time()
            for _ in range(rounds):
                alerting.evaluate(time.time())
            return first, (time.process_time() - start) / rounds
        finally:
            await alerting.sender.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the dropped notifications past the queue's bound
    for n in args.groups:
        for troubled in (False, True):
            first, each = asyncio.run(measure(n, troubled, args.rounds))
            what = "every condition" if troubled else "converged"
            print(f"{n} groups, {what}: first evaluation {first * 1000:.2f} ms CPU, "
                  f"then {each * 1000:.2f} ms each (once a second)")


if __name__ == "__main__":
    main()
