"""The instance-qemu plugin on its real socket, with real VMs (on TCG where KVM does not
work): the guest is the Debian kernel with a busybox initramfs built by the test
(:mod:`tests.qemu_guest`). A group of three VMs converges, heals, rolls a change of
MemoryMB, outlives a restart of the plugin and is destroyed without a trace; a VM with a
Disk gets its Init as NoCloud data; bad input is refused, naming the field."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import GroupAPI, InstanceAPI
from infrakit.spi.types import Spec
from tests.conftest import Processes, StartPlugin
from tests.helpers import error_of, require_engine, stop_process, wait_until
from tests.qemu_guest import APPEND, build_guest, kernel_problem


def _qemu_problem() -> str | None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed: install qemu-system-x86 and qemu-utils "
                    "(scripts/install-system-deps.sh)")
    return kernel_problem()


@pytest.fixture(scope="module")
def guest() -> Iterator[tuple[Path, Path]]:
    """(kernel, initramfs), built once for the module."""
    require_engine(_qemu_problem())
    where = Path(tempfile.mkdtemp(prefix="ik-guest", dir="/tmp"))
    try:
        yield build_guest(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _vm_properties(guest: tuple[Path, Path], memory: int = 128) -> dict[str, Any]:
    kernel, initrd = guest
    return {"Kernel": str(kernel), "Initrd": str(initrd), "Append": APPEND,
            "MemoryMB": memory, "Ports": {"http": 8080}, "StopGrace": 5}


WEB_INIT = ["mkdir -p /www", "echo \"$(hostname) $(cat /proc/meminfo | head -1)\" "
            "> /www/index.html", "httpd -p 8080 -h /www"]


def _group_spec(guest: tuple[Path, Path], memory: int) -> GroupSpec:
    return GroupSpec(id="vms", properties={
        "Allocation": {"Size": 3},
        "Instance": {"Plugin": "instance-qemu", "Properties": _vm_properties(guest, memory)},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {
            "Init": WEB_INIT,
            "Health": {"HTTP": "http://127.0.0.1:{{ .Properties.Ports.http }}/",
                       "Timeout": 1}}},
        "MaxParallel": 3, "StartupGrace": 60, "HealthGrace": 30})


def _qemu_pids(home: Path) -> list[int]:
    """The live QEMU processes whose VM directory lies under ``home``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X") and any(
                v.startswith(b"INFRAKIT_INSTANCE_DIR=" + os.fsencode(home)) for v in environ):
            found.append(int(entry.name))
    return found


def _members(inst: InstanceAPI) -> dict[str, dict[str, Any]]:
    return {d.id: d.properties for d in inst.describe_instances({"infrakit.group": "vms"}, True)}


@pytest.mark.timeout(600)
def test_a_group_of_three_vms(guest: tuple[Path, Path], home: Path, procs: Processes,
                              start_plugin: StartPlugin, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.5")
    qemu = start_plugin("instance-qemu")
    start_plugin("flavor-vanilla")
    group_plugin = start_plugin("group")
    with RPCClient(group_plugin.path, timeout=120) as g, \
            RPCClient(qemu.path, timeout=60) as i:
        group, inst = GroupClient(g), InstanceClient(i)
        group.commit_group(_group_spec(guest, 128), False)
        wait_until(lambda: group.describe_group("vms").converged, 120, 0.2,
                   "3 VMs healthy")
        first = _members(inst)
        assert len(first) == 3 and all(p["State"] == "running" for p in first.values())
        port = next(iter(first.values()))["Ports"]["http"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            assert b"MemTotal" in answer.read()  # the Init ran in the guest

        victim = sorted(first)[0]
        os.kill(first[victim]["PID"], signal.SIGKILL)  # a qemu this test's plugin started
        wait_until(lambda: victim not in _members(inst)
                   and group.describe_group("vms").converged, 120, 0.2, "the VM replaced")
        _ended_keeps_only_its_console(inst, victim,
                                      Path(first[victim]["Console"]).parent)

        _rolls_memory(group, inst, guest)
        _survives_a_restart(procs, qemu, start_plugin, inst, group)
        group.destroy_group("vms")
    assert not _qemu_pids(home)
    state = home / "instance-qemu" / "instance-qemu"
    assert not list(state.glob("qemu-*.json")), "a record was left behind"
    for directory in state.glob("qemu-*"):
        # only the console of a VM that ended by itself, kept for a post-mortem
        assert os.listdir(directory) == ["console.log"], directory


def _ended_keeps_only_its_console(inst: InstanceAPI, victim: str, directory: Path) -> None:
    ended = [e for e in inst.describe_ended({}) if e.id == victim]
    assert ended and "is gone: killed" in ended[0].reason
    assert os.listdir(directory) == ["console.log"]  # its overlay and seed are gone


def _rolls_memory(group: GroupAPI, inst: InstanceAPI, guest: tuple[Path, Path]) -> None:
    """A change of MemoryMB replaces the members one surge at a time: never more than
    Size + MaxSurge (4) VMs at once."""
    group.commit_group(_group_spec(guest, 160), False)
    most = 0

    def rolled() -> bool:
        nonlocal most
        members = _members(inst)
        most = max(most, len(members))
        return (len(members) == 3 and all(p["MemoryMB"] == 160 for p in members.values())
                and group.describe_group("vms").converged)

    wait_until(rolled, 300, 0.2, "the rolling update to MemoryMB 160")
    assert most == 4


def _survives_a_restart(procs: Processes, qemu: Any, start_plugin: StartPlugin,
                        inst: InstanceAPI, group: GroupAPI) -> None:
    """The VMs outlive their plugin; the plugin started again describes the same VMs, but
    not one that died while it was down, which it reports as ended (and the group replaces).
    It also removes the console of the VM killed before: what ended is not remembered
    across a restart."""
    before = _members(inst)
    stop_process(qemu.proc)
    victim = sorted(before)[0]
    os.kill(before[victim]["PID"], signal.SIGKILL)
    start_plugin("instance-qemu")
    after = _members(inst)
    assert {k: v["PID"] for k, v in after.items()} == \
        {k: v["PID"] for k, v in before.items() if k != victim}
    ended = [e for e in inst.describe_ended({}) if e.id == victim]
    assert ended and "is gone: killed" in ended[0].reason
    wait_until(lambda: group.describe_group("vms").converged and len(_members(inst)) == 3,
               120, 0.2, "the VM that died while the plugin was down replaced")


def test_a_disk_gets_the_init_as_nocloud_data(guest: tuple[Path, Path], home: Path,
                                              start_plugin: StartPlugin) -> None:
    """The base image (a blank raw disk, made here) is booted through an overlay and never
    written; the guest finds the seed labelled ``cidata`` and runs its user-data, which
    serves the meta-data and writes to the guest's first disk (the overlay)."""
    base = home / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "8M"], check=True)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    init = ("#!/bin/sh\nmkdir -p /www; cp /tmp/meta-data /www/index.html\n"
            "echo overlay-written | dd of=/dev/vda conv=notrunc 2>/dev/null; sync\n"
            "httpd -p 8080 -h /www\n")
    props = {**_vm_properties(guest), "Disk": str(base), "Disks": [{"SizeMB": 16}]}
    plugin = start_plugin("instance-qemu")
    with RPCClient(plugin.path, timeout=60) as conn:
        inst = InstanceClient(conn)
        iid = inst.provision(Spec(properties=props, init=init, logical_id="web-1"))
        [vm] = inst.describe_instances({}, True)
        url = f"http://127.0.0.1:{vm.properties['Ports']['http']}/"

        def served() -> bytes:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    return bytes(answer.read())
            except OSError:
                return b""

        meta = wait_until(served, 90, 0.2, "the guest to serve its meta-data")
        assert meta == f"instance-id: {iid}\nlocal-hostname: web-1\n".encode()
        directory = Path(vm.properties["Console"]).parent
        assert {"disk.qcow2", "seed.iso", "disk1.qcow2"} <= set(os.listdir(directory))
        console = inst.logs(iid, "", None, False).data  # the serial console
        assert "infrakit: Init from the NoCloud seed on /dev/vdb" in console
        inst.label(iid, {"role": "web"})
        assert [d.id for d in inst.describe_instances({"role": "web"}, False)] == [iid]
        inst.destroy(iid)
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    assert not directory.exists() and not _qemu_pids(home)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_bad_input_names_the_field_and_creates_nothing(guest: tuple[Path, Path], home: Path,
                                                       start_plugin: StartPlugin,
                                                       taken_port: int) -> None:
    good = _vm_properties(guest)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "Kernel": str(home / "no-such-kernel")},
         f"Properties.Kernel: '{home / 'no-such-kernel'}' does not exist"),
        ({"Disk": str(home / "no-such.qcow2")}, "Properties.Disk: "),
        ({**good, "MemoryMB": 1 << 30},
         "Properties.MemoryMB: 1073741824 is more than the host has"),
        ({**good, "Ports": {"http": {"Guest": 80, "Host": taken_port}}},
         f"Properties.Ports.http.Host: port {taken_port} on 127.0.0.1 is taken"),
        ({**good, "Network": "vde"}, "Properties.Network: 'vde' is not a network"),
        ({**good, "Ports": None, "Network": "bridge:nosuchbr0"},
         "Properties.Network: there is no bridge 'nosuchbr0'"),
        ({**good, "QemuArgs": ["-drive", "file=/etc/shadow"]},
         "Properties.QemuArgs[0]: '-drive' is not an option the plugin allows"),
        ({**good, "QemuArgs": ["-device", "vfio-pci,host=01:00.0"]},
         "Properties.QemuArgs[1]: 'vfio-pci,host=01:00.0' is not a value"),
    ]
    from infrakit.plugins.instance.qemu_launch import kvm_problem

    if kvm_problem() is not None:
        cases.append(({**good, "Accel": "kvm"},
                      "Properties.Accel: kvm was asked for, but KVM does not work"))
    plugin = start_plugin("instance-qemu")
    for props, reason in cases:
        for method, params in (("Instance.Validate", {"Properties": props}),
                               ("Instance.Provision", {"Spec": {"Properties": props}})):
            message = error_of(plugin.path, method, params)["message"]
            assert message.startswith(reason), (method, message)
    state = home / "instance-qemu" / "instance-qemu"
    assert not [p for p in state.iterdir() if p.name.startswith("qemu-")]
    assert not _qemu_pids(home)
