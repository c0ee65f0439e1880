"""The ``file`` instance plugin: one JSON file per instance, for development and tests.

Each instance is ``<dir>/<ID>.json``, written atomically. IDs come from a counter kept in
``<dir>/.next-id`` and are never reused, even across restarts. Records are read at start
and served from memory, and every change is written through to disk before the call
returns. The directory is read again whenever it changed (its modification time tells, at
the cost of one ``stat`` per describe): an instance whose file was removed by hand is gone,
and reported by ``DescribeEnded`` as removed outside the plugin, as the reference's plugin,
which reads the directory on every call, would no longer list it.

Destroy of an instance the plugin made that is gone already (destroyed before, or its file
removed by hand) succeeds, and logs that it was gone; an ID of another form, or one the
plugin never handed out, is refused. Label of a gone instance is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import msgspec.structs

from infrakit.atomicfile import fsync_dir, write_atomic, write_atomic_many
from infrakit.plugins.instance.state import load_records, state_directory
from infrakit.plugins.instance.tagindex import TagIndex
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import EndedInstance
from infrakit.spi.methods import nonblocking
from infrakit.spi.types import Attachment, Description, Spec

log = logging.getLogger(__name__)

ENDED_KEPT = 128
"""Removed instances remembered, for a group to learn of each removal."""


class InstanceRecord(msgspec.Struct, rename="pascal", kw_only=True):
    """What the file of one instance holds."""

    id: str = msgspec.field(name="ID")
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    tags: dict[str, str] = {}
    init: str = ""
    properties: Any = None
    attachments: list[Attachment] | None = None
    created: float = 0.0
    spec_tags: dict[str, str] | None = None
    """The tags it was provisioned with (``Tags`` are those and any labels since)."""

    def descriptions(self) -> tuple[dict[str, str], Description, Description]:
        """Its tags, to filter on, and how it is described: without and with its
        properties, which are, as the reference's file plugin has them, the whole spec it
        was provisioned with (``Properties``, ``Tags``, ``Init``, ``LogicalID``,
        ``Attachments``)."""
        bare = Description(id=self.id, logical_id=self.logical_id,
                           tags=self.tags)  # records are replaced, never changed
        spec = {"Properties": self.properties, "Tags": self.spec_tags, "Init": self.init,
                "LogicalID": self.logical_id,
                "Attachments": msgspec.to_builtins(self.attachments)}
        return self.tags, bare, msgspec.structs.replace(bare, properties=spec)


_decode_record = msgspec.json.Decoder(InstanceRecord).decode


class FileInstancePlugin:
    """Instance/0.5.0 over a directory of JSON files."""

    def __init__(self, directory: Path) -> None:
        self.directory = state_directory(Path(directory))
        self._lock = threading.Lock()
        # a damaged record is set aside and named in the log: what it held is lost
        self._records, self._ids, _ = load_records(self.directory, "instance-",
                                                   _decode_record)
        self._described = {i: r.descriptions() for i, r in self._records.items()}
        """Each record's descriptions, made once: describing is the hot path."""
        self._index = TagIndex(self._ids.number)
        """The records by tag: a describe by a group's tag reads only that group's."""
        for record in self._records.values():
            self._index.add(record.id, record.tags.items())
        self._ended: dict[str, EndedInstance] = {}
        """Instances whose files were removed outside the plugin, the last ENDED_KEPT."""
        self._mtime = self._dir_mtime()
        self._refused: dict[str, tuple[int, int]] = {}
        """Files under a record's name that are not records, by ID: the version of each
        that was named in the log."""

    def _put(self, record: InstanceRecord) -> None:
        """Add or replace a record (under the lock)."""
        old = self._records.get(record.id)
        before = old.tags.items() if old is not None else set()
        self._records[record.id] = record
        self._described[record.id] = record.descriptions()
        self._index.remove(record.id, before - record.tags.items())
        self._index.add(record.id, record.tags.items() - before)

    def _drop(self, record: InstanceRecord) -> None:
        """Forget a record (under the lock)."""
        del self._records[record.id], self._described[record.id]
        self._index.remove(record.id, record.tags.items())

    def _path(self, instance: str) -> Path:
        return self.directory / f"{instance}.json"

    def _existing(self, instance: str, doing: str) -> InstanceRecord | None:
        """The record of an instance (under the lock); None for one the plugin made that
        is gone, an error for an ID it never handed out."""
        record = self._records.get(instance)
        if record is None:
            self._ids.refuse_unknown(instance, self.directory, doing)
        return record

    def validate(self, properties: Any) -> None:
        """Any JSON value is acceptable as properties of a file instance."""

    def _records_for(self, specs: list[Spec]) -> list[InstanceRecord]:
        now = time.time()
        return [InstanceRecord(id=iid, logical_id=spec.logical_id, tags=dict(spec.tags or {}),
                               init=spec.init, properties=spec.properties,
                               attachments=spec.attachments, created=now,
                               spec_tags=spec.tags)
                for iid, spec in zip(self._ids.take(len(specs)), specs, strict=True)]

    def provision(self, spec: Spec) -> str:
        [record] = self._records_for([spec])
        write_atomic(self._path(record.id), msgspec.json.encode(record))  # its own file
        with self._lock:
            self._put(record)
        return record.id

    def provision_each(self, specs: list[Spec]) -> list[str | Exception]:
        """Several instances, written with two flushes to disk in all."""
        records = self._records_for(specs)
        try:
            write_atomic_many(self.directory, {f"{r.id}.json": msgspec.json.encode(r)
                                               for r in records})
        except OSError as exc:
            raise PluginError(f"Instance: cannot write to {self.directory}: {exc.strerror}")\
                from None
        with self._lock:
            for record in records:
                self._put(record)
        return [r.id for r in records]

    def label(self, instance: str, labels: dict[str, str]) -> None:
        self._follow_directory()  # a file removed by hand must not be written again
        with self._lock:
            record = self._existing(instance, "label")
            if record is None:
                raise NotFoundError(f"Instance: {instance!r} is gone (destroyed, or its "
                                    "file removed outside the plugin); cannot label it")
            updated = msgspec.structs.replace(record, tags={**record.tags, **labels})
            write_atomic(self._path(instance), msgspec.json.encode(updated))
            self._put(updated)

    def destroy(self, instance: str) -> None:
        """Remove the instance's file; an instance already gone is destroyed already, and
        no longer reported as removed outside the plugin. The directory is read again
        only for an instance the plugin does not know (written there by hand): reading
        it for each destroy made destroying n instances cost n listings of up to n files."""
        if instance not in self._records:
            self._follow_directory()
        with self._lock:
            record = self._existing(instance, "destroy")
            self._ended.pop(instance, None)
            if record is not None:
                with contextlib.suppress(FileNotFoundError):  # removed by hand just now
                    os.unlink(self._path(instance))
                fsync_dir(self.directory)
                self._drop(record)
        if record is None:
            log.info("Instance %s was already gone (destroyed before, or its file removed "
                     "outside the plugin): nothing to destroy", instance)

    def _dir_mtime(self) -> int:
        return os.stat(self.directory).st_mtime_ns

    def _follow_directory(self) -> None:
        """If the directory changed since it was last read, forget the instances whose
        files are gone (they were removed outside the plugin) and take in the instance
        files written there by hand."""
        mtime = self._dir_mtime()
        if mtime == self._mtime:
            return
        names = set(os.listdir(self.directory))
        self._take_in(names)
        with self._lock:
            self._mtime = mtime
            gone = [r for i, r in self._records.items() if f"{i}.json" not in names]
            for record in gone:
                self._drop(record)
                self._ended[record.id] = EndedInstance(
                    id=record.id, logical_id=record.logical_id, tags=record.tags,
                    reason="removed outside the plugin (its file is gone)", crashed=False,
                    started=record.created, ended=time.time())
            for old in list(self._ended)[:-ENDED_KEPT]:
                del self._ended[old]

    def _take_in(self, names: set[str]) -> None:
        """Records in files named ``<ID>.json`` this plugin did not write (by hand, in its
        format); a file that does not decode, or holds another ID, is left alone (it may
        be being written) and named in the log, once for each version of it."""
        with self._lock:
            known = {f"{i}.json" for i in self._records}
        for name in names - known:
            iid = name.removesuffix(".json")
            if name == iid or not self._ids.pattern.fullmatch(iid):
                continue
            try:
                record = _decode_record(self._path(iid).read_bytes())
            except OSError:
                continue
            except msgspec.DecodeError as exc:
                self._refuse(iid, str(exc))
                continue
            if record.id != iid:
                self._refuse(iid, f"it holds the record of {record.id!r}")
                continue
            self._ids.claim(iid)
            with self._lock:
                if iid not in self._records:
                    self._put(record)

    def _refuse(self, iid: str, why: str) -> None:
        path = self._path(iid)
        try:
            st = os.stat(path)
        except OSError:
            return
        version = (st.st_mtime_ns, st.st_size)
        if self._refused.get(iid) != version:
            self._refused[iid] = version
            log.warning("%s is not an instance record (%s): not taken in, left as it is",
                        path, why)

    @nonblocking
    def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        """The instances whose files were removed by hand, the last ``ENDED_KEPT``."""
        self._follow_directory()
        wanted = tags.items()
        return [e for e in list(self._ended.values()) if wanted <= (e.tags or {}).items()]

    @nonblocking
    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """Served from memory, so it runs on the event loop without a thread hop; the
        directory is read again only when it changed. Only the records that carry the
        rarest of the tags are tested (a group's, of many groups)."""
        self._follow_directory()
        wanted = tags.items()
        with self._lock:  # a pool thread may be adding records
            ids = self._index.candidates(tags)
        # list() of a dict's values runs in C without releasing the GIL: a consistent
        # snapshot even while a pool thread adds or removes a record
        described = self._described
        rows = list(described.values()) if ids is None else \
            [d for d in map(described.get, ids) if d is not None]
        at = 2 if properties else 1
        return [d[at] for d in rows if wanted <= d[0].items()]  # type: ignore[misc]
