"""Health probes for flavors: a command, a TCP connect or an HTTP GET, whose target is a
template filled from the instance's description.

Templates use the reference's notation for fields: ``{{ .ID }}``, ``{{ .LogicalID }}``,
``{{ .Tags.name }}``, ``{{ .Properties.port }}`` (dotted paths into the properties). A probe
whose template cannot be filled answers "unknown": a probe that cannot run must never get
a member destroyed.

A probe loads what it needs when a probe of its kind first runs: an HTTP probe is a GET
through :mod:`urllib.request` in a thread of its own (with TLS for ``https``), so that a
flavor with no HTTP probe carries neither an HTTP client nor OpenSSL.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from infrakit.spi.errors import PluginError
from infrakit.spi.types import Description, Health, HealthReport, Wire

PROBES_AT_ONCE = 64
"""How many probes a flavor runs at a time; HTTP probes have as many threads."""

_FIELD = re.compile(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")


class ProbeSpec(Wire, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of ``Command`` (healthy when it exits 0), ``TCP`` (``host:port``,
    healthy when it accepts a connection) or ``HTTP`` (a URL, healthy on a 2xx answer)."""

    command: str | None = None
    tcp: str | None = msgspec.field(default=None, name="TCP")
    http: str | None = msgspec.field(default=None, name="HTTP")
    timeout: float = 2.0

    def check(self) -> None:
        given = [n for n, v in (("Command", self.command), ("TCP", self.tcp),
                                ("HTTP", self.http)) if v]
        if len(given) != 1:
            raise PluginError("Properties.Health: give exactly one of Command, TCP or HTTP"
                              f" (got {', '.join(given) or 'none'})")
        if self.timeout <= 0:
            raise PluginError("Properties.Health.Timeout: must be a positive number of seconds")
        target = self.command or self.tcp or self.http or ""
        if "{{" in _FIELD.sub("", target):
            raise PluginError(f"Properties.Health: {target!r} has a malformed {{{{ .Field }}}}")


class _Unfilled(LookupError):
    pass


def fill(template: str, instance: Description) -> str:
    """Replace every ``{{ .Path }}`` with the value it names in ``instance``."""
    root: dict[str, Any] = {"ID": instance.id, "LogicalID": instance.logical_id,
                            "Tags": instance.tags or {},
                            "Properties": None if instance.properties is msgspec.UNSET
                            else instance.properties}

    def value(match: re.Match[str]) -> str:
        node: Any = root
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node or node[part] is None:
                raise _Unfilled(match.group(0))
            node = node[part]
        return str(node)

    return _FIELD.sub(value, template)


async def probe(spec: ProbeSpec, instance: Description) -> HealthReport:
    """Run the probe against ``instance``: the verdict, and why when it is not healthy."""
    try:
        target = fill(spec.command or spec.tcp or spec.http or "", instance)
    except _Unfilled as exc:
        return HealthReport(Health.UNKNOWN, f"the probe names {exc}, which this member "
                                            "does not have")
    try:
        failure = await asyncio.wait_for(_run(spec, target), spec.timeout)
    except TimeoutError:
        failure = f"no answer within {spec.timeout:g}s"
    except OSError as exc:
        failure = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
    if failure is None:
        return HealthReport(Health.HEALTHY)
    return HealthReport(Health.UNHEALTHY, f"{_what(spec, target)}: {failure}")


def _what(spec: ProbeSpec, target: str) -> str:
    kind = "command" if spec.command is not None else "TCP" if spec.tcp is not None else "GET"
    return f"{kind} {target}"


async def _run(spec: ProbeSpec, target: str) -> str | None:
    """None when the probe passes; why it failed otherwise."""
    if spec.command is not None:
        proc = await asyncio.create_subprocess_shell(
            target, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            raise
        return None if code == 0 else f"exit status {code}"
    if spec.tcp is not None:
        host, _, port = target.rpartition(":")
        _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
        writer.close()
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_http_threads(), _http_failure, target, spec.timeout)


@functools.cache
def _http_threads() -> ThreadPoolExecutor:
    """The threads HTTP probes run in, made on first use: one per probe that may run at
    once, so that no probe waits for a thread while its deadline runs."""
    return ThreadPoolExecutor(PROBES_AT_ONCE, thread_name_prefix="probe")


def _http_failure(url: str, timeout: float) -> str | None:
    """None when a GET of ``url`` answers 2xx, after redirects; else why not (an answer
    that is not HTTP counts as a failure). No proxy: a probe reaches the member itself."""
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return (getattr(reason, "strerror", None) or str(reason)).lower()
    except http.client.HTTPException as exc:
        return f"not an HTTP answer ({type(exc).__name__})"
    return None if 200 <= status < 300 else f"HTTP {status}"
