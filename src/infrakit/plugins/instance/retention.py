"""How long the files of an instance that is over (it ended by itself, or was destroyed)
are kept: its working directory and its log.

They are kept so that a user can still read why a member died (``infrakit instance logs
ID --previous``), but not forever: a crash loop, or an afternoon of rolling updates, would
leave a directory per instance behind. Of each group (by the group's tag on the instance;
instances of no group count as one group), the last :data:`~infrakit.settings.KEEP_ENDED`
that ended by themselves are kept, and as many of those destroyed (so that a rolling
update, which destroys every member, leaves the group's crashes to read), none of them
longer than :data:`~infrakit.settings.KEEP_ENDED_SECONDS`; the files of the others are
removed.

What is kept is recorded in ``<ID>.kept`` beside the plugin's instance records, so a
restarted plugin still serves the logs of the instances it keeps, still reports the
endings among them, and still removes their files when their time comes. Working
directories that no record names (left by a plugin that kept them all) are taken in as
ended at the time they were last changed, in no group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import msgspec
import msgspec.structs

from infrakit.atomicfile import write_atomic
from infrakit.plugins.instance.state import id_pattern
from infrakit.settings import KEEP_ENDED, KEEP_ENDED_SECONDS, SettingError
from infrakit.spi.errors import PluginError
from infrakit.spi.instance import GROUP_TAG, EndedInstance

log = logging.getLogger(__name__)

_SUFFIX = ".kept"


class Kept(msgspec.Struct, rename="pascal", kw_only=True, omit_defaults=True):
    """The files of one instance that is over, and how it ended."""

    id: str = msgspec.field(name="ID")
    group: str = ""
    over: float
    """When it ended or was destroyed (seconds since the epoch)."""
    work_dir: str
    log: str
    crashed: bool = False
    """Whether it ended by itself (not destroyed; or no record tells)."""
    ending: EndedInstance | None = None
    """How it ended by itself, while ``DescribeEnded`` reports it (it is not destroyed)."""


def kept_as(iid: str, tags: dict[str, str] | None, work_dir: str, log: str,
            ending: EndedInstance | None) -> Kept:
    return Kept(id=iid, group=(tags or {}).get(GROUP_TAG, ""), over=time.time(),
                work_dir=work_dir, log=log, crashed=ending is not None, ending=ending)


def policy() -> tuple[int, float]:
    """How many instances of a group keep their files, and for at most how many seconds,
    from the environment; a bad value is refused at start, naming its variable."""
    try:
        return KEEP_ENDED.read(), KEEP_ENDED_SECONDS.read()
    except SettingError as exc:
        raise PluginError(str(exc)) from None


def explain(keep: int, max_age: float) -> str:
    """The rule, in words, for a message about files that are no longer there."""
    return (f"the files of the last {keep} per group that ended, and of as many destroyed, "
            f"are kept, for at most {max_age:g}s "
            f"({KEEP_ENDED.env}, {KEEP_ENDED_SECONDS.env})")


def remove_files(work_dir: str, log: str) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(log)


class Retention:
    """The instances of one plugin whose files are kept, by ID."""

    def __init__(self, directory: Path, prefix: str, keep: int, max_age: float,
                 live: set[str]) -> None:
        """Load what ``directory`` records as kept, take in the working directories of
        instances neither recorded nor in ``live``, and remove what is past keeping."""
        self.directory = directory
        self.keep = keep
        self.max_age = max_age
        self._lock = threading.Lock()
        self._kept: dict[str, Kept] = {}
        pattern = id_pattern(prefix)
        for path in directory.glob(f"{prefix}*{_SUFFIX}"):
            try:
                kept = msgspec.json.decode(path.read_bytes(), type=Kept)
            except (OSError, msgspec.DecodeError) as exc:
                log.error("%s cannot be read (%s): the files it names are left as they are",
                          path, exc)
                continue
            if path.name != f"{kept.id}{_SUFFIX}" or not pattern.fullmatch(kept.id) or \
                    Path(kept.work_dir) != directory / kept.id:
                # the plugin never writes such a record: never remove what it names
                log.error("%s names files this plugin did not make: left as they are", path)
                continue
            self._kept[kept.id] = kept
        entries = list(os.scandir(directory))
        # an instance whose record was set aside as damaged: its files are for a person
        set_aside = {e.name.partition(".json.corrupt-")[0] for e in entries
                     if ".json.corrupt-" in e.name}
        for entry in entries:
            iid = entry.name
            if pattern.fullmatch(iid) and entry.is_dir(follow_symlinks=False) and \
                    iid not in live and iid not in self._kept and iid not in set_aside:
                self._kept[iid] = Kept(id=iid, over=entry.stat().st_mtime, crashed=True,
                                       work_dir=entry.path, log=str(Path(entry.path,
                                                                         f"{iid}.log")))
        self.prune()

    def add(self, kept: Kept) -> None:
        """Keep the files of an instance now over, and remove those past keeping."""
        if self.keep > 0:
            write_atomic(self.directory / f"{kept.id}{_SUFFIX}", msgspec.json.encode(kept))
        with self._lock:
            self._kept[kept.id] = kept
        self.prune()

    def destroyed(self, iid: str) -> None:
        """An instance that had ended was destroyed: its files stay, among those that
        ended, but it is no longer reported as ended, after a restart either."""
        with self._lock:
            kept = self._kept.get(iid)
            if kept is None or kept.ending is None:
                return
            kept = self._kept[iid] = msgspec.structs.replace(kept, ending=None)
            write_atomic(self.directory / f"{iid}{_SUFFIX}", msgspec.json.encode(kept))

    def get(self, iid: str) -> Kept | None:
        """What is kept of ``iid``, if it is not past keeping."""
        self.prune()
        with self._lock:
            return self._kept.get(iid)

    def endings(self) -> list[EndedInstance]:
        """How the kept instances that ended by themselves ended, oldest first."""
        with self._lock:
            kept = sorted(self._kept.values(), key=lambda k: k.over)
        return [k.ending for k in kept if k.ending is not None]

    def prune(self) -> None:
        """Remove the files of the instances past keeping: older than ``max_age``, or
        behind the last ``keep`` of their group that ended, or were destroyed, as they
        did."""
        oldest = time.time() - self.max_age
        with self._lock:
            groups: dict[tuple[str, bool], list[Kept]] = {}
            for kept in sorted(self._kept.values(), key=lambda k: k.over, reverse=True):
                groups.setdefault((kept.group, kept.crashed), []).append(kept)
            gone = [k for members in groups.values()
                    for n, k in enumerate(members) if n >= self.keep or k.over < oldest]
            for kept in gone:
                del self._kept[kept.id]
        for kept in gone:
            remove_files(kept.work_dir, kept.log)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{kept.id}{_SUFFIX}")
            log.info("%s: its files are removed (%s)", kept.id,
                     explain(self.keep, self.max_age))
