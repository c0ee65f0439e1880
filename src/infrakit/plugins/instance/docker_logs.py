"""``Instance.Logs`` for the docker instance plugin: a container's output (stdout and
stderr, interleaved as the engine keeps them), read through the engine's logs API.

The engine can only go on from a time (``since``, whole seconds here), so lines are read
with their timestamps, and the cursor is ``<nanoseconds>:<n>``: the time of the last line
given and how many lines of that very time were given (so that a line is neither given
twice nor lost). A first call gives the last ``tail`` lines, or the whole log (its last
:data:`~infrakit.spi.instance.LOGS_MAX_BYTES` when longer); each answer carries at most
that many bytes. The engine stamps a line when it reads it from the container: lines of
the two streams written at the same instant may come in either order.
"""

from __future__ import annotations

import calendar
import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from infrakit.plugins.instance.docker_ended import OVER
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import LOGS_MAX_BYTES, InstanceLogs

if TYPE_CHECKING:
    from infrakit.plugins.instance.docker import DockerInstancePlugin

_STAMP = re.compile(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")
_CURSOR = re.compile(r"([0-9]{1,19}):([0-9]{1,9})")
_START = (0, 0)


def serve(plugin: DockerInstancePlugin, instance: str, offset: str, tail: int | None,
          previous: bool) -> InstanceLogs:
    """``Instance.Logs`` of one of ``plugin``'s containers, running or ended (while the
    engine keeps it); ``previous`` asks for an ended one only."""
    cursor = _cursor(offset) if offset else None
    info = plugin._owned(instance, "read the logs of")
    if info is None:
        raise NotFoundError(f"Instance: no container {instance!r} on the Docker engine at "
                            f"{plugin.engine} (destroyed, or removed: only the most recent "
                            "ended containers are kept); no logs")
    ended = info["State"]["Status"] in OVER  # before reading: all it wrote is there then
    if previous and not ended:
        raise PluginError(f"Previous: instance {instance!r} has not ended (it runs): ask "
                          "without it for the logs of one that runs")
    with plugin._engine(f"reading the logs of container {instance}"):
        return read(plugin._api(), info["Id"], cursor, tail, ended)


def read(api: Any, container: str, cursor: tuple[int, int] | None, tail: int | None,
         ended: bool, limit: int = LOGS_MAX_BYTES) -> InstanceLogs:
    """The container's lines after ``cursor`` (None: a first call, with ``tail``)."""
    if cursor is None and tail is not None and tail <= 0:  # from now on: the last line's time
        last = list(_lines(api.logs(container, stdout=True, stderr=True, timestamps=True,
                                    tail=1, stream=True, follow=False)))
        return InstanceLogs(offset=_offset((last[-1][0], 1) if last else _START))
    if cursor is None:
        stream = api.logs(container, stdout=True, stderr=True, timestamps=True, stream=True,
                          follow=False, tail="all" if tail is None else tail)
        kept: deque[tuple[int, bytes]] = deque()
        size = 0
        for stamp, text in _lines(stream):
            kept.append((stamp, text))
            size += len(text)
            while size > limit and len(kept) > 1:
                size -= len(kept.popleft()[1])
        return _answer(list(kept), _START, ended)
    since = cursor[0] // 1_000_000_000
    stream = api.logs(container, stdout=True, stderr=True, timestamps=True, stream=True,
                      follow=False, since=since if since > 0 else None)
    got: list[tuple[int, bytes]] = []
    size, skip = 0, cursor[1]
    try:
        for stamp, text in _lines(stream):
            if stamp < cursor[0] or (stamp == cursor[0] and skip > 0):
                skip -= stamp == cursor[0]
                continue
            if got and size + len(text) > limit:
                return _answer(got, cursor, ended=False)  # more to come: call again
            got.append((stamp, text[:limit]))
            size += len(text)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return _answer(got, cursor, ended)


def _answer(lines: list[tuple[int, bytes]], cursor: tuple[int, int],
            ended: bool) -> InstanceLogs:
    """The answer for ``lines`` read after ``cursor``, with the cursor after them."""
    if lines:
        last = lines[-1][0]
        same = sum(1 for stamp, _ in lines if stamp == last)
        cursor = (last, same + (cursor[1] if last == cursor[0] else 0))
    data = b"".join(text for _, text in lines)
    return InstanceLogs(data=data.decode(errors="replace"), offset=_offset(cursor),
                        ended=ended)


def _lines(chunks: Iterable[bytes] | bytes) -> Iterator[tuple[int, bytes]]:
    """``(nanoseconds, line)`` of each line of the engine's output with timestamps."""
    if isinstance(chunks, bytes):
        chunks = [chunks]
    rest, last = b"", 0
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            last, text = _stamped(line + b"\n", last)
            yield last, text
    if rest:
        yield _stamped(rest, last)


def _stamped(line: bytes, last: int) -> tuple[int, bytes]:
    stamp, _, text = line.partition(b" ")
    match = _STAMP.fullmatch(stamp)
    if match is None:  # not a stamp: keep the line, at the time of the last one
        return last, line
    seconds = calendar.timegm(tuple(int(g) for g in match.groups()[:6]))
    return seconds * 1_000_000_000 + int((match[7] or b"0").ljust(9, b"0")), text


def _cursor(offset: str) -> tuple[int, int]:
    match = _CURSOR.fullmatch(offset)
    if match is None:
        raise PluginError(f"Offset: {offset!r} is not a cursor of this plugin's "
                          "(<nanoseconds>:<lines>): pass \"\" first, then the Offset of the "
                          "last answer")
    return int(match[1]), int(match[2])


def _offset(cursor: tuple[int, int]) -> str:
    return f"{cursor[0]}:{cursor[1]}"
