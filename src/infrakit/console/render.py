"""Rendering the console's pages: Jinja2 templates that ship in the package, and the
answers they go out in, each with the headers that keep the page safe.

Every value a template shows goes through :func:`_shown` and then HTML escaping: the
escaping keeps markup in a group ID, a tag or a reason from becoming markup, and
:func:`~infrakit.cli.output.printable` writes out the control characters (a terminal
escape sequence, a new line in an ID) as ``\\x1b``, so that what an operator sees is what
the value holds.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from infrakit.cli.output import printable
from infrakit.rpc.web import Response

HERE = Path(__file__).parent
STATIC = HERE / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
"""No inline script or style, nothing from elsewhere, no framing."""
SAFE = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"))
"""Sent with every answer. No referrer: a one-time login link never leaves in one."""
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml"}


def _shown(value: Any) -> Any:
    return printable(value, keep="\n") if isinstance(value, str) else value


def _path(value: str) -> str:
    """A value as one segment of a URL path (a group ID with ``/`` in it included)."""
    return quote(value, safe="")


def _age(seconds: float) -> str:
    """``3d4h``, ``2h5m``, ``4m10s``, ``9s``: two units at most."""
    s = max(int(seconds), 0)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, finalize=_shown, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(path=_path, age=_age, clock=_clock)
    return env


def page(template: str, code: int = 200, headers: tuple[tuple[str, str], ...] = (),
         **context: Any) -> Response:
    """``template`` rendered with ``context``, answered with HTTP status ``code``."""
    body = environment().get_template(template).render(**context).encode()
    return Response(code, body, (("Content-Type", "text/html; charset=utf-8"),
                                   ("Cache-Control", "no-store"), *SAFE, *headers))


def redirect(location: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(303, b"", (("Location", location), ("Cache-Control", "no-store"), *SAFE,
                               *headers))


def text(status: int, words: str) -> Response:
    return Response(status, (words + "\n").encode(),
                    (("Content-Type", "text/plain; charset=utf-8"), *SAFE))


@functools.cache
def _asset(name: str) -> bytes | None:
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        return None
    return path.read_bytes()


def static(name: str) -> Response:
    """A file of ``static/``, which changes only with the package (cached a day)."""
    body = _asset(name)
    if body is None:
        return text(404, f"no such asset: {printable(name)}")
    return Response(200, body, (("Content-Type", TYPES[Path(name).suffix]),
                                ("Cache-Control", "max-age=86400"), *SAFE))
