"""A VM's QMP monitor, through the ``qemu.qmp`` client: its run state, and the requests to
power down and to quit. Each call connects anew: a VM's monitor serves one client at a
time, and the plugin holds none between calls (it may restart at any moment)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT = 3.0


async def _execute(socket: Path, name: str) -> Any:
    from qemu.qmp import QMPClient

    client = QMPClient(socket.parent.name)
    try:
        await asyncio.wait_for(client.connect(str(socket)), TIMEOUT)
        return await asyncio.wait_for(client.execute(name), TIMEOUT)
    finally:
        await client.disconnect()


def _command(socket: Path, name: str) -> Any:
    """Run one QMP command (the plugin's verbs run in threads of their own: each gets an
    event loop of its own for it)."""
    return asyncio.run(_execute(socket, name))


def status(socket: Path) -> str:
    """The VM's run state (``running``, ``paused``, ``shutdown``, ...), or ``unknown``
    when its monitor does not answer."""
    try:
        answer = _command(socket, "query-status")
    except Exception as exc:  # any failure of the monitor reads as "unknown"
        log.debug("query-status on %s: %s", socket, exc)
        return "unknown"
    return str(answer.get("status", "unknown")) if isinstance(answer, dict) else "unknown"


def request(socket: Path, name: str) -> bool:
    """Send ``system_powerdown`` or ``quit``; whether the monitor took it."""
    try:
        _command(socket, name)
    except Exception as exc:  # the VM may be gone, or be going: the caller waits and sees
        log.debug("%s on %s: %s", name, socket, exc)
        return False
    return True
