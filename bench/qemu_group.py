"""The qemu instance plugin under the group controller, with the test's guest (the Debian
kernel, uncompressed, and a busybox initramfs: see tests/qemu_guest.py) serving HTTP behind
the vanilla flavor's probe: the time from commit to healthy for one VM and for a group of
3; the resident memory of an idle 128 MB VM; the time to replace a VM killed with SIGKILL;
and the plugin's own work per provision (the time before qemu is exec'd), measured on the
plugin class in this process, for a direct kernel boot and for a Disk (overlay and seed),
after the one-time KVM probe, which is timed apart."""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import plugin_stack, wait
from infrakit.plugins.instance.qemu import QemuInstancePlugin
from infrakit.plugins.instance.qemu_launch import kvm_problem
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import GroupAPI, InstanceAPI
from infrakit.spi.types import Spec
from tests.qemu_guest import APPEND, build_guest

INIT = ["mkdir -p /www", "echo ok > /www/index.html", "httpd -p 8080 -h /www"]


def vm(guest: tuple[Path, Path]) -> dict[str, Any]:
    return {"Kernel": str(guest[0]), "Initrd": str(guest[1]), "Append": APPEND,
            "MemoryMB": 128, "Ports": {"http": 8080}, "StopGrace": 5}


def spec(gid: str, size: int, guest: tuple[Path, Path]) -> GroupSpec:
    return GroupSpec(id=gid, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-qemu", "Properties": vm(guest)},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {
            "Init": INIT, "Health": {"HTTP": "http://127.0.0.1:{{ .Properties.Ports.http }}/",
                                     "Timeout": 1}}},
        "MaxParallel": size, "StartupGrace": 60, "HealthGrace": 30})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def converge(group: GroupAPI, gid: str, size: int, guest: tuple[Path, Path]) -> float:
    start = time.perf_counter()
    group.commit_group(spec(gid, size, guest), False)
    wait(lambda: group.describe_group(gid).converged, 300)
    return time.perf_counter() - start


def replacements(group: GroupAPI, inst: InstanceAPI, kills: int) -> list[float]:
    times = []
    for _ in range(kills):
        before = {d.id: int(d.properties["PID"])
                  for d in inst.describe_instances({"infrakit.group": "three"}, True)}
        victim = sorted(before)[0]
        os.kill(before[victim], signal.SIGKILL)
        killed = time.perf_counter()
        wait(lambda: victim not in {d.id for d in inst.describe_instances({}, False)}  # noqa: B023
             and group.describe_group("three").converged, 300)
        times.append(time.perf_counter() - killed)
    return times


def overhead(guest: tuple[Path, Path], runs: int, where: Path) -> dict[str, list[float]]:
    """Milliseconds from the call of provision to the exec of qemu, per boot style."""
    plugin = QemuInstancePlugin(where / "in-process")
    launch = plugin._launch
    marks: list[float] = []

    def timed(*args: Any) -> int:
        marks.append(time.perf_counter())
        return launch(*args)

    plugin._launch = timed  # type: ignore[method-assign, assignment]
    base = where / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    styles = {"kernel": {**vm(guest), "StopGrace": 0},
              "disk": {**vm(guest), "Disk": str(base), "StopGrace": 0}}
    found: dict[str, list[float]] = {}
    for style, props in styles.items():
        for _ in range(runs):
            start = time.perf_counter()
            iid = plugin.provision(Spec(properties=props, init="echo hi"))
            found.setdefault(style, []).append((marks[-1] - start) * 1000)
            plugin.destroy(iid)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ikb-guest") as scratch:
        guest = build_guest(Path(scratch))
        start = time.perf_counter()
        problem = kvm_problem()  # once per plugin process, before its first VM
        print(f"the KVM probe: {(time.perf_counter() - start) * 1000:.0f} ms, "
              f"{'KVM works' if problem is None else 'TCG: ' + problem}")
        for style, ms in overhead(guest, args.runs, Path(scratch)).items():
            print(f"plugin's work before qemu is exec'd ({style}): median "
                  f"{statistics.median(ms):.0f} ms, min {min(ms):.0f}, max {max(ms):.0f} "
                  f"over {len(ms)} provisions")
        with plugin_stack("instance-qemu", "flavor-vanilla", "group", poll=args.poll) as st, \
                RPCClient(st.socket("group"), timeout=300) as g, \
                RPCClient(st.socket("instance-qemu"), timeout=60) as i:
            group, inst = GroupClient(g), InstanceClient(i)
            print(f"1 VM: commit to healthy {converge(group, 'one', 1, guest):.1f} s")
            group.destroy_group("one")
            print(f"3 VMs: commit to healthy {converge(group, 'three', 3, guest):.1f} s")
            time.sleep(20)  # idle: the guests have booted and settled
            rss = [rss_mb(int(d.properties["PID"]))
                   for d in inst.describe_instances({"infrakit.group": "three"}, True)]
            print(f"RSS of an idle 128 MB VM: {', '.join(f'{r:.0f}' for r in rss)} MB")
            times = replacements(group, inst, args.kills)
            print(f"a killed VM replaced by a healthy one: median {statistics.median(times):.1f}"
                  f" s, min {min(times):.1f}, max {max(times):.1f} over {len(times)} kills")
            group.destroy_group("three")


if __name__ == "__main__":
    main()
