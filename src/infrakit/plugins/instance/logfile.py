"""``Instance.Logs`` over a log file that one instance appends to (the process plugin's).

The cursor is the byte offset in the file, in decimal. The first call starts ``tail`` lines
before the end, or at the start (the last :data:`~infrakit.spi.instance.LOGS_MAX_BYTES`,
at a line's start, when there is more); each answer carries at most that many bytes, and
never half a UTF-8 character.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from infrakit.spi.errors import PluginError
from infrakit.spi.instance import LOGS_MAX_BYTES, InstanceLogs


def read(log: Path, offset: str, tail: int | None, ended: bool,
         limit: int = LOGS_MAX_BYTES) -> InstanceLogs:
    """What the log holds from ``offset`` (or, on a first call, ``tail`` lines before its
    end); ``ended``: the instance has ended, so the file no longer grows."""
    try:  # never through a link: it could lead to any file this plugin may read
        f = open(os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")  # noqa: SIM115
    except FileNotFoundError:
        if offset:
            _position(offset)  # a bad cursor is still refused
        return InstanceLogs(data="", offset=offset or "0", ended=ended)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise PluginError(f"Instance: cannot read its log {str(log)!r}: {why}") from None
    with f:
        size = f.seek(0, os.SEEK_END)
        if offset:
            start = _position(offset)
            if start > size:  # the file was cut short meanwhile: read it again whole
                start = 0
        else:
            start = _start(f, size, tail, limit)
        f.seek(start)
        data = _whole_chars(f.read(limit))
    end = start + len(data)
    return InstanceLogs(data=data.decode(errors="replace"), offset=str(end),
                        ended=ended and end >= size)


def _position(offset: str) -> int:
    if not (offset.isascii() and offset.isdigit()) or len(offset) > 19:
        raise PluginError(f"Offset: {offset!r} is not a cursor of this plugin's (a byte "
                          "offset): pass \"\" first, then the Offset of the last answer")
    return int(offset)


def _start(fh: BinaryIO, size: int, tail: int | None, limit: int) -> int:
    """Where a first read starts: ``tail`` lines before the end, looked for within the
    last ``limit`` bytes; else the start, or the first line within the last ``limit``
    bytes when the file is longer."""
    if tail is None and size <= limit:
        return 0
    if tail is not None and tail <= 0:
        return size
    base = max(0, size - limit)
    fh.seek(max(0, base - 1))  # the byte before too: is ``base`` a line's start?
    window = fh.read(size - base + (base > 0))
    first = base if base == 0 else base + window.find(b"\n")  # the first line's start
    if first < base or first >= size:  # one line longer than the window: cut it
        first = base
    if tail is None:
        return first
    body = window[:-1] if window.endswith(b"\n") else window  # the last line's end
    at = len(body)
    for _ in range(tail):
        at = body.rfind(b"\n", 0, at)
        if at < 0:
            return first
    return size - len(window) + at + 1


def _whole_chars(data: bytes) -> bytes:
    """``data`` less a UTF-8 character cut at its end (it comes whole with the next read)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back
            continue
        if byte & 0xC0 == 0xC0:  # a lead byte: is its character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data[:-back] if need > back else data
        return data
    return data
