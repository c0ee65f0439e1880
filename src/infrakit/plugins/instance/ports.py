"""Free loopback ports handed to instances, none twice among one plugin's instances.

A port is free when nothing listens on it at the moment it is chosen; the instance binds
it a moment later. Two instances provisioned at once could be handed the same port in
that moment, and the second would die binding it: :class:`PortReservations` keeps the
ports handed out but not yet recorded, beside those the plugin's records hold.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

LOOPBACK = "127.0.0.1"
"""Where the ports handed out are: an instance's ``Address`` in its description (see
:mod:`infrakit.spi.facts`)."""


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something holds ``port`` on loopback (it cannot be bound)."""
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


class PortReservations:
    """The ports handed to instances being provisioned, not yet in a record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: set[int] = set()

    def allocate(self, names: Iterable[str], recorded: Iterable[int]) -> dict[str, int]:
        """A free loopback port per name, none of them ``recorded`` (held by the plugin's
        instances) nor reserved; reserved until :meth:`release`."""
        with self._lock:
            taken = set(recorded) | self._reserved
            ports: dict[str, int] = {}
            for name in names:
                port = free_port()
                while port in taken:
                    port = free_port()
                taken.add(port)
                ports[name] = port
            self._reserved.update(ports.values())
        return ports

    def reserve(self, ports: Iterable[int]) -> None:
        """Hold ports chosen by the user (fixed ones) while their instance starts."""
        with self._lock:
            self._reserved.update(ports)

    def reserved(self, port: int) -> bool:
        with self._lock:
            return port in self._reserved

    def __len__(self) -> int:
        """How many ports are reserved now."""
        with self._lock:
            return len(self._reserved)

    def release(self, ports: Iterable[int]) -> None:
        """The instance is recorded (its record holds its ports), or never started."""
        with self._lock:
            self._reserved.difference_update(ports)
