"""Where an instance plugin keeps its state: a private directory, and in it either one
state file for the whole plugin or one JSON record per instance with instance IDs that are
never reused. Every write is atomic, so a plugin killed at any point restarts on whole
files."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import msgspec

from infrakit.atomicfile import fsync_dir, remove_stale_temps, write_atomic
from infrakit.rpc.paths import PluginPathError, make_private_dir
from infrakit.spi.errors import NotFoundError, PluginError

log = logging.getLogger(__name__)

_COUNTER = ".next-id"
_ID_BLOCK = 64


def state_directory(directory: Path) -> Path:
    """Create the plugin's directory 0700 (and any missing parent), or refuse one that
    another user owns or that others may write to (they could plant links where the plugin
    writes, or records it would take for its own); and check that it can be written, with
    a new file of a name of its own (never through whatever is there)."""
    try:
        make_private_dir(directory, "instance directory")
    except PluginPathError as exc:
        raise PluginError(str(exc)) from None
    probe = directory / f".write-test.{os.getpid()}-{os.urandom(6).hex()}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise PluginError(
            f"instance directory {str(directory)!r} is not writable: {exc.strerror}"
        ) from None
    return directory


S = TypeVar("S")


class StateFile(Generic[S]):
    """A plugin's state of type ``kind`` (a msgspec struct whose fields all have defaults),
    loaded from ``path`` and rewritten whole after each change; read it under
    :attr:`lock`, change it with :meth:`update`."""

    def __init__(self, path: Path, kind: type[S]) -> None:
        self.path = path
        self.lock = threading.Lock()
        remove_stale_temps(path.parent)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.state = kind()
            return
        try:
            self.state = msgspec.json.decode(data, type=kind)
        except msgspec.DecodeError as exc:  # a ValidationError too
            # unlike one record of many, it holds what describes every instance (tags,
            # launches not listed yet): starting without it would lose them all
            raise PluginError(
                f"state file {str(path)!r} is damaged ({exc}): not starting, since the "
                "instances it records would be lost (described without their tags, or "
                "made again); repair it, or move it aside to start without it") from None

    def update(self, change: Callable[[S, float], bool]) -> None:
        """Apply ``change`` under the lock, given the time; save if it says it changed
        anything."""
        now = time.time()
        with self.lock:
            if change(self.state, now):
                write_atomic(self.path, msgspec.json.encode(self.state))


def id_pattern(prefix: str) -> re.Pattern[str]:
    """What an ID ``<prefix><n>`` looks like, and nothing else (no ``../``)."""
    return re.compile(re.escape(prefix) + r"[0-9]{1,20}")


def highest_id(names: Iterable[str], prefix: str) -> int:
    """The highest ID number that names of files (``<prefix><n>``, ``<prefix><n>.json``,
    ``<prefix><n>.log``, ``<prefix><n>.json.corrupt-<time>``, a temp file of one) hold;
    0 when none does."""
    numbered = re.compile(r"\.?" + re.escape(prefix) + r"([0-9]{1,20})(?:\.|$)")
    return max([0, *(int(m.group(1)) for m in map(numbered.match, names) if m)])


class IdCounter:
    """IDs ``<prefix><n>`` from a counter kept in the directory. The counter on disk runs a
    block ahead of what is handed out, so it is written once per block; after a restart the
    unused rest of a block is skipped: an ID is never handed out twice. Should the counter
    be lost, IDs go on after the highest one that a file of the directory still names (a
    record, one moved aside, a working directory or a log), which is as far as anyone can
    tell."""

    def __init__(self, directory: Path, prefix: str, taken: list[str]) -> None:
        self.prefix = prefix
        self.pattern = id_pattern(prefix)
        self._path = directory / _COUNTER
        self._lock = threading.Lock()
        found = max(highest_id([*os.listdir(directory), *taken], prefix) + 1, 1)
        try:
            stored = int(self._path.read_text())
        except FileNotFoundError:
            stored = 1
            if found > 1:
                log.warning("%s is missing: IDs go on after the highest one the files of "
                            "%s name (%s%d)", self._path, directory, prefix, found - 1)
        except (OSError, ValueError) as exc:
            stored = 1
            log.warning("%s is unreadable (%s): IDs go on after the highest one the files "
                        "of %s name (%s%d)", self._path, exc, directory, prefix, found - 1)
        self._next = self._reserved = max(stored, found)

    def number(self, instance: str) -> int:
        return int(instance.removeprefix(self.prefix))

    def handed_out(self, instance: str) -> bool:
        """Whether ``instance`` is an ID of this counter's form that it has handed out (or
        that was claimed): one the plugin made, whether it still exists or not."""
        if not self.pattern.fullmatch(instance):
            return False
        number = self.number(instance)
        if instance != f"{self.prefix}{number}":  # "instance-01": never written so
            return False
        with self._lock:
            return number < self._next

    def refuse_unknown(self, instance: str, where: Path, doing: str) -> None:
        """Refuse an ``instance`` of which there is no record, unless it is one that was
        handed out (it is gone): an ID of another form, or one never handed out, belongs
        to no instance of this plugin."""
        if not self.pattern.fullmatch(instance):
            raise NotFoundError(f"Instance: no instance {instance!r}: not an ID of this "
                                f"plugin's, which are {self.prefix}<n>; cannot {doing} it")
        if not self.handed_out(instance):
            raise NotFoundError(f"Instance: no instance {instance!r} in {where}: the plugin "
                                f"has made none by that ID; cannot {doing} it")

    def claim(self, instance: str) -> None:
        """An ID that appeared from outside (a file written by hand): never hand it out."""
        with self._lock:
            self._next = max(self._next, self.number(instance) + 1)
            if self._next > self._reserved:
                self._reserved = self._next + _ID_BLOCK
                write_atomic(self._path, f"{self._reserved}\n".encode())

    def take(self, n: int) -> list[str]:
        """The next ``n`` IDs."""
        with self._lock:
            if self._next + n > self._reserved:
                self._reserved = self._next + n + _ID_BLOCK
                write_atomic(self._path, f"{self._reserved}\n".encode())
            first = self._next
            self._next += n
        return [f"{self.prefix}{seq}" for seq in range(first, first + n)]


class Record(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Record)


def set_aside(path: Path, why: str) -> Path | None:
    """Move a damaged state file out of the way, to ``NAME.corrupt-<time>`` beside it, and
    say so in the log; it is never deleted: what it held may still be read by hand."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.rename(path, aside)
        fsync_dir(path.parent)
    except OSError as exc:
        log.error("%s is damaged (%s) and could not be moved aside: %s", path, why,
                  exc.strerror)
        return None
    log.error("%s is damaged (%s): moved aside to %s", path, why, aside.name)
    return aside


def load_records(directory: Path, prefix: str, decode: Callable[[bytes], R]
                 ) -> tuple[dict[str, R], IdCounter, list[str]]:
    """The records ``<prefix><n>.json`` of the directory, by ID in the order they were
    made; the directory's ID counter; and the IDs whose records were damaged (they do not
    decode, or hold another ID), which are moved aside (:func:`set_aside`) for the caller
    to recover what it can. A file that cannot be read, or a damaged one that cannot be
    moved, is named in the log and left as it is."""
    remove_stale_temps(directory)
    pattern = id_pattern(prefix)
    records: list[R] = []
    damaged: list[str] = []
    for path in directory.glob(f"{prefix}*.json"):
        iid = path.name.removesuffix(".json")
        if not pattern.fullmatch(iid):
            continue  # not a record's name
        try:
            record = decode(path.read_bytes())
        except OSError as exc:
            log.error("%s cannot be read, so its instance is not known: %s", path,
                      exc.strerror)
            continue
        except msgspec.DecodeError as exc:  # a ValidationError too
            why = str(exc)
        else:
            if record.id == iid:
                records.append(record)
                continue
            why = f"it holds the record of {record.id!r}"
        if set_aside(path, why) is not None:  # else it stays, and is not written over
            damaged.append(iid)
    counter = IdCounter(directory, prefix, [r.id for r in records] + damaged)
    records.sort(key=lambda r: counter.number(r.id))
    return {r.id: r for r in records}, counter, damaged
