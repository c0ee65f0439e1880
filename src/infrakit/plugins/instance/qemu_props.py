"""The properties of a ``qemu`` instance, and every check that can be made of them before
anything is created: a missing image or kernel, memory the host does not have, a host port
taken, a network or a QEMU argument the plugin does not know is refused here, by Validate
and by Provision alike, naming the field."""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from infrakit.plugins.instance.ports import port_in_use
from infrakit.spi.durations import Duration
from infrakit.spi.errors import PluginError
from infrakit.spi.types import Wire

DEFAULT_STOP_GRACE = 30.0
"""Seconds a guest is given to power down before QEMU is told to quit."""
_PORT_NAME = re.compile(r"[A-Za-z0-9_]+")
_BRIDGE = re.compile(r"bridge:([A-Za-z0-9_.-]{1,15})")
_ARG_VALUE = re.compile(r"[A-Za-z0-9_.,=:+-]*")

SAFE_QEMU_ARGS: dict[str, tuple[str, ...] | None] = {
    "-no-reboot": None,
    "-rtc": ("base=", "clock=", "driftfix="),
    "-boot": ("order=", "menu=", "strict=", "splash-time=", "reboot-timeout="),
    "-smbios": ("type=0", "type=1", "type=2", "type=3"),
    "-device": ("virtio-rng-pci", "virtio-balloon-pci", "pvpanic", "i6300esb"),
    "-watchdog-action": ("reset", "shutdown", "poweroff", "pause", "debug", "none"),
}
"""The QEMU options ``QemuArgs`` may hold: each with nothing after it (None), or with one
value that starts with one of the listed words. None of them names a file on the host, a
device of the host, or a socket: the plugin owns the VM's disks, network, console, monitor
and daemon options, and a spec must not reach past them."""


class PortForward(Wire, kw_only=True, forbid_unknown_fields=True):
    """A guest port forwarded from a host port chosen here (``Host``), on loopback."""

    guest: int
    host: int


class ExtraDisk(Wire, kw_only=True, forbid_unknown_fields=True):
    """An empty qcow2 disk made for the instance, removed with it."""

    size_mb: int = msgspec.field(name="SizeMB")


class QemuProperties(Wire, kw_only=True, forbid_unknown_fields=True):
    """``CPUs``, ``MemoryMB``; a boot style: ``Disk`` (a base image, each instance booting
    a copy-on-write overlay of it), or ``Kernel`` (+ ``Initrd``, ``Append``), or both (the
    kernel boots with the disk attached); ``Ports`` (name: guest port, or
    ``{"Guest": g, "Host": h}`` for a fixed host port), ``Network`` (``user`` or
    ``bridge:NAME``), ``Disks``, ``QemuArgs``, ``Accel`` (``auto``, ``kvm``, ``tcg``),
    ``StopGrace``."""

    cpus: int = msgspec.field(default=1, name="CPUs")
    memory_mb: int = msgspec.field(default=256, name="MemoryMB")
    disk: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    ports: dict[str, int | PortForward] | None = None
    network: str = "user"
    disks: list[ExtraDisk] | None = None
    qemu_args: list[str] | None = None
    accel: str = "auto"
    stop_grace: Duration = DEFAULT_STOP_GRACE
    """Seconds, or a duration such as ``"30s"``."""

    def check(self) -> None:
        """Every check that needs nothing started (KVM is probed by the caller)."""
        _check_size(self)
        _check_boot(self)
        _check_network(self)
        _check_ports(self)
        check_qemu_args(self.qemu_args or [])
        if self.accel not in ("auto", "kvm", "tcg"):
            raise PluginError(f"Properties.Accel: {self.accel!r} is not one of auto, kvm, tcg")
        if self.stop_grace < 0:
            raise PluginError("Properties.StopGrace: must not be negative")

    def guest_ports(self) -> dict[str, int]:
        return {name: p if isinstance(p, int) else p.guest
                for name, p in (self.ports or {}).items()}

    def fixed_host_ports(self) -> dict[str, int]:
        return {name: p.host for name, p in (self.ports or {}).items()
                if isinstance(p, PortForward)}

    def bridge(self) -> str | None:
        found = _BRIDGE.fullmatch(self.network)
        return found.group(1) if found else None


def host_memory_mb() -> int:
    """The host's memory (``MemTotal``), in MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _check_size(props: QemuProperties) -> None:
    if props.cpus < 1 or props.cpus > 255:
        raise PluginError(f"Properties.CPUs: {props.cpus} is not between 1 and 255")
    if props.memory_mb < 16:
        raise PluginError(f"Properties.MemoryMB: {props.memory_mb} is below 16, too little "
                          "for any guest")
    total = host_memory_mb()
    if props.memory_mb > total:
        raise PluginError(f"Properties.MemoryMB: {props.memory_mb} is more than the host "
                          f"has ({total} MB)")
    for i, disk in enumerate(props.disks or []):
        if disk.size_mb < 1:
            raise PluginError(f"Properties.Disks[{i}].SizeMB: must be at least 1")


def _readable_file(path: str | None, field: str) -> None:
    if path is None:
        return
    if "\0" in path or "," in path:
        raise PluginError(f"Properties.{field}: {path!r} holds a NUL byte or a comma, which "
                          "QEMU's options cannot carry")
    if not os.path.isabs(path):
        raise PluginError(f"Properties.{field}: {path!r} must be an absolute path")
    if not Path(path).is_file():
        raise PluginError(f"Properties.{field}: {path!r} does not exist (or is not a file)")
    if not os.access(path, os.R_OK):
        raise PluginError(f"Properties.{field}: {path!r} cannot be read by the plugin")


def _check_boot(props: QemuProperties) -> None:
    if props.disk is None and props.kernel is None:
        raise PluginError("Properties.Disk: nothing to boot: give a Disk (a base image) or "
                          "a Kernel (with an Initrd)")
    if props.kernel is None and (props.initrd is not None or props.append is not None):
        raise PluginError("Properties.Kernel: Initrd and Append need a Kernel")
    _readable_file(props.disk, "Disk")
    _readable_file(props.kernel, "Kernel")
    _readable_file(props.initrd, "Initrd")
    if props.append is not None and "\0" in props.append:
        raise PluginError("Properties.Append: holds a NUL byte")


def _check_ports(props: QemuProperties) -> None:
    for name, port in (props.ports or {}).items():
        field = f"Properties.Ports.{name}"
        if not _PORT_NAME.fullmatch(name):
            raise PluginError(f"Properties.Ports: {name!r} is not a port name (letters, "
                              "digits and _)")
        guest = port if isinstance(port, int) else port.guest
        if not 0 < guest < 65536:
            raise PluginError(f"{field}: guest port {guest} is not between 1 and 65535")
        if isinstance(port, PortForward):
            if not 0 < port.host < 65536:
                raise PluginError(f"{field}.Host: {port.host} is not between 1 and 65535")
            if port_in_use(port.host):
                raise PluginError(f"{field}.Host: port {port.host} on 127.0.0.1 is taken "
                                  "already; choose another, or leave the host port to the "
                                  "plugin (give the guest port alone)")
    if props.ports and props.network != "user":
        raise PluginError("Properties.Ports: ports are forwarded by user-mode networking "
                          "only; with a bridge the guest has an address of its own")


def _check_network(props: QemuProperties) -> None:
    if props.network == "user":
        return
    bridge = props.bridge()
    if bridge is None:
        raise PluginError(f"Properties.Network: {props.network!r} is not a network this "
                          "plugin knows: give \"user\" (the default) or \"bridge:NAME\"")
    if not Path("/sys/class/net", bridge, "bridge").is_dir():
        raise PluginError(f"Properties.Network: there is no bridge {bridge!r} on this host")


def check_qemu_args(args: list[str]) -> None:
    """Refuse any ``QemuArgs`` entry outside :data:`SAFE_QEMU_ARGS`."""
    i = 0
    while i < len(args):
        option = args[i]
        if option not in SAFE_QEMU_ARGS:
            raise PluginError(f"Properties.QemuArgs[{i}]: {option!r} is not an option the "
                              f"plugin allows; allowed: {', '.join(sorted(SAFE_QEMU_ARGS))}")
        starts = SAFE_QEMU_ARGS[option]
        if starts is not None:
            if i + 1 >= len(args):
                raise PluginError(f"Properties.QemuArgs[{i}]: {option} needs a value")
            value = args[i + 1]
            if (not _ARG_VALUE.fullmatch(value) or "file=" in value
                    or not value.startswith(starts)):
                raise PluginError(f"Properties.QemuArgs[{i + 1}]: {value!r} is not a value "
                                  f"the plugin allows for {option} (one starting with "
                                  f"{', '.join(starts)}, without a file)")
            i += 1
        i += 1
