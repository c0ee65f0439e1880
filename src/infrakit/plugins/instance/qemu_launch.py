"""What a ``qemu`` instance is made of before its VM starts, and the start itself: the
accelerator (KVM only where a probe VM really runs on it), the copy-on-write overlay of its
base image and its empty disks (``qemu-img``), its NoCloud seed (``pycdlib``), and the
``qemu-system-x86_64`` command line that daemonizes it with a pid file and a QMP socket."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from infrakit.plugins.instance.qemu_props import QemuProperties
from infrakit.spi.errors import PluginError

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
PROBE_SECONDS = 5.0
_PROBE_EXIT = 99
"""The status QEMU exits with when the probe writes 0x31 to its isa-debug-exit port."""
_HOSTNAME = re.compile(r"[^a-z0-9-]+")


def _probe_kernel() -> bytes:
    """A multiboot ELF (32-bit, loaded at 1 MiB) that counts down 100 million times and
    writes to the isa-debug-exit port: on a working accelerator it ends in a fraction of a
    second; where KVM is broken QEMU aborts at once or the guest makes no progress."""
    base = 0x100000
    header = struct.pack("<III", 0x1BADB002, 0, -0x1BADB002 & 0xFFFFFFFF)
    code = (b"\xb9" + struct.pack("<I", 100_000_000) + b"\x49\x75\xfd"  # mov ecx; dec; jnz
            + b"\xb0\x31\xe6\xf4" + b"\xfa\xf4\xeb\xfc")  # out 0xf4, 0x31; cli; hlt; jmp
    size = 96 + len(code)
    elf = (b"\x7fELF\x01\x01\x01" + b"\0" * 9
           + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + 96, 52, 0, 0, 52, 32, 1, 0, 0, 0))
    program = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
    return elf + program + header + code


_kvm_lock = threading.Lock()
_kvm_verdict: list[str | None] = []


def kvm_problem() -> str | None:
    """Why KVM cannot run this plugin's VMs, or None when it can: decided once, by a probe
    VM started with the very ``-accel kvm -cpu host`` the VMs would get (``/dev/kvm`` may
    exist where KVM cannot run a stock guest)."""
    with _kvm_lock:
        if not _kvm_verdict:
            _kvm_verdict.append(_probe_kvm())
        return _kvm_verdict[0]


def _probe_kvm() -> str | None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not usable by this user"
    with tempfile.TemporaryDirectory(prefix="ik-kvm-probe") as where:
        kernel = Path(where, "probe.elf")
        kernel.write_bytes(_probe_kernel())
        try:
            done = subprocess.run(
                [QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "16",
                 "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                 "-kernel", str(kernel), "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            return f"a probe VM on KVM made no progress in {PROBE_SECONDS:g} s"
        except OSError as exc:
            return f"{QEMU} cannot run: {exc.strerror}"
    if done.returncode != _PROBE_EXIT:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return (f"a probe VM on KVM failed (status {done.returncode}"
                + (f": {said[0]}" if said else "") + ")")
    return None


def check_tools() -> None:
    """Refuse to go on without QEMU and qemu-img, saying what to install."""
    for tool, package in ((QEMU, "qemu-system-x86"), (QEMU_IMG, "qemu-utils")):
        if shutil.which(tool) is None:
            raise PluginError(f"Instance: {tool} is not installed on the plugin's host "
                              f"(Debian package {package})")


def choose_accel(wanted: str) -> str:
    """``kvm`` or ``tcg`` for a VM whose ``Accel`` is ``wanted``; refuses ``kvm`` where the
    probe says it does not work."""
    if wanted == "tcg":
        return "tcg"
    problem = kvm_problem()
    if problem is None:
        return "kvm"
    if wanted == "kvm":
        raise PluginError(f"Properties.Accel: kvm was asked for, but KVM does not work on "
                          f"this host: {problem}; use \"auto\" or \"tcg\" (slower)")
    return "tcg"


def image_format(path: str) -> str:
    """The format of a base image, which must be qcow2 or raw."""
    try:
        done = subprocess.run([QEMU_IMG, "info", "--output=json", "-U", path],
                              capture_output=True, timeout=30, check=False)
    except OSError as exc:
        raise PluginError(f"Properties.Disk: {QEMU_IMG} cannot run: {exc.strerror}") from None
    if done.returncode != 0:
        raise PluginError(f"Properties.Disk: {path!r} is not an image QEMU can read: "
                          f"{done.stderr.decode(errors='replace').strip()}")
    fmt = str(json.loads(done.stdout).get("format", ""))
    if fmt not in ("qcow2", "raw"):
        raise PluginError(f"Properties.Disk: {path!r} is a {fmt} image; give a qcow2 or "
                          "raw one")
    return fmt


def _qemu_img(args: list[str], what: str) -> None:
    done = subprocess.run([QEMU_IMG, *args], capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise PluginError(f"Instance: cannot create {what}: "
                          f"{done.stderr.decode(errors='replace').strip()}")


def make_overlay(base: str, fmt: str, overlay: Path) -> None:
    """A qcow2 overlay on ``base``: the instance writes to it, never to the base."""
    _qemu_img(["create", "-q", "-f", "qcow2", "-F", fmt, "-b", os.path.abspath(base),
               str(overlay)], "the overlay of Properties.Disk")


def make_disk(path: Path, size_mb: int) -> None:
    _qemu_img(["create", "-q", "-f", "qcow2", str(path), f"{size_mb}M"], f"disk {path.name}")


def hostname_of(iid: str, logical_id: str | None) -> str:
    """A host name for the guest: its logical ID, made fit for one, else its ID."""
    name = _HOSTNAME.sub("-", (logical_id or "").lower()).strip("-")[:63]
    return name or iid


def make_seed(path: Path, iid: str, hostname: str, user_data: str) -> None:
    """A NoCloud seed: an ISO 9660 image labelled ``cidata`` holding ``user-data`` (the
    spec's Init) and ``meta-data`` (instance ID and host name), as cloud-init looks for."""
    import pycdlib

    meta = f"instance-id: {iid}\nlocal-hostname: {hostname}\n".encode()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, short, data in (("user-data", "USERDATA", user_data.encode()),
                              ("meta-data", "METADATA", meta)):
        iso.add_fp(BytesIO(data), len(data), f"/{short}.;1", rr_name=name,
                   joliet_path=f"/{name}")
    iso.write(str(path))
    iso.close()


def _opt(path: Path | str) -> str:
    """A path as a QEMU option value: its commas doubled."""
    return str(path).replace(",", ",,")


@dataclass(frozen=True)
class VmFiles:
    """The files of one VM, all in its own directory."""

    directory: Path

    @property
    def qmp(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def overlay(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.directory / "seed.iso"

    @property
    def init(self) -> Path:
        return self.directory / "init.sh"

    def extra_disk(self, n: int) -> Path:
        return self.directory / f"disk{n + 1}.qcow2"


def command_line(props: QemuProperties, accel: str, files: VmFiles, iid: str,
                 ports: dict[str, int]) -> list[str]:
    """The command that starts the VM as a daemon; ``ports``: name -> host port."""
    argv = [QEMU, "-name", iid, "-machine", "pc", "-smp", str(props.cpus),
            "-m", str(props.memory_mb), "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{_opt(files.console)}",
            "-qmp", f"unix:{_opt(files.qmp)},server=on,wait=off",
            "-pidfile", str(files.pidfile), "-daemonize"]
    # a smaller code cache for TCG: about 25 MB less per VM, at no cost seen in boot times
    argv += ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,tb-size=32"]
    bridge = props.bridge()
    if bridge is not None:
        argv += ["-netdev", f"bridge,id=net0,br={bridge}"]
    else:
        guest = props.guest_ports()
        forwards = "".join(f",hostfwd=tcp:127.0.0.1:{ports[name]}-:{guest[name]}"
                           for name in sorted(guest))
        argv += ["-netdev", f"user,id=net0{forwards}"]
    argv += ["-device", "virtio-net-pci,netdev=net0"]
    if props.disk is not None:
        argv += ["-drive", f"file={_opt(files.overlay)},format=qcow2,if=virtio",
                 "-drive", f"file={_opt(files.seed)},format=raw,if=virtio,readonly=on"]
    for n in range(len(props.disks or [])):
        argv += ["-drive", f"file={_opt(files.extra_disk(n))},format=qcow2,if=virtio"]
    if props.kernel is not None:
        argv += ["-kernel", props.kernel]
        if props.initrd is not None:
            argv += ["-initrd", props.initrd]
        if props.append is not None:
            argv += ["-append", props.append]
    if props.disk is None:  # with a Disk, the Init goes in the NoCloud seed
        argv += ["-fw_cfg", f"name=opt/infrakit/init,file={_opt(files.init)}",
                 "-fw_cfg", f"name=opt/infrakit/instance-id,string={iid}"]
    return argv + list(props.qemu_args or [])


def start(argv: list[str], env: dict[str, str], files: VmFiles) -> int:
    """Run QEMU, which returns once its daemon runs; the daemon's pid, from its pid file."""
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=60, check=False)
    except OSError as exc:
        raise PluginError(f"Instance: cannot run {QEMU}: {exc.strerror}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()
        raise PluginError(f"Instance: {QEMU} refused to start the VM: {said}")
    try:
        return int(files.pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise PluginError(f"Instance: {QEMU} started but left no pid file: {exc}") from None
