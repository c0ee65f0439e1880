"""The event loop a plugin server runs on: uvloop, unless the process went without TLS.

uvloop is the faster loop (bench/RESULTS.md), but it imports :mod:`ssl`, and so does
asyncio: OpenSSL and the ssl module hold about 5 MB of a plugin process. A process that
serves only its UNIX socket, and reaches nothing over TLS from its event loop, imports
asyncio without ssl (:func:`import_asyncio_without_tls`) before anything else imports it;
its server then runs on asyncio's own loop.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any

_state = {"without_tls": False}


def import_asyncio_without_tls() -> None:
    """Import asyncio with its TLS support left out; nothing if asyncio is imported already.

    ``import ssl`` works again afterwards, for whatever makes its own TLS connections (an
    HTTPS probe in a thread), but asyncio's transports, and so this process's server and
    any asyncio client, cannot speak TLS.
    """
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio then imports without TLS
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
    _state["without_tls"] = True


def require_tls(what: str) -> None:
    """Refuse to start ``what`` in a process whose asyncio has no TLS."""
    if _state["without_tls"]:
        raise RuntimeError(f"{what} needs TLS, and this process imported asyncio without it")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to the end on uvloop, or on asyncio's loop if asyncio has no TLS (uvloop
    would import ssl) or uvloop is missing."""
    import asyncio

    if not _state["without_tls"]:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
