"""The ``process`` instance plugin: each instance is a supervised local process group.

An instance runs ``/bin/sh`` on a script made of the spec's ``Init`` and, when
``Properties.Command`` is given, ``exec`` of that command (a string is a shell command
line, run whole by ``sh -c``; a list is an argv). It runs in its own session (so
it outlives the plugin and gets none of its signals), in its own working directory
``<state>/<ID>/``, with its output in a log file, and an environment holding
``INFRAKIT_INSTANCE_ID``, ``INFRAKIT_INSTANCE_DIR`` (its working directory),
``INFRAKIT_LOGICAL_ID``, ``INFRAKIT_TAGS`` (the tags as JSON),
``PORT_<NAME>`` for each declared port (a free loopback port chosen per instance) and
``Properties.Env``. Optional memory, CPU and pids limits go through cgroups.

An instance is known by its pid *and* the kernel's start time of that pid, so a pid that
was reused by another process is never mistaken for the instance. Records live in
``<state>/<ID>.json``; a restarted plugin reads them and reports the instances that still
run. A record found damaged is moved aside (``<ID>.json.corrupt-<time>``) and its instance,
if it still runs, recorded anew from what ``/proc`` says of it; else what it left is
killed. An instance whose process died is dropped from its records when it is next
described, and reported by ``DescribeEnded`` with its exit status and the last lines of its log.
The working directory and log of an instance that ended, or was destroyed, stay for a
post-mortem as :mod:`.retention` says (the last few of each group, for at most a week):
``Instance.Logs`` reads them, as it reads a running instance's log (see :mod:`.logfile`).

Destroy of an instance the plugin made that is gone already (destroyed before, or ended
and no longer remembered, as after a restart) succeeds, and logs that it was gone; an ID of
another form, or one the plugin never handed out, is refused. Label of an instance whose
process no longer runs is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import msgspec.structs

from infrakit.atomicfile import write_atomic
from infrakit.plugins.instance import cgroups, logfile, procfs, retention
from infrakit.plugins.instance.ports import LOOPBACK, PortReservations
from infrakit.plugins.instance.state import highest_id, load_records, state_directory
from infrakit.rpc.paths import PluginPathError, check_private_dir, make_private_dir
from infrakit.spi.durations import Duration
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import EndedInstance, InstanceLogs
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Description, Spec, Wire

log = logging.getLogger(__name__)

DEFAULT_STOP_GRACE = 10.0
_PREFIX = "proc-"
ENDED_KEPT = 128
"""Endings remembered for ``DescribeEnded``, enough for a group to learn of each one (what
stays of their files is :mod:`.retention`'s to say)."""
_SHELL_SYNTAX = frozenset(";&|<>()$`\\\"'*?[]#~=%\n")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A name ``/bin/sh`` passes on: it drops others from the environment it runs with."""
_PORT_NAME = re.compile(r"[A-Za-z0-9_]+")


class ProcessProperties(Wire, kw_only=True, forbid_unknown_fields=True):
    """``Command``: argv (a list) or a shell command line (a string), run after ``Init``.
    ``Env``: added to the environment. ``Ports``: names of ports to give the instance.
    ``LogDir``: where the log goes (default: the working directory). ``Limits``:
    ``MemoryMB``, ``CPUs``, ``Pids``. ``StopGrace``: seconds between SIGTERM and SIGKILL."""

    command: str | list[str] | None = None
    env: dict[str, str] | None = None
    ports: list[str] | None = None
    log_dir: str | None = None
    limits: cgroups.Limits | None = None
    stop_grace: Duration = DEFAULT_STOP_GRACE
    """Seconds, or a duration such as ``"30s"``."""

    def check(self) -> None:
        """Everything that can be checked before running anything: what the kernel would
        refuse to start (a NUL byte in an argument, a value or a path; a variable name
        with ``=``) included, so that Validate refuses what Provision could not do."""
        words = [self.command] if isinstance(self.command, str) else self.command or []
        if any("\0" in word for word in words):
            raise PluginError("Properties.Command: holds a NUL byte")
        argv = self.argv()
        if isinstance(self.command, str) and _SHELL_SYNTAX.intersection(self.command):
            argv = None  # a shell line: the shell says what is wrong with it, in the log
        if argv is not None:
            if not argv:
                raise PluginError("Properties.Command: must not be empty")
            program = argv[0]
            found = (os.access(program, os.X_OK) if "/" in program
                     else shutil.which(program) is not None)
            if not found:
                raise PluginError(f"Properties.Command: {program!r} is not an executable "
                                  "program" + ("" if "/" in program else " on PATH"))
        for name in self.ports or ():
            if not _PORT_NAME.fullmatch(name):
                raise PluginError(f"Properties.Ports: {name!r} is not a port name "
                                  "(letters, digits and _)")
        for name, value in (self.env or {}).items():
            if not _VARIABLE.fullmatch(name):
                raise PluginError(f"Properties.Env: {name!r} is not a variable name (letters, "
                                  "digits and _, not first a digit)")
            if "\0" in value:
                raise PluginError(f"Properties.Env: the value of {name!r} holds a NUL byte")
        if self.log_dir is not None:
            if "\0" in self.log_dir:
                raise PluginError("Properties.LogDir: holds a NUL byte")
            _check_dir(Path(self.log_dir), "Properties.LogDir")
        if self.stop_grace < 0:
            raise PluginError("Properties.StopGrace: must not be negative")
        if self.limits is not None:
            self.limits.check()
            cgroups.check_available(self.limits)

    def argv(self) -> list[str] | None:
        if isinstance(self.command, str):
            try:
                return shlex.split(self.command)
            except ValueError as exc:
                raise PluginError(f"Properties.Command: {exc}") from None
        return self.command


def _check_dir(path: Path, field: str) -> None:
    """Refuse ``path`` unless it is, or can be made, a directory this user writes in and
    nobody else may (else links could be planted where the logs go, or the logs read);
    checked without creating anything (Validate changes nothing), and only as an absolute
    path (a relative one would depend on where the plugin was started)."""
    if not path.is_absolute():
        raise PluginError(f"{field}: {str(path)!r} must be an absolute path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if existing == path:
        try:
            check_private_dir(path, f"{field}:")
        except PluginPathError as exc:
            raise PluginError(str(exc)) from None
    if not existing.is_dir():
        raise PluginError(f"{field}: cannot create {str(path)!r}: {str(existing)!r} is not a "
                          "directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PluginError(f"{field}: {str(existing)!r} is not writable")


def _make_dir(path: Path, field: str) -> None:
    """Make ``path`` 0700, or refuse it if another user owns it or others may write to it."""
    try:
        make_private_dir(path, f"{field}:")
    except OSError as exc:
        raise PluginError(f"{field}: cannot create {str(path)!r}: {exc.strerror}") from None
    except PluginPathError as exc:
        raise PluginError(str(exc)) from None


def _open_log(log: Path) -> int:
    """A new instance's log, opened to append to: a new file, never one that is there
    already (IDs are never reused, so this plugin did not make it) nor through a link."""
    try:
        return os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise PluginError(f"Instance: the log {str(log)!r} exists already (a link, or a file "
                          "this plugin did not make): not writing to it") from None
    except OSError as exc:
        raise PluginError(f"Instance: cannot create the log {str(log)!r}: {exc.strerror}")\
            from None


class ProcessRecord(procfs.ProcessRecordBase, rename="pascal", kw_only=True):
    work_dir: str
    log: str
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    stop_grace: float = DEFAULT_STOP_GRACE
    cgroups: list[str] = msgspec.field(default_factory=list)

    def describe(self, properties: bool) -> Description:
        facts = {"PID": self.pid, "Started": self.started, "Log": self.log,
                 "WorkDir": self.work_dir, "Address": LOOPBACK, "Ports": self.ports}
        return Description(id=self.id, logical_id=self.logical_id, tags=self.tags,
                           properties=facts if properties else msgspec.UNSET)


_decode_record = msgspec.json.Decoder(ProcessRecord).decode


def _session(sid: int) -> list[int]:
    """The processes of session ``sid``."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue
            if int(raw[raw.rindex(b")") + 2:].split()[3]) == sid:
                out.append(int(entry.name))
    return out


def _names_beside(records: Iterable[ProcessRecord]) -> list[str]:
    """The names of the files in the directories of the records' logs."""
    names: list[str] = []
    for where in {os.path.dirname(r.log) for r in records}:
        with contextlib.suppress(OSError):
            names += os.listdir(where)
    return names


def _kill_sessions_of(work: Path) -> None:
    """Kill the sessions of the processes that carry ``work`` as their instance's working
    directory: it is unique to one instance of one plugin (IDs are unique per plugin only,
    and another plugin's ``proc-7`` must never be touched)."""
    for found in procfs.carrying(f"INFRAKIT_INSTANCE_DIR={work}"):
        sid = _session_id(found)
        # the session's leader, or a child that outlived it; never session 0 or 1 (that of
        # init and of the kernel's threads), should an instance ever be found in one
        for pid in {found, *(_session(sid) if sid is not None and sid > 1 else ())}:
            if pid > 1:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def _session_id(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2:].split()[3])


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0"))
    return {name: value for name, sep, value in pairs if sep}


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _rebuilt(iid: str, work: Path, groups: list[str]) -> ProcessRecord | None:
    """The record of instance ``iid`` as /proc tells it: its process leads its own
    session and carries its working directory in its environment, with its tags, logical
    ID and ports. Its StopGrace is not told there (the default holds), nor the labels given
    since it started."""
    for pid in procfs.carrying(f"INFRAKIT_INSTANCE_DIR={work}"):
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X") or int(fields[3]) != pid:
            continue  # a zombie, or not the session's leader (a child of the instance)
        env = _environ(pid)
        try:
            tags = msgspec.json.decode(env.get("INFRAKIT_TAGS", "{}"), type=dict[str, str])
        except msgspec.DecodeError:
            tags = {}
        ports = {name[5:].lower(): int(value) for name, value in env.items()
                 if name.startswith("PORT_") and value.isdigit()
                 and os.environ.get(name) != value}
        try:
            log = os.readlink(f"/proc/{pid}/fd/1")
        except OSError:
            log = ""
        if not log.startswith("/") or log.endswith(" (deleted)"):
            log = str(work / f"{iid}.log")
        ticks = int(fields[19])
        return ProcessRecord(id=iid, logical_id=env.get("INFRAKIT_LOGICAL_ID") or None,
                             tags=tags, pid=pid, start_ticks=ticks,
                             started=_boot_time() + ticks / os.sysconf("SC_CLK_TCK"),
                             work_dir=str(work), log=log, ports=ports, cgroups=groups)
    return None


def _rescue(directory: Path, cgroup_name: str, iid: str) -> ProcessRecord | None:
    """An instance whose record was damaged (and set aside): if its process runs, it is
    recorded anew (:func:`_rebuilt`), so that it is still described and can be destroyed,
    and no group starts a duplicate of it; else whatever it left running is killed, so
    that nothing runs that no record knows of."""
    work = directory / iid
    groups = cgroups.existing(cgroup_name, iid)
    record = _rebuilt(iid, work, groups)
    if record is None:
        _kill_sessions_of(work)
        cgroups.remove(groups)
        log.warning("%s: no process of it runs; whatever it left running was killed, and "
                    "its files stay in %s", iid, work)
        return None
    write_atomic(directory / f"{iid}.json", msgspec.json.encode(record))
    log.warning("%s: recorded anew from /proc: pid %d, tags %s, logical ID %s, ports %s; "
                "StopGrace is the default, and labels given since it started are lost",
                iid, record.pid, record.tags, record.logical_id, record.ports)
    return record


def _ended_as(record: ProcessRecord, status: int | None) -> EndedInstance:
    """How an instance ended, from its wait status (None when this process is not its
    parent), with the last lines of its log."""
    if status is None:
        reason = "ended (its exit status is unknown: the plugin restarted since it began)"
        code = None
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = f" ({signal.Signals(sig).name})"
        except ValueError:
            name = ""
        reason, code = f"killed by signal {sig}{name}", None
    else:
        code = os.WEXITSTATUS(status)
        reason = f"exited with status {code}"
    return EndedInstance(id=record.id, logical_id=record.logical_id, tags=record.tags,
                         reason=reason, exit_status=code, started=record.started,
                         ended=time.time(), output=procfs.tail(Path(record.log)) or None)


def _await_session_end(sid: int, timeout: float) -> None:
    """Wait until nothing of session ``sid`` runs any more: a killed process takes a moment
    to die, and Destroy answers once the instance is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
            (procfs.stat(pid) or ("Z", 0))[0] not in "ZX" for pid in _session(sid)):
        time.sleep(0.005)


def _check_spec(spec: Spec) -> None:
    """Refuse what no process can be given: a NUL byte ends a C string, so a logical ID
    or a tag holding one cannot go into the environment whole."""
    if spec.logical_id is not None and "\0" in spec.logical_id:
        raise PluginError(f"LogicalID: {spec.logical_id!r} holds a NUL byte")
    for key, value in (spec.tags or {}).items():
        if "\0" in key:
            raise PluginError(f"Tags: {key!r} holds a NUL byte")
        if "\0" in value:
            raise PluginError(f"Tags: the value of {key!r} holds a NUL byte")


def _provisionable(spec: Spec) -> ProcessProperties:
    """The properties of ``spec``, checked, or the reason no process can be made of it."""
    props = decode_properties(spec.properties, ProcessProperties)
    props.check()
    _check_spec(spec)
    if props.command is None and not spec.init.strip():
        raise PluginError("Properties.Command: nothing to run: give a Command or an Init "
                          "script")
    return props


def _undo_start(pid: int, groups: list[str], files: list[Path]) -> None:
    """Undo a start that failed part way: the process, if it started (our unreaped child:
    its pid is its group's and still ours), its cgroups, and its files and record."""
    if pid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    cgroups.remove(groups)
    for path in files:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _alive(record: ProcessRecord) -> bool:
    """Whether the instance's process runs: the same pid *and* start time, not a
    zombie."""
    found = procfs.stat(record.pid)
    return found is not None and found[1] == record.start_ticks and found[0] not in "ZX"


def _kill_leftovers(record: ProcessRecord) -> int | None:
    """Kill what the instance's process left running in its session, and reap it;
    returns its wait status when this process is its parent (None when not, as after
    a restart of the plugin).

    While the dead process is our unreaped child, its pid (the session's and group's
    id) cannot be reused, so the group is killed whole. Once no process has that pid,
    no new session can have that id either: the processes of session ``pid`` are ours.
    A pid now held by another process means the session is gone: nothing to do."""
    if record.pid <= 1:
        return None
    found = procfs.stat(record.pid)
    if found is not None and found[1] == record.start_ticks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)  # a zombie's status stays its own
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(record.pid, os.WNOHANG)
            return status if pid == record.pid else None
    elif found is None:
        for pid in _session(record.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return None


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)


def _stop(record: ProcessRecord) -> None:
    """SIGTERM to the whole process group, SIGKILL after the grace period."""
    if _alive(record):
        _signal(record, signal.SIGTERM)
        deadline = time.monotonic() + record.stop_grace
        while _alive(record) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(record):
            _signal(record, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _alive(record) and time.monotonic() < deadline:
                time.sleep(0.02)


class ProcessInstancePlugin:
    """Instance/0.5.0 over local process groups."""

    def __init__(self, directory: Path, name: str = "instance-process") -> None:
        self.directory = state_directory(Path(directory))
        # cgroups are machine-wide: named for this plugin's state, not only its name
        digest = hashlib.sha1(str(self.directory.resolve()).encode()).hexdigest()[:8]
        self.cgroup_name = f"{name}-{digest}"
        self._lock = threading.Lock()
        self._ports = PortReservations()
        self._destroying: set[str] = set()
        """Instances being stopped by Destroy: one that dies of it did not end by itself."""
        self._records, self._ids, damaged = load_records(self.directory, _PREFIX,
                                                         _decode_record)
        # the logs of instances, in the LogDirs still recorded, name IDs too
        top = highest_id(_names_beside(self._records.values()), _PREFIX)
        if top:
            self._ids.claim(f"{_PREFIX}{top}")
        for record in [r for r in self._records.values() if r.pid == 0]:
            self._recover(record)
        for iid in damaged:  # set aside: recorded anew from what /proc says, if it runs
            rescued = _rescue(self.directory, self.cgroup_name, iid)
            if rescued is not None:
                self._records[iid] = rescued
        keep, max_age = retention.policy()
        self.retention = retention.Retention(self.directory, _PREFIX, keep, max_age,
                                             live=set(self._records))
        self._ended: dict[str, EndedInstance] = {e.id: e for e in self.retention.endings()}
        """How the instances that ended by themselves ended, oldest first (from before a
        restart, those whose files are kept)."""

    def _recover(self, record: ProcessRecord) -> None:
        """A record without a pid: the plugin stopped between recording an instance and its
        pid, so nobody knows the instance. Its process, if it started, is found by its
        working directory in its environment (IDs are unique per plugin only: another
        plugin's ``proc-7`` must never be touched) and killed."""
        _kill_sessions_of(Path(record.work_dir))
        del self._records[record.id]
        cgroups.remove(record.cgroups)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{record.id}.json")

    def validate(self, properties: Any) -> None:
        decode_properties(properties, ProcessProperties).check()

    def provision(self, spec: Spec) -> str:
        props = _provisionable(spec)
        [iid] = self._ids.take(1)
        work = self.directory / iid
        path = self.directory / f"{iid}.json"
        ports: dict[str, int] = {}
        groups: list[str] = []
        log = Path(props.log_dir or work) / f"{iid}.log"
        made = [work, path]
        """What a failed start removes: never a log that was there before."""
        pid, out = 0, -1
        work.mkdir(mode=0o700)
        try:
            if props.log_dir is not None:
                _make_dir(Path(props.log_dir), "Properties.LogDir")
            out = _open_log(log)
            made.append(log)
            ports = self._allocate_ports(props.ports or [])
            groups = cgroups.create(self.cgroup_name, iid, props.limits) if props.limits else []
            record = ProcessRecord(id=iid, logical_id=spec.logical_id, tags=dict(spec.tags or {}),
                                   pid=0, start_ticks=0, started=time.time(), work_dir=str(work),
                                   log=str(log), ports=ports, stop_grace=props.stop_grace,
                                   cgroups=groups)
            # recorded before it starts (pid 0): a crash before the pid is recorded must not
            # leave a process nobody knows of (see _recover)
            write_atomic(path, msgspec.json.encode(record))
            try:
                pid = self._spawn(spec, props, iid, work, out, ports, groups)
            except OSError as exc:
                raise PluginError(f"Instance: cannot start the process: {exc.strerror}") from None
            found = procfs.stat(pid)
            record = msgspec.structs.replace(record, pid=pid,
                                             start_ticks=found[1] if found else -1)
            write_atomic(path, msgspec.json.encode(record))
            with self._lock:
                self._records[iid] = record
            return iid
        except BaseException:  # whatever failed, nothing of the instance is left
            _undo_start(pid, groups, made)
            raise
        finally:  # in the record by now, or never started
            if out >= 0:
                os.close(out)
            self._ports.release(ports.values())

    def _allocate_ports(self, names: list[str]) -> dict[str, int]:
        """A free loopback port per name, none of them given to another instance of this
        plugin (see :mod:`.ports`)."""
        with self._lock:
            recorded = [p for r in self._records.values() for p in r.ports.values()]
        return self._ports.allocate(names, recorded)

    def _spawn(self, spec: Spec, props: ProcessProperties, iid: str, work: Path, out: int,
               ports: dict[str, int], groups: list[str]) -> int:
        """Start ``/bin/sh`` on the instance's script in a new session; returns its pid."""
        lines = ["#!/bin/sh", f"cd {shlex.quote(str(work))} || exit 1"]
        lines += [f"echo $$ > {shlex.quote(g + '/cgroup.procs')} || exit 1" for g in groups]
        if spec.init.strip():
            lines.append(spec.init)
        if isinstance(props.command, str):  # a shell line runs whole, not just its first part
            lines.append(f"exec /bin/sh -c {shlex.quote(props.command)}")
        elif props.command is not None:
            lines.append(f"exec {shlex.join(props.command)}")
        script = work / "init.sh"
        script.write_text("\n".join(lines) + "\n")
        env = {**os.environ, **(props.env or {}), "INFRAKIT_INSTANCE_ID": iid,
               "INFRAKIT_INSTANCE_DIR": str(work),
               "INFRAKIT_LOGICAL_ID": spec.logical_id or "",
               "INFRAKIT_TAGS": json.dumps(spec.tags or {}, sort_keys=True),
               **{f"PORT_{p.upper()}": str(n) for p, n in ports.items()}}
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
        return os.posix_spawn("/bin/sh", ["/bin/sh", str(script)], env,
                              file_actions=actions, setsid=True)

    def label(self, instance: str, labels: dict[str, str]) -> None:
        with self._lock:
            record = self._existing(instance, "label")
            if record is None or not _alive(record):
                how = ("has ended (its process no longer runs)"
                       if record is not None or instance in self._ended
                       else "is gone (destroyed, or ended)")
                raise NotFoundError(f"Instance: {instance!r} {how}; cannot label it")
            updated = msgspec.structs.replace(record, tags={**record.tags, **labels})
            write_atomic(self.directory / f"{instance}.json", msgspec.json.encode(updated))
            self._records[instance] = updated

    def destroy(self, instance: str) -> None:
        """Stop the instance; its files stay as :mod:`.retention` says. One that ended by
        itself is no longer reported as ended; one that is no longer known is destroyed
        already."""
        with self._lock:
            ended = self._ended.pop(instance, None)
            record = None if ended else self._existing(instance, "destroy")
            self._destroying.add(instance)
        try:
            if ended is not None:
                self.retention.destroyed(instance)
            if record is None:
                log.info("Instance %s was already gone (destroyed before, or ended): nothing "
                         "to destroy", instance)
                return
            _stop(record)
            self._forget(record, ended=False)
        finally:
            with self._lock:
                self._destroying.discard(instance)
        _await_session_end(record.pid, 5.0)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """The instances that run: one that died is dropped here, its leftovers killed."""
        wanted = tags.items()
        return [r.describe(properties) for r in self._sweep() if wanted <= r.tags.items()]

    def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        """The instances that ended by themselves, the last ``ENDED_KEPT`` of them, with
        their exit status and the last lines of their logs."""
        self._sweep()
        wanted = tags.items()
        with self._lock:
            ended = list(self._ended.values())
        return [e for e in ended if wanted <= (e.tags or {}).items()]

    def logs(self, instance: str, offset: str, tail: int | None,
             previous: bool) -> InstanceLogs:
        """The instance's log: one that runs, or one that ended or was destroyed whose
        files are still kept (``previous`` asks for such an one only). See
        :mod:`.logfile`."""
        with self._lock:
            known = self._records.get(instance)
        if known is not None and not _alive(known) and not self._being_destroyed(known):
            self._forget(known, ended=True)
        with self._lock:
            record = self._records.get(instance)
            if record is None and known is None:
                self._existing(instance, "read the log of")
        kept = None if record is not None else self.retention.get(instance)
        if record is None and kept is None:
            rule = retention.explain(self.retention.keep, self.retention.max_age)
            raise NotFoundError(f"Instance: {instance!r} ended or was destroyed, and its files "
                                f"were removed after retention ({rule}): its log is no "
                                "longer kept")
        if previous and kept is None:
            raise PluginError(f"Previous: instance {instance!r} has not ended (it runs): "
                              "ask without it for the log of one that runs")
        # else it runs, or ends this very moment: the next call says
        path = Path(kept.log if kept is not None else (record or known).log)  # type: ignore[union-attr]
        return logfile.read(path, offset, tail, kept is not None)

    def _sweep(self) -> list[ProcessRecord]:
        """The records whose process runs; the others end here."""
        with self._lock:
            records = list(self._records.values())
        alive = []
        for record in records:
            if _alive(record):
                alive.append(record)
            elif not self._being_destroyed(record):
                self._forget(record, ended=True)
        self.retention.prune()  # the files that outlived their time
        return alive

    def _being_destroyed(self, record: ProcessRecord) -> bool:
        with self._lock:
            return record.id in self._destroying

    def _existing(self, instance: str, doing: str) -> ProcessRecord | None:
        """The record of an instance (under the lock); None for one the plugin made that
        is no longer known, an error for an ID it never handed out."""
        record = self._records.get(instance)
        if record is None:
            self._ids.refuse_unknown(instance, self.directory, doing)
        return record

    def _forget(self, record: ProcessRecord, ended: bool) -> None:
        """Drop an instance, destroyed or ended by itself (then its ending is reported);
        its files stay as :mod:`.retention` says. They are handed over before its record
        goes: a crash in between leaves the record, and the next start ends it again."""
        with self._lock:
            if self._records.pop(record.id, None) is None:
                return  # forgotten by another call meanwhile
        status = _kill_leftovers(record)
        ending = _ended_as(record, status) if ended else None
        if ending is not None:
            with self._lock:
                self._ended[record.id] = ending
                for old in list(self._ended)[:-ENDED_KEPT]:
                    del self._ended[old]
        cgroups.remove(record.cgroups)
        self.retention.add(retention.kept_as(record.id, record.tags, record.work_dir,
                                             record.log, ending))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{record.id}.json")
