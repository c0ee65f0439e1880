"""The ``qemu`` instance plugin: each instance is a virtual machine run by
``qemu-system-x86_64``, on KVM where a probe VM shows that KVM works, else on TCG (slower;
the plugin's log says so).

Each VM has a directory ``<state>/<ID>/`` holding its overlay (``disk.qcow2``, on the base
image of ``Properties.Disk``, which is never written), its NoCloud seed (``seed.iso``:
``user-data`` is the spec's ``Init``, ``meta-data`` its ID and host name), its extra disks,
its serial console's log (``console.log``), its QMP socket and its pid file. With direct
kernel boot (``Kernel`` and no ``Disk``), the Init reaches the guest through QEMU's firmware
configuration instead, as the file ``opt/infrakit/init`` (and ``opt/infrakit/instance-id``):
a guest with the ``qemu_fw_cfg`` module reads it at
``/sys/firmware/qemu_fw_cfg/by_name/opt/infrakit/init/raw``. Guest ports are forwarded from
free loopback ports of the host, described as ``Ports`` (name: host port).

VMs are daemons (``-daemonize``): they outlive the plugin. Records live in
``<state>/<ID>.json``, written atomically; a restarted plugin reads them and describes the
VMs that still run, each known by its pid *and* the kernel's start time of that pid. A VM
whose QEMU process is gone stops being described, and ``DescribeEnded`` reports it with the
reason and its console's last lines; its console log stays (``Instance.Logs`` reads it)
until the plugin restarts, or ``ENDED_KEPT`` later endings; its disks go at once.
``Destroy`` asks the guest to power down (QMP ``system_powerdown``), waits ``StopGrace``
seconds, then tells QEMU to quit (and kills it should that fail), and removes the VM's
directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import msgspec.structs

from infrakit.atomicfile import write_atomic
from infrakit.plugins.instance import logfile, procfs, qemu_launch, qemu_monitor
from infrakit.plugins.instance.ports import LOOPBACK, PortReservations, port_in_use
from infrakit.plugins.instance.qemu_launch import VmFiles
from infrakit.plugins.instance.qemu_props import QemuProperties
from infrakit.plugins.instance.state import load_records, state_directory
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import EndedInstance, InstanceLogs
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Description, Spec

log = logging.getLogger(__name__)

_PREFIX = "qemu-"
ENDED_KEPT = 32
"""Ended VMs remembered, whose console logs are kept (their disks are removed at once)."""


class QemuRecord(procfs.ProcessRecordBase, rename="pascal", kw_only=True):
    directory: str
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    cpus: int = msgspec.field(name="CPUs")
    memory_mb: int = msgspec.field(name="MemoryMB")
    accel: str
    stop_grace: float

    @property
    def files(self) -> VmFiles:
        return VmFiles(Path(self.directory))

    def alive(self) -> bool:
        return procfs.alive(self.pid, self.start_ticks)

    def describe(self, properties: bool) -> Description:
        facts: Any = msgspec.UNSET
        if properties:
            facts = {"PID": self.pid, "State": qemu_monitor.status(self.files.qmp),
                     "Address": LOOPBACK, "Ports": self.ports,
                     "Console": str(self.files.console),
                     "CPUs": self.cpus, "MemoryMB": self.memory_mb, "Accel": self.accel,
                     "Started": self.started}
        return Description(id=self.id, logical_id=self.logical_id, tags=self.tags,
                           properties=facts)


_decode_record = msgspec.json.Decoder(QemuRecord).decode


def _kill_carrying(directory: Path) -> None:
    """Kill the QEMU processes started for ``directory`` (found by the variable the plugin
    gives them: unique to one VM of one plugin), and wait until they are gone."""
    pids = [p for p in procfs.carrying(f"INFRAKIT_INSTANCE_DIR={directory}") if p > 1]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _await(lambda: not any((procfs.stat(p) or ("Z", 0))[0] not in "ZX" for p in pids), 5.0)


def _await(done: Callable[[], bool], timeout: float) -> bool:
    """Whether ``done`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _ended_as(record: QemuRecord) -> EndedInstance:
    """How a VM ended: QEMU is no child of the plugin (it is a daemon), so its exit status
    is unknown; the console's last lines tell a power-off or a panic of the guest."""
    output = procfs.tail(record.files.console)
    text = "\n".join(output)
    if "Kernel panic" in text:
        reason = "the guest's kernel panicked (see its console)"
    elif "reboot: Power down" in text:
        reason = "the guest powered itself off"
    else:
        reason = f"its qemu process (pid {record.pid}) is gone: killed, or it crashed"
    return EndedInstance(id=record.id, logical_id=record.logical_id, tags=record.tags,
                         reason=reason, started=record.started,
                         ended=time.time(), output=output or None)


def _remove_all_but_console(record: QemuRecord) -> None:
    directory = Path(record.directory)
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name != record.files.console.name:
                with contextlib.suppress(OSError):
                    entry.unlink()


class QemuInstancePlugin:
    """Instance/0.5.0 over QEMU virtual machines."""

    def __init__(self, directory: Path) -> None:
        self.directory = state_directory(Path(directory))
        self._lock = threading.Lock()
        self._ports = PortReservations()
        self._records, self._ids, damaged = load_records(self.directory, _PREFIX,
                                                         _decode_record)
        self._ended: dict[str, tuple[EndedInstance, QemuRecord]] = {}
        for record in [r for r in self._records.values() if r.pid == 0]:
            # the plugin stopped between starting QEMU and recording its pid
            log.warning("%s: its start was never recorded whole: its VM is stopped", record.id)
            self._drop(record, ended=False)
            shutil.rmtree(record.directory, ignore_errors=True)
        for iid in damaged:  # its record is set aside: a VM nobody knows of is stopped
            log.warning("%s: its record was damaged: its VM, if it runs, is stopped", iid)
        self._remove_unrecorded()

    def _remove_unrecorded(self) -> None:
        """Remove the directories no record names: the consoles of VMs that ended before
        the restart (what ended is not remembered across one), and what a VM whose record
        was damaged left, its QEMU stopped first should it still run."""
        for entry in self.directory.iterdir():
            if (entry.is_dir() and self._ids.pattern.fullmatch(entry.name)
                    and entry.name not in self._records):
                _kill_carrying(entry)
                shutil.rmtree(entry, ignore_errors=True)

    def validate(self, properties: Any) -> None:
        props = decode_properties(properties, QemuProperties)
        props.check()
        qemu_launch.check_tools()
        if props.disk is not None:
            qemu_launch.image_format(props.disk)
        qemu_launch.choose_accel(props.accel)

    def provision(self, spec: Spec) -> str:
        props = decode_properties(spec.properties, QemuProperties)
        props.check()
        qemu_launch.check_tools()
        fmt = qemu_launch.image_format(props.disk) if props.disk is not None else ""
        accel = qemu_launch.choose_accel(props.accel)
        [iid] = self._ids.take(1)
        files = VmFiles(self.directory / iid)
        ports = self._host_ports(props)
        record_path = self.directory / f"{iid}.json"
        try:
            files.directory.mkdir(mode=0o700)
            self._prepare(spec, props, fmt, iid, files)
            record = QemuRecord(id=iid, logical_id=spec.logical_id, tags=dict(spec.tags or {}),
                                pid=0, start_ticks=0, started=time.time(),
                                directory=str(files.directory), ports=ports, cpus=props.cpus,
                                memory_mb=props.memory_mb, accel=accel,
                                stop_grace=props.stop_grace)
            # recorded before QEMU starts: a plugin stopped before the pid is recorded
            # finds the VM by its directory when it starts again, and stops it
            write_atomic(record_path, msgspec.json.encode(record))
            pid = self._launch(qemu_launch.command_line(props, accel, files, iid, ports),
                               iid, files)
            found = procfs.stat(pid)
            record = msgspec.structs.replace(record, pid=pid,
                                             start_ticks=found[1] if found else -1)
            write_atomic(record_path, msgspec.json.encode(record))
            with self._lock:
                self._records[iid] = record
            return iid
        except BaseException:  # whatever failed, nothing of the VM is left
            _kill_carrying(files.directory)
            shutil.rmtree(files.directory, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                record_path.unlink()
            raise
        finally:
            self._ports.release(ports.values())

    def _host_ports(self, props: QemuProperties) -> dict[str, int]:
        """The host port of each guest port: the one given, or a free one."""
        fixed = props.fixed_host_ports()
        with self._lock:
            recorded = [p for r in self._records.values() for p in r.ports.values()]
        for name, port in fixed.items():
            if port in recorded or self._ports.reserved(port) or port_in_use(port):
                raise PluginError(f"Properties.Ports.{name}.Host: port {port} is taken "
                                  "already (by another VM of this plugin, or another program)")
        self._ports.reserve(fixed.values())
        free = [name for name in props.guest_ports() if name not in fixed]
        return {**fixed, **self._ports.allocate(free, recorded)}

    def _prepare(self, spec: Spec, props: QemuProperties, fmt: str, iid: str,
                 files: VmFiles) -> None:
        """The VM's disks, seed and Init file, before QEMU starts."""
        if props.disk is not None:
            qemu_launch.make_overlay(props.disk, fmt, files.overlay)
            qemu_launch.make_seed(files.seed, iid,
                                  qemu_launch.hostname_of(iid, spec.logical_id), spec.init)
        for n, disk in enumerate(props.disks or []):
            qemu_launch.make_disk(files.extra_disk(n), disk.size_mb)
        if props.disk is None:  # the Init goes through fw_cfg (see the module's doc)
            files.init.write_text(spec.init)

    def _launch(self, argv: list[str], iid: str, files: VmFiles) -> int:
        """Start QEMU: the point where the plugin's own work for a provision ends."""
        if "tcg,tb-size=32" in argv:
            log.warning("%s runs on TCG, without hardware virtualization: slower (%s)", iid,
                        qemu_launch.kvm_problem() or "Properties.Accel asks for tcg")
        env = {**os.environ, "INFRAKIT_INSTANCE_ID": iid,
               "INFRAKIT_INSTANCE_DIR": str(files.directory)}
        return qemu_launch.start(argv, env, files)

    def label(self, instance: str, labels: dict[str, str]) -> None:
        with self._lock:
            record = self._records.get(instance)
            if record is None or not record.alive():
                self._ids.refuse_unknown(instance, self.directory, "label")
                raise NotFoundError(f"Instance: {instance!r} is gone (destroyed, or its VM "
                                    "ended); cannot label it")
            updated = msgspec.structs.replace(record, tags={**record.tags, **labels})
            write_atomic(self.directory / f"{instance}.json", msgspec.json.encode(updated))
            self._records[instance] = updated

    def destroy(self, instance: str) -> None:
        """Power the guest down, then quit QEMU, and remove the VM's files."""
        with self._lock:
            gone = self._ended.pop(instance, None)
            record = gone[1] if gone else self._records.get(instance)
        if record is None:
            self._ids.refuse_unknown(instance, self.directory, "destroy")
            log.info("Instance %s was already gone: nothing to destroy", instance)
            return
        if gone is None:
            self._stop(record)
            self._drop(record, ended=False)
        shutil.rmtree(record.directory, ignore_errors=True)

    def _stop(self, record: QemuRecord) -> None:
        """``system_powerdown``, ``StopGrace`` seconds for the guest, then ``quit``; SIGKILL
        should QEMU still run (its pid checked against its start time first)."""
        qmp = record.files.qmp
        if record.stop_grace > 0 and qemu_monitor.request(qmp, "system_powerdown"):
            _await(lambda: not record.alive(), record.stop_grace)
        if record.alive():
            qemu_monitor.request(qmp, "quit")
            if not _await(lambda: not record.alive(), 5.0) and record.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(record.pid, signal.SIGKILL)
                _await(lambda: not record.alive(), 5.0)

    def _drop(self, record: QemuRecord, ended: bool) -> None:
        """Forget a VM: destroyed, or ended by itself (reported, its console kept)."""
        with self._lock:
            if self._records.pop(record.id, None) is None:
                return
        if ended:
            with self._lock:
                self._ended[record.id] = (_ended_as(record), record)
                dropped = [self._ended.pop(i)[1] for i in list(self._ended)[:-ENDED_KEPT]]
            for old in dropped:
                shutil.rmtree(old.directory, ignore_errors=True)
            _remove_all_but_console(record)
        else:
            _kill_carrying(Path(record.directory))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{record.id}.json")

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        wanted = tags.items()
        return [r.describe(properties) for r in self._sweep() if wanted <= r.tags.items()]

    def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        self._sweep()
        wanted = tags.items()
        with self._lock:
            ended = [e for e, _ in self._ended.values()]
        return [e for e in ended if wanted <= (e.tags or {}).items()]

    def logs(self, instance: str, offset: str, tail: int | None,
             previous: bool) -> InstanceLogs:
        """The VM's serial console: of one that runs, or of one that ended (``previous``
        asks for such an one only)."""
        self._sweep()
        with self._lock:
            record, gone = self._records.get(instance), self._ended.get(instance)
        if record is None and gone is None:
            self._ids.refuse_unknown(instance, self.directory, "read the console of")
            raise NotFoundError(f"Instance: {instance!r} is gone (destroyed, or ended before "
                                f"the last {ENDED_KEPT} that ended): its console is not kept")
        if previous and gone is None:
            raise PluginError(f"Previous: instance {instance!r} has not ended (it runs): ask "
                              "without it for the console of one that runs")
        chosen = gone[1] if gone else record
        assert chosen is not None
        return logfile.read(chosen.files.console, offset, tail, gone is not None)

    def _sweep(self) -> list[QemuRecord]:
        """The records whose VM runs; the others end here."""
        with self._lock:
            records = list(self._records.values())
        alive = []
        for record in records:
            if record.alive():
                alive.append(record)
            else:
                self._drop(record, ended=True)
        return alive
