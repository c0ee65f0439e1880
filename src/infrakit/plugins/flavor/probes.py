"""Health probes for flavors: a command, a TCP connect or an HTTP GET, whose target is a
template filled from the instance's description.

Templates use the reference's notation for fields: ``{{ .ID }}``, ``{{ .LogicalID }}``,
``{{ .Tags.name }}``, ``{{ .Properties.port }}`` (dotted paths into the properties). A filled
value is data: it never changes the shape of the command or where the probe goes (see
:mod:`infrakit.plugins.flavor.targets`). A probe whose template cannot be filled, or whose
filled target is not one it can aim at, answers "unknown": a probe that cannot run must never
get a member destroyed. Whatever goes wrong in one member's probe answers for that member
only.

A command runs in a session of its own; when it ends, times out or is abandoned, its whole
process group is killed, so that nothing it started outlives it.

A probe loads what it needs when a probe of its kind first runs: an HTTP probe is a GET
through :mod:`urllib.request` in a thread of its own (with TLS for ``https``), so that a
flavor with no HTTP probe carries neither an HTTP client nor OpenSSL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import msgspec

from infrakit.plugins.flavor import targets
from infrakit.spi.durations import Duration
from infrakit.spi.errors import PluginError
from infrakit.spi.types import Description, Health, HealthReport, Wire

PROBES_AT_ONCE = 64
"""How many probes a flavor runs at a time; HTTP probes have as many threads."""


class ProbeSpec(Wire, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of ``Command`` (a shell command line, healthy when it exits 0), ``TCP``
    (``host:port``, healthy when it accepts a connection) or ``HTTP`` (an ``http`` or
    ``https`` URL, healthy on a 2xx answer)."""

    command: str | None = None
    tcp: str | None = msgspec.field(default=None, name="TCP")
    http: str | None = msgspec.field(default=None, name="HTTP")
    timeout: Duration = 2.0
    """Seconds, or a duration such as ``"500ms"``."""

    def check(self) -> None:
        given = [n for n, v in (("Command", self.command), ("TCP", self.tcp),
                                ("HTTP", self.http)) if v]
        if len(given) != 1:
            raise PluginError("Properties.Health: give exactly one of Command, TCP or HTTP"
                              f" (got {', '.join(given) or 'none'})")
        if self.timeout <= 0:
            raise PluginError("Properties.Health.Timeout: must be a positive number of seconds")
        target = self.command or self.tcp or self.http or ""
        if "{{" in targets.FIELD.sub("", target):
            raise PluginError(f"Properties.Health: {target!r} has a malformed {{{{ .Field }}}}")
        wrong = targets.check_url_template(target) if self.http else None
        if wrong:
            raise PluginError(f"Properties.Health.HTTP: {target!r}: {wrong}")


class _CannotRun(Exception):
    """The probe could not be started: no fault of the member's."""


async def probe(spec: ProbeSpec, instance: Description) -> HealthReport:
    """Run the probe against ``instance``: the verdict, and why when it is not healthy.
    Never raises but to be cancelled."""
    template = spec.command or spec.tcp or spec.http or ""
    shown = _what(spec, template)
    try:
        shown = _what(spec, targets.fill(template, instance))
        failure = await asyncio.wait_for(_run(spec, instance), spec.timeout)
    except targets.Unfilled as exc:
        return HealthReport(Health.UNKNOWN, f"the probe names {exc}, which this member "
                                            "does not have")
    except (targets.BadTarget, _CannotRun) as exc:
        return HealthReport(Health.UNKNOWN, f"{shown}: {exc}")
    except asyncio.TimeoutError:
        failure = f"no answer within {spec.timeout:g}s"
    except OSError as exc:
        failure = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
    except Exception as exc:  # one member's probe answers for that member only
        return HealthReport(Health.UNKNOWN, f"{shown}: the probe failed: "
                                            f"{type(exc).__name__}: {exc}")
    if failure is None:
        return HealthReport(Health.HEALTHY)
    return HealthReport(Health.UNHEALTHY, f"{shown}: {failure}")


def _what(spec: ProbeSpec, target: str) -> str:
    kind = "command" if spec.command is not None else "TCP" if spec.tcp is not None else "GET"
    return f"{kind} {target}"


async def _run(spec: ProbeSpec, instance: Description) -> str | None:
    """None when the probe passes; why it failed otherwise."""
    if spec.command is not None:
        script, params = targets.shell_script(spec.command)
        return await _command_failure(script, targets.shell_arguments(params, instance))
    if spec.tcp is not None:
        host, port = targets.tcp_target(spec.tcp, instance)
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        return None
    url = targets.http_target(spec.http or "", instance)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_http_threads(), _http_failure, url, spec.timeout)


class _Child:
    """A probe command's process, the leader of a session of its own. A thread waits for
    it to end, then kills what it left in its group and reaps it; :meth:`kill` kills the
    group sooner. Both hold a lock, so the group is only signalled while its leader is
    not yet reaped: until then its id cannot be another process's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._lock = threading.Lock()
        self._reaped = False

    def watch(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future[int]) -> None:
        status = -1
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
        except ChildProcessError:  # reaped by someone else: its id may be another's now
            with self._lock:
                self._reaped = True
        else:
            with self._lock:
                self._kill_group()
                with contextlib.suppress(ChildProcessError):
                    status = os.waitpid(self.pid, 0)[1]
                self._reaped = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(_settle, ended, status)

    def kill(self) -> None:
        with self._lock:
            if not self._reaped:
                self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _settle(ended: asyncio.Future[int], status: int) -> None:
    if not ended.done():
        ended.set_result(status)


_DEVNULL = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]


async def _command_failure(script: str, args: list[str]) -> str | None:
    """Run ``script`` with ``sh -c``, ``args`` its positional parameters."""
    try:
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", script, "infrakit-probe", *args],
                             os.environ, file_actions=_DEVNULL, setsid=True)
    except OSError as exc:
        raise _CannotRun(f"cannot run the probe: {exc.strerror or exc}") from None
    child = _Child(pid)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[int] = loop.create_future()
    threading.Thread(target=child.watch, args=(loop, ended), name=f"probe-{pid}",
                     daemon=True).start()
    try:
        status = await ended
    finally:  # timed out or abandoned: the group dies now (ended: it is dead already)
        child.kill()
    if status == -1:
        return "its exit status is unknown"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by signal {-code}"
    return None if code == 0 else f"exit status {code}"


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
    except http.client.RemoteDisconnected:
        return "the connection was closed without an answer"
    except http.client.HTTPException as exc:
        return f"not an HTTP answer ({type(exc).__name__})"
    return None if 200 <= status < 300 else f"HTTP {status}"
