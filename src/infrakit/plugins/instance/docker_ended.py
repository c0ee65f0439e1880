"""What the docker instance plugin knows of its containers that ended without a Destroy,
for ``Instance.DescribeEnded``.

A container of the plugin that exits (or is killed, or dies of its memory limit) is left on
the engine, exited, with its exit status and its logs. The first listing of the plugin's
containers that finds it so (DescribeInstances or DescribeEnded, both list them in one call)
inspects it and reads the tail of its logs, once, and keeps what it learnt. The most recent
exited containers of each group stay on the engine, as many as
:data:`~infrakit.settings.KEEP_ENDED` says, for at most
:data:`~infrakit.settings.KEEP_ENDED_SECONDS`; older ones are removed, and what was learnt
of them is still reported, among the last :data:`KEEP_ENDINGS` endings.

A container seen running that a later listing, which would have shown it, no longer shows
was removed outside the plugin (``docker rm -f``): its ending says so. A container
destroyed through the plugin is neither: Destroy marks it while it stops and removes it, and
forgets it after. Listings and Destroy's marks are taken under one lock, so a listing made
before a Destroy finished can never report the container as ended.

It all lives in memory: a restarted plugin learns again the exited containers still on the
engine, but cannot tell which ones were removed while it was down.
"""

from __future__ import annotations

import calendar
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import docker.errors

from infrakit.plugins.instance import provider_tags
from infrakit.plugins.instance.retention import policy
from infrakit.spi.instance import GROUP_TAG, EndedInstance

LIVE = frozenset({"running", "paused", "restarting"})
"""Container states that count as an instance."""
OVER = frozenset({"exited", "dead"})
"""Container states of a container that ended."""

KEEP_ENDINGS = 100
"""Endings reported, removed containers' included: at least what the SPI asks a plugin to
remember."""
OUTPUT_LINES = 20
"""Lines of a container's output an ending carries."""
LINE_LIMIT = 500
"""Characters of each of those lines: the report is sent on every group pass."""
REMOVED = "removed outside the plugin"

_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                    r"(?:Z|([+-])(\d\d):(\d\d))")
_SIGNALS = ("HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
            "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
            "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS")
"""Linux's signals, by number from 1: a container's, whatever the plugin's host."""


def parse_time(stamp: str | None) -> float:
    """Seconds since the epoch of an RFC 3339 time as the engine writes it (nanoseconds,
    ``Z``); 0.0 for Go's zero time (``0001-01-01T00:00:00Z``: never) or anything else."""
    match = _STAMP.fullmatch(stamp or "")
    if match is None or int(match[1]) <= 1:
        return 0.0
    seconds = calendar.timegm(tuple(int(g) for g in match.groups()[:6]))
    if match[8]:
        offset = int(match[9]) * 3600 + int(match[10]) * 60
        seconds -= offset if match[8] == "+" else -offset
    return seconds + (float(f"0.{match[7]}") if match[7] else 0.0)


def how_it_ended(state: dict[str, Any]) -> tuple[str, int | None]:
    """The reason in words and the exit status, from an inspection's ``State``. As Docker
    (and the shell) have it, status 128+N is death by signal N: a process that exits with
    such a status by itself is told the same way."""
    code = state.get("ExitCode")
    oom = bool(state.get("OOMKilled"))
    status: int | None = None
    if isinstance(code, int) and 128 < code <= 128 + 64:
        number = code - 128
        name = f" (SIG{_SIGNALS[number - 1]})" if number <= len(_SIGNALS) else ""
        reason = ("killed: out of memory (OOMKilled)" if oom and number == 9
                  else f"killed by signal {number}{name}")
    else:
        status = code if isinstance(code, int) else None
        reason = f"exited with status {code}" if status is not None else "exited"
        if oom:
            reason += ", out of memory (OOMKilled)"
    error = state.get("Error")
    return (f"{reason}: {error}" if error else reason), status


def output_lines(raw: bytes | str) -> list[str]:
    """The last :data:`OUTPUT_LINES` lines of a container's logs, each cut at
    :data:`LINE_LIMIT` characters."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return [line[:LINE_LIMIT] for line in text.splitlines()[-OUTPUT_LINES:]]


class Listed(NamedTuple):
    """A container of the plugin as a listing shows it."""

    instance: str
    container: dict[str, Any]
    tags: dict[str, str]
    """Its tags: its labels but the reserved ones, with those Instance.Label gave it."""

    @property
    def labels(self) -> dict[str, str]:
        """Its labels on the engine."""
        return self.container.get("Labels") or {}


def instance_of(container: dict[str, Any], ids: re.Pattern[str]) -> str | None:
    """The instance ID of a listed container, if it has a name of the plugin's."""
    for name in container.get("Names") or []:
        instance: str = name[1:]  # "/name"; a linked name has a second "/"
        if ids.fullmatch(instance):
            return instance
    return None


def sort_out(listed: list[dict[str, Any]], ids: re.Pattern[str], starting: set[str],
             overrides: dict[str, dict[str, str]]) -> tuple[list[Listed], list[tuple[str, str]]]:
    """A listing of containers with the plugin's label: those named as its instances, with
    their tags (``overrides`` from Instance.Label), and the ``(instance, container ID)`` of
    those created but never started, bar the ones still ``starting``: debris of a plugin
    that died in between."""
    mine: list[Listed] = []
    debris: list[tuple[str, str]] = []
    for c in listed:
        instance = instance_of(c, ids)
        if instance is None:
            continue
        if c["State"] == "created" and instance not in starting:
            debris.append((instance, c["Id"]))
            continue
        tags = provider_tags.without_reserved(c.get("Labels") or {})
        tags.update(overrides.get(instance, {}))
        mine.append(Listed(instance, c, tags))
    return mine, debris


def learn(api: Any, item: Listed) -> EndedInstance | None:
    """Inspect an ended container and read the tail of its logs; None if it is gone."""
    cid = item.container["Id"]
    try:
        state = api.inspect_container(cid)["State"]
    except docker.errors.NotFound:
        return None
    output: list[str] | None = None
    with contextlib.suppress(docker.errors.APIError):  # a logging driver that cannot be read
        output = output_lines(api.logs(cid, stdout=True, stderr=True, tail=OUTPUT_LINES))
    reason, status = how_it_ended(state)
    return EndedInstance(id=item.instance,
                         logical_id=item.labels.get(provider_tags.LOGICAL_ID),
                         tags=item.tags, reason=reason, exit_status=status,
                         started=parse_time(state.get("StartedAt")),
                         ended=parse_time(state.get("FinishedAt")) or time.time(),
                         output=output)


@dataclass
class _Running:
    """A container seen live: what its ending says if it is removed outside the plugin."""

    container_id: str
    labels: dict[str, str]
    report: EndedInstance


@dataclass
class _Ended:
    container_id: str
    labels: dict[str, str]
    report: EndedInstance
    on_engine: bool
    """Whether its container is still on the engine, exited."""


class EndedContainers:
    """The endings of one plugin's containers; listings go through :meth:`sweep` while the
    caller holds :attr:`lock` (from before the listing is made)."""

    def __init__(self, keep_endings: int | None = None) -> None:
        self.lock = threading.Lock()
        self.keep_exited, self.max_age = policy()
        """Exited containers of each group left on the engine, the most recent ones, and
        for how long at most. Each keeps its exit status and logs (for DescribeEnded, and
        for ``docker logs`` by whoever looks into a crash), but also its writable layer and
        its log file on the engine's disk: a crash loop must not fill it."""
        self.keep_endings = KEEP_ENDINGS if keep_endings is None else keep_endings
        self._running: dict[str, _Running] = {}
        self._ended: dict[str, _Ended] = {}
        self._destroying: set[str] = set()

    def sweep(self, listed: list[Listed], filtered_on: dict[str, str],
              inspect: Callable[[Listed], EndedInstance | None]) -> list[tuple[str, str]]:
        """Take in a listing made under :attr:`lock` with the engine's label filter
        ``filtered_on``; ``inspect`` learns how a container ended (see :func:`learn`).
        Returns the ``(instance, container ID)`` of the exited containers to remove from the
        engine."""
        present = {item.instance: item.container["Id"] for item in listed}
        for item in listed:
            self._take(item, inspect)
        wanted = filtered_on.items()
        now = time.time()
        for instance, running in list(self._running.items()):
            if present.get(instance) != running.container_id and wanted <= running.labels.items() \
                    and instance not in self._destroying:
                del self._running[instance]
                running.report.ended = now
                self._ended[instance] = _Ended(running.container_id, running.labels,
                                               running.report, on_engine=False)
        for instance, ended in self._ended.items():
            if present.get(instance) != ended.container_id and wanted <= ended.labels.items():
                ended.on_engine = False
        return self._prune()

    def _take(self, item: Listed, inspect: Callable[[Listed], EndedInstance | None]) -> None:
        instance, cid, state = item.instance, item.container["Id"], item.container["State"]
        ended = self._ended.get(instance)
        if state in LIVE:
            if ended is not None and ended.container_id == cid:
                del self._ended[instance]  # started again, by hand: it may end anew
            known = self._running.get(instance)
            if known is not None and known.container_id == cid and \
                    known.report.tags == item.tags:
                return
            self._running[instance] = _Running(cid, item.labels, EndedInstance(
                id=instance, logical_id=item.labels.get(provider_tags.LOGICAL_ID),
                tags=item.tags, reason=REMOVED, crashed=False,  # started: when it was made,
                started=float(item.container.get("Created") or 0)))  # as listings tell
        elif state in OVER:
            self._running.pop(instance, None)
            if ended is not None and ended.container_id == cid:
                ended.on_engine = True
            elif instance not in self._destroying:
                report = inspect(item)
                if report is not None:
                    self._ended[instance] = _Ended(cid, item.labels, report, on_engine=True)

    def _prune(self) -> list[tuple[str, str]]:
        """Forget the endings past the last :attr:`keep_endings`, and take off the engine
        the exited containers past the most recent :attr:`keep_exited` of their group, or
        older than :attr:`max_age`."""
        newest_first = sorted(self._ended.items(), key=lambda kv: kv[1].report.ended,
                              reverse=True)
        remove: list[tuple[str, str]] = []
        kept_exited: dict[str, int] = {}
        oldest = time.time() - self.max_age
        for rank, (instance, ended) in enumerate(newest_first):
            group = (ended.report.tags or {}).get(GROUP_TAG, "")
            if rank >= self.keep_endings:
                del self._ended[instance]
            elif ended.on_engine and kept_exited.get(group, 0) < self.keep_exited and \
                    ended.report.ended >= oldest:
                kept_exited[group] = kept_exited.get(group, 0) + 1
                continue
            if ended.on_engine:
                ended.on_engine = False
                remove.append((instance, ended.container_id))
        return remove

    def report(self, tags: dict[str, str]) -> list[EndedInstance]:
        """The endings of the containers that carried every tag, oldest first."""
        wanted = tags.items()
        with self.lock:
            found = [e.report for e in self._ended.values()
                     if wanted <= (e.report.tags or {}).items()]
        return sorted(found, key=lambda e: e.ended)

    def running(self) -> set[str]:
        """The IDs of the containers last seen live."""
        with self.lock:
            return {r.container_id for r in self._running.values()}

    @contextlib.contextmanager
    def destroying(self, instance: str) -> Iterator[None]:
        """While Destroy stops and removes the container: no listing takes it for ended,
        and nothing of it is remembered after."""
        with self.lock:
            self._destroying.add(instance)
        try:
            yield
        finally:
            with self.lock:
                self._destroying.discard(instance)
                self._running.pop(instance, None)
                self._ended.pop(instance, None)
