"""What a cloud instance plugin keeps between calls and across restarts, in one state file.

A cloud lists what it made only eventually, and may list what it destroyed for a while.
So the plugin keeps the instances it launched that are not listed yet (``launched``, each
with the wall-clock time ``until`` which it is described anyway) and the ones it destroyed
(``terminated``: ID -> until when it is hidden). Past their deadlines, entries are
dropped. The file is rewritten atomically, under a lock, after every change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from infrakit.atomicfile import remove_stale_temps, write_atomic
from infrakit.spi.errors import PluginError


class Expiring(Protocol):
    launched: dict[str, Any]
    """Each value has ``until``: the wall-clock time it is described until."""
    terminated: dict[str, float]


S = TypeVar("S", bound=Expiring)


class StateFile(Generic[S]):
    """A plugin's state of type ``kind`` (a msgspec struct), loaded from and saved to
    ``path``; read it under :attr:`lock`, change it with :meth:`update`."""

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
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PluginError(f"state file {str(path)!r} is unreadable: {exc}") from None

    def update(self, change: Callable[[S, float], bool]) -> None:
        """Apply ``change`` (which says whether it changed anything) and drop what is past
        its deadline, then save if anything changed."""
        import time

        now = time.time()
        with self.lock:
            state = self.state
            changed = change(state, now)
            expired = [i for i, r in state.launched.items() if r.until <= now]
            gone = [i for i, until in state.terminated.items() if until <= now]
            for i in expired:
                del state.launched[i]
            for i in gone:
                del state.terminated[i]
            if changed or expired or gone:
                write_atomic(self.path, msgspec.json.encode(state))


def seconds_setting(variable: str, default: float, given: float | None = None) -> float:
    """``given``, else a positive number of seconds from the environment variable
    ``variable``, else ``default``."""
    if given is not None:
        return given
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise PluginError(f"${variable}: {raw!r} is not a number of seconds") from None
    if value <= 0:
        raise PluginError(f"${variable}: must be positive")
    return value
