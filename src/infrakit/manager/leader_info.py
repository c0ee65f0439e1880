"""Who leads a set of managers: what the leader records of itself, wherever it leads, for
``infrakit manager status`` and for followers that forward calls to it."""

from __future__ import annotations

import os
import socket
import time

import msgspec

from infrakit.spi.types import Wire


class LeaderInfo(Wire, kw_only=True):
    pid: int = msgspec.field(name="PID")
    host: str
    since: float
    store: str
    address: str = ""
    """The socket the leader serves on, where followers on its machine forward calls."""
    url: str = msgspec.field(default="", name="URL")
    """The leader's TCP listener, if it has one: where followers elsewhere forward calls."""

    @classmethod
    def me(cls, store: str, address: str = "", url: str = "") -> LeaderInfo:
        """This process, leading from now on."""
        return cls(pid=os.getpid(), host=socket.gethostname(), since=time.time(), store=store,
                   address=address, url=url)

    def now(self) -> LeaderInfo:
        """The same, leading from this moment."""
        import msgspec.structs

        return msgspec.structs.replace(self, since=time.time())

    def is_me(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()
