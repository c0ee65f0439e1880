"""Crash-safe file replacement: write a temp file, fsync it, rename it over, fsync the dir.

A reader sees either the old content or the new one, never a torn write, whatever point a
writer is killed at. A temp file is named for the process writing it (``.NAME.PID.tmp``,
or ``.NAME.PID-RANDOM.tmp``), so that what a killed writer left can be told from what a
live one is writing, and removed (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    # a random part, since threads of one process may write the same name at once;
    # os.urandom rather than tempfile, which would load shutil, bz2 and lzma into a plugin
    tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_atomic_many(directory: Path, files: dict[str, bytes], mode: int = 0o600) -> None:
    """Replace several files of ``directory`` atomically and durably, each on its own, with
    two flushes to disk in all: one for every file's content, one for the renames. The
    caller must be the only one writing these names at the time. Either every file is
    replaced or, on an error, none is."""
    temps: list[tuple[str, str]] = []
    pid = os.getpid()
    try:
        for name, data in files.items():
            # named for the process, not random: the caller is the only writer of ``name``
            tmp = os.path.join(directory, f".{name}.{pid}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            temps.append((tmp, name))
            try:
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        _flush(directory, [tmp for tmp, _ in temps])
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, name in temps:
        os.replace(tmp, directory / name)
    fsync_dir(directory)


def remove_stale_temps(directory: Path) -> int:
    """Remove the temp files of writers that died in the middle of a write; returns how
    many. A temp file of a live process (this one or another) is left alone."""
    removed = 0
    for path in directory.glob(".*.tmp"):
        owner = path.name[:-len(".tmp")].rsplit(".", 1)[-1].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush(directory: Path, paths: list[str]) -> None:
    """Make the content of ``paths`` durable: one ``syncfs(2)`` of the file system that
    holds ``directory`` (a single journal commit, where one fsync per file costs one
    commit each), or, where the C library lacks it, one fsync per file. The price of
    ``syncfs``: it also flushes whatever else is waiting to be written on that file system."""
    import ctypes

    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is not None:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(dfd) == 0:
                return
        finally:
            os.close(dfd)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
