"""``infrakit ui``: the console for one machine, served on 127.0.0.1 by a process of its
own, which talks to the group plugin (or the manager) through its UNIX socket, as the
local user.

Whoever can connect to 127.0.0.1 could reach the port, so nothing is served to a browser
without a session, and the only way to one is the link printed at start: it holds a
random token that logs one browser in, once, within minutes (as Jupyter's link does). The
socket's owner is ``admin`` on it, so the session is too.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from infrakit.console.app import Console
from infrakit.rpc.client import AsyncRPCClient
from infrakit.rpc.http import HTTPServer
from infrakit.rpc.lifecycle import bind_tcp
from infrakit.rpc.typed import AsyncGroupClient
from infrakit.spi.access import Principal, Role

log = logging.getLogger("infrakit.console")

HOST = "127.0.0.1"


async def serve_locally(plugin: Path, port: int, announce: Callable[[str], None],
                        stop: asyncio.Event | None = None) -> None:
    """Serve the console of the group plugin at socket ``plugin`` on 127.0.0.1:``port``
    (0: a free port) until SIGINT or SIGTERM (or ``stop``); ``announce`` is given the
    one-time login URL once the port answers."""
    stop = stop or asyncio.Event()
    sock = bind_tcp(HOST, port, "--port")
    rpc = AsyncRPCClient(plugin, forwards=True)  # the audit log names the local user
    console = Console(AsyncGroupClient(rpc), plugin)
    server = HTTPServer(None, {}, web=console)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(sock)
        bound = sock.getsockname()[1]
        me = Principal(getpass.getuser(), Role.ADMIN)
        announce(f"http://{HOST}:{bound}{console.login_link(me)}")
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close(1.0)
        console.close()
        await rpc.close()
