"""What the instance-process plugin leaves on disk of instances that are over: members of
a few groups that crash at once and members that are destroyed, in rounds, with a restart
of the plugin between rounds, as an afternoon of crash loops and rolling updates does.

Prints, after each round, the working directories left in the plugin's state directory
and their size, and how many of the ended members' logs `logs --previous` still serves.
``python -m bench.ended_files --rounds 3 --per-group 20 --groups 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from bench.stack import Stack, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import InstanceClient
from infrakit.spi import Spec
from infrakit.spi.calls import InstanceAPI
from infrakit.spi.errors import PluginError

NAME = "instance-process"
CRASH = "echo crashed on purpose; exit 2"


def one_round(inst: InstanceAPI, groups: int, per_group: int) -> list[str]:
    """In each group, ``per_group`` members that crash and as many that are destroyed;
    returns the IDs of those that crashed."""
    crashed, running = [], []
    for g in range(groups):
        tags = {"infrakit.group": f"g{g}"}
        for _ in range(per_group):
            crashed.append(inst.provision(Spec(properties={"Command": CRASH}, tags=tags)))
            running.append(inst.provision(Spec(properties={"Command": "sleep 600",
                                                           "StopGrace": 1}, tags=tags)))
    for iid in running:
        inst.destroy(iid)
    wait(lambda: {e.id for e in inst.describe_ended({})} >= set(crashed), 60)
    return crashed


def on_disk(stack: Stack) -> tuple[int, int]:
    """The working directories in the plugin's state directory, and their bytes."""
    state = stack.home / NAME / NAME
    dirs = [p for p in state.iterdir() if p.is_dir() and p.name.startswith("proc-")]
    size = sum(f.stat().st_size for d in dirs for f in d.rglob("*") if f.is_file())
    return len(dirs), size


def readable(inst: InstanceAPI, ids: list[str]) -> int:
    n = 0
    for iid in ids:
        with contextlib.suppress(PluginError):  # no longer kept
            n += bool(inst.logs(iid, "", None, True).data)
    return n


def restart(stack: Stack) -> None:
    infrakit = str(Path(sys.executable).parent / "infrakit")
    for verb in ("stop", "start"):
        subprocess.run([infrakit, "plugin", verb, NAME], env=stack.env, check=True,
                       stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--per-group", type=int, default=20)
    args = parser.parse_args()
    keep = os.environ.get("INFRAKIT_KEEP_ENDED", "(default)")
    print(f"INFRAKIT_KEEP_ENDED={keep}; per round: {args.groups} groups x "
          f"{args.per_group} crashed + {args.per_group} destroyed")
    with plugin_stack(NAME, poll=5, supervise=False) as stack:
        crashed: list[str] = []
        for n in range(1, args.rounds + 1):
            with RPCClient(stack.socket(NAME), timeout=60) as conn:
                inst = InstanceClient(conn)
                crashed += one_round(inst, args.groups, args.per_group)
                dirs, size = on_disk(stack)
                print(f"round {n}: {dirs} working directories, {size / 1024:.0f} KiB; "
                      f"logs --previous serves {readable(inst, crashed)} of the "
                      f"{len(crashed)} crashed so far")
            restart(stack)
        dirs, size = on_disk(stack)
        print(f"after the last restart: {dirs} working directories, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
