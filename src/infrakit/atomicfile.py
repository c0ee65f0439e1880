"""Crash-safe file replacement: write a temp file, fsync it, rename it over, fsync the dir.

A reader sees either the old content or the new one, never a torn write, whatever point a
writer is killed at.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PARALLEL_FSYNCS = 16


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    """Replace several files of ``directory`` atomically and durably, each on its own.
    The fsyncs run side by side, so that the file system commits them together, and the
    directory is flushed once for all the renames. Either every file is replaced or, on
    an error, none is."""
    from concurrent.futures import ThreadPoolExecutor

    temps: list[tuple[int, str, str]] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            temps.append((fd, tmp, name))
            os.fchmod(fd, mode)
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
        with ThreadPoolExecutor(max(1, min(PARALLEL_FSYNCS, len(temps)))) as pool:
            list(pool.map(os.fsync, [fd for fd, _, _ in temps]))
    except BaseException:
        for _, tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        for fd, _, _ in temps:
            os.close(fd)
    for _, tmp, name in temps:
        os.replace(tmp, directory / name)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
