"""A chaos soak: a group of 50 process instances (busybox web servers behind an HTTP health
check) under random faults for a while, then checked.

Faults: ``kill -9`` of a member, of the instance plugin and of the group plugin (each
plugin restarted after a random pause), rolling updates committed now and then, and
provider errors: the group talks to its instances through ``bench.faulty_instance``,
which fails a share of the calls (``--error-rate``).

Throughout, a sampler counts the member processes that exist (from /proc, not from what
any plugin says) every 20 ms; no sample may exceed Size + MaxSurge. At the end the faults
stop, and the group must come back to exactly Size healthy members of the last config,
with no process left that no member owns, and with the committed spec intact. Last, the
group is destroyed through the group plugin (whether the soak passed or not), and no member
process may be left.

The group plugin's store is measured on disk when the group first converges and again when
it has reconverged after the faults: the file, the bytes of each table (the events, the
usage) and the events kept per group, which the store bounds at ``EVENTS_KEPT``; and the
member time the group counted over the soak is set beside the members' wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stack import Stack, cleaning_up, instance_processes, plugin_stack
from bench.store_size import store_size
from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec, PluginError
from infrakit.spi.group import GroupStatus
from tests import leaks

GID = "soak"
MAX_DURATION = 600.0


def spec(size: int, version: int) -> GroupSpec:
    web = ("busybox httpd -f -p 127.0.0.1:$PORT_HTTP" if shutil.which("busybox") else
           f"{sys.executable} -m http.server --bind 127.0.0.1 $PORT_HTTP")
    return GroupSpec(id=GID, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "faulty", "Properties": {
            "Command": web, "Ports": ["http"], "StopGrace": 1}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {
            "Init": [f"echo version {version} > index.html"],
            "Health": {"HTTP": "http://127.0.0.1:{{ .Properties.Ports.http }}/",
                       "Timeout": 1}}},
        "MaxParallel": 16, "MaxSurge": 1, "StartupGrace": 10, "HealthGrace": 2,
        "ProvisionDeadline": 60})


def member_processes(home: Path) -> dict[int, str]:
    """Living processes started for an instance of this soak: pid -> instance ID."""
    mine = f"INFRAKIT_HOME={home}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or mine not in environ:
            continue
        for var in environ:
            if var.startswith(b"INFRAKIT_INSTANCE_ID="):
                found[int(entry.name)] = var.split(b"=", 1)[1].decode()
    return found


class Sampler(threading.Thread):
    """The most member processes seen at once."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home = home
        self.peak = 0
        self.samples = 0
        self.seen: set[str] = set()
        """Every instance ID that ever had a process."""
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            members = set(member_processes(self.home).values())
            self.peak = max(self.peak, len(members))
            self.seen |= members
            self.samples += 1
            self.stopped.wait(0.02)


def call(sock: Path, fn: Any, timeout: float = 10) -> Any:
    """One call on a fresh connection; None when the plugin is down (it may be killed) or
    answers an error (an injected fault)."""
    try:
        with RPCClient(sock, timeout=timeout) as conn:
            return fn(conn)
    except (OSError, PluginUnreachable, RPCError, PluginError):
        return None


def healthy_members(stack: Stack) -> int | None:
    status: GroupStatus | None = call(stack.socket("group"),
                                      lambda c: GroupClient(c).describe_status(GID))
    if status is None or not status.converged:
        return None
    return sum(m.health == "healthy" and m.current for m in status.members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=180, help="seconds of faults")
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--error-rate", type=float, default=0.1,
                        help="share of the instance calls that fail")
    parser.add_argument("--fault-every", type=float, default=2.0,
                        help="mean seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION)
    rng = random.Random(args.seed)
    # the soak restarts the plugins it kills itself, after a random pause, as an operator
    # would: no supervisor may restart them first
    with plugin_stack("instance-process", "flavor-vanilla", "group", poll=0.5,
                      supervise=False) as stack:
        rate_file = stack.home / "error-rate"
        rate_file.write_text("0")
        logs = stack.home / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "faulty.log", "ab") as out:
            faulty = subprocess.Popen(
                [sys.executable, "-m", "bench.faulty_instance", "faulty", "instance-process",
                 str(rate_file)], env=stack.env, stdout=out, stderr=out,
                cwd=Path(__file__).resolve().parent.parent)
        try:
            # the group's members are processes that outlive every plugin: destroy the
            # group while the plugins it goes through (the faulty one included) still run
            with cleaning_up(lambda: destroy(stack, rate_file)):
                soak(args, duration, rng, stack, rate_file)
        finally:
            faulty.send_signal(signal.SIGTERM)
            faulty.wait(10)


def destroy(stack: Stack, rate_file: Path) -> list[str]:
    """Destroy the group through the group plugin (``infrakit group destroy``), with no
    injected faults and with the plugins a fault may have killed started again, then check
    that none of its member processes is left. Returns what went wrong: the members left
    (killed now) and the destroy's error."""
    infrakit = str(Path(sys.executable).parent / "infrakit")
    rate_file.write_text("0")
    for name in ("instance-process", "group"):  # "already running" is no error here
        subprocess.run([infrakit, "plugin", "start", "--no-supervise", name], env=stack.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = ""
    deadline = time.monotonic() + 120
    while True:
        specs = call(stack.socket("group"), lambda c: GroupClient(c).inspect_groups())
        if specs is not None and GID not in {s.id for s in specs}:
            break  # never committed (the soak failed before), or destroyed
        done = subprocess.run([infrakit, "group", "--timeout", "120", "destroy", GID],
                              env=stack.env, capture_output=True, text=True)
        failed = "" if done.returncode == 0 else f"group destroy {GID}: {done.stderr.strip()}"
        if not failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    left = instance_processes(stack.home)
    leaks.kill(left)
    problems = [leaks.report(left, "the group's destroy")] if left else []
    problems += [failed] if failed else []
    if not problems:
        print(f"group {GID} destroyed: no member process left", flush=True)
    return problems


def soak(args: argparse.Namespace, duration: float, rng: random.Random, stack: Stack,
         rate_file: Path) -> None:
    infrakit = str(Path(sys.executable).parent / "infrakit")
    group_sock = stack.socket("group")
    deadline = time.monotonic() + 30
    while call(stack.socket("faulty"), lambda c: InstanceClient(c).describe_instances(
            {}, False)) is None:
        if time.monotonic() > deadline:
            raise SystemExit("the faulty instance plugin did not start")
        time.sleep(0.05)
    version = 1
    start = time.monotonic()
    commit(group_sock, spec(args.size, version))
    wait_converged(stack, args.size, 300)
    print(f"{args.size} members converged in {time.monotonic() - start:.1f} s", flush=True)
    print_store(stack, "before the faults")
    counted_from, used_before = time.monotonic(), member_seconds(group_sock)

    sampler = Sampler(stack.home)
    sampler.start()
    rate_file.write_text(str(args.error_rate))
    faults: Counter[str] = Counter()
    end = time.monotonic() + duration
    next_update = time.monotonic() + duration / 4
    while time.monotonic() < end:
        time.sleep(rng.expovariate(1 / args.fault_every))
        if time.monotonic() >= next_update:
            version += 1
            commit(group_sock, spec(args.size, version))
            faults["rolling update committed"] += 1
            next_update += duration / 4
            continue
        kind = rng.choices(["member", "instance plugin", "group plugin"], [8, 1, 1])[0]
        if kind == "member":
            members = member_processes(stack.home)
            if members:
                os.kill(rng.choice(sorted(members)), signal.SIGKILL)
                faults["kill -9 of a member"] += 1
            continue
        name = "instance-process" if kind == "instance plugin" else "group"
        try:
            os.kill(stack.pid(name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
        faults[f"kill -9 of the {kind}"] += 1
        time.sleep(rng.uniform(0, 1.0))
        subprocess.run([infrakit, "plugin", "start", "--no-supervise", name], env=stack.env,
                       stdout=subprocess.DEVNULL, check=True)

    rate_file.write_text("0")
    stopped = time.monotonic()
    wait_converged(stack, args.size, 300)
    reconverged = time.monotonic() - stopped
    sampler.stopped.set()
    sampler.join()
    described = call(stack.socket("instance-process"), lambda c: {
        d.id for d in InstanceClient(c).describe_instances({"infrakit.group": GID}, False)})
    if described is None:
        raise SystemExit("the instance plugin does not describe the members")
    processes = member_processes(stack.home)
    orphans = {pid: iid for pid, iid in processes.items() if iid not in described}
    stored = call(group_sock, lambda c: GroupClient(c).inspect_groups())
    intact = [(s.id, s.properties) for s in stored] == [
        (GID, json.loads(json.dumps(spec(args.size, version).properties)))]
    print(f"faults over {duration:.0f} s (error rate {args.error_rate:g}, one fault every "
          f"{args.fault_every:g} s on average):")
    for what, count in sorted(faults.items()):
        print(f"  {what}: {count}")
    print(f"members made during the soak (replacements and updates): "
          f"{len(sampler.seen) - args.size}")
    print(f"reconverged {reconverged:.1f} s after the faults stopped: "
          f"{healthy_members(stack)} healthy members of {args.size}, "
          f"{len(set(processes.values()))} members with processes ({len(processes)} "
          f"processes), {len(orphans)} orphans, spec intact: {intact}")
    print(f"largest count of members with processes seen: {sampler.peak} (Size + MaxSurge = "
          f"{args.size + 1}; over-size {max(0, sampler.peak - args.size - 1)}) over "
          f"{sampler.samples} samples", flush=True)
    print_store(stack, "after the faults")
    used, lived = member_seconds(group_sock) - used_before, time.monotonic() - counted_from
    print(f"member time counted (infrakit group usage): {used:.0f} s over {lived:.0f} s of "
          f"{args.size} members ({used / (lived * args.size):.1%} of {args.size} x {lived:.0f} "
          f"s; the rest: the group plugin's downtime, what its kill -9s had not written, a "
          f"member's first and last poll)", flush=True)
    if orphans or not intact or sampler.peak > args.size + 1:
        raise SystemExit("the soak failed")


def member_seconds(sock: Path) -> float:
    """The soak group's usage as the group plugin answers it (again until it answers:
    the faults are over, but the plugin may have been killed by the last)."""
    deadline = time.monotonic() + 60
    while True:
        found = call(sock, lambda c: GroupClient(c).usage(GID, None))
        if found is not None:
            return float(sum(r.seconds for r in found))
        if time.monotonic() > deadline:
            raise SystemExit("no usage answered for 60 s")
        time.sleep(0.2)


def print_store(stack: Stack, when: str) -> None:
    """The group plugin's store on disk (``infrakit plugin start group`` keeps it in
    ``$INFRAKIT_HOME/group/group/groups.db``)."""
    print(f"group store {when}:")
    for line in store_size(stack.home / "group" / "group" / "groups.db").lines():
        print(f"  {line}", flush=True)


def commit(sock: Path, new: GroupSpec) -> None:
    """Commit, again until it is answered: the group plugin may be down for a moment."""
    deadline = time.monotonic() + 60
    while call(sock, lambda c: GroupClient(c).commit_group(new, False), 30) is None:
        if time.monotonic() > deadline:
            raise SystemExit("no commit answered for 60 s")
        time.sleep(0.2)


def wait_converged(stack: Stack, size: int, timeout: float) -> None:
    """Wait for exactly ``size`` healthy members; every 10 s, say what the group waits on."""
    start = time.monotonic()
    said = start
    while (healthy_members(stack) != size
           or len(set(member_processes(stack.home).values())) != size):
        now = time.monotonic()
        if now > start + timeout:
            raise SystemExit(f"not converged within {timeout:g} s")
        if now - said >= 10:
            said = now
            status: GroupStatus | None = call(stack.socket("group"),
                                              lambda c: GroupClient(c).describe_status(GID))
            if status is not None:
                print(f"  still converging after {now - start:.0f} s: "
                      f"{len(status.members)} members, in flight "
                      f"{[(o.op, o.instance, o.expires_in) for o in status.in_flight][:4]}, "
                      f"errors {status.errors[:2]}", flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
