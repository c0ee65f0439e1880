"""What every plugin process counts of the calls it answers and of the calls it makes to
other plugins, and the ``GET /metrics`` page that shows it, with every other collector of
the process's default Prometheus registry, in the Prometheus text format.

The counting is plain dictionary arithmetic on the event loop; ``prometheus_client`` is
imported at the first scrape only: importing it loads ``ssl``, ``http.client`` and
``email`` (about 50 ms and several MB), which a lean instance or flavor plugin otherwise
never holds.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from infrakit.rpc.http import Page

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("infrakit.rpc")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)
"""Upper bounds of the latency buckets, in seconds: a socket call takes about a millisecond,
a provision of a cloud server a minute (the longest a call waits by default)."""

UNKNOWN_METHOD = "unknown"
"""The method label of a request naming no method this plugin serves, so that a caller
cannot make a series per name it sends."""


class Timings:
    """A latency histogram per tuple of label values: the count in each bucket (the last
    is +Inf) and the sum of the seconds."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(BUCKETS) + 2)
        row[bisect.bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def family(self, name: str, doc: str, labels: list[str]) -> Metric:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(name, doc, labels=labels)
        bounds = [*map(floatToGoString, BUCKETS), "+Inf"]
        for values, row in sorted(self.series.items()):
            running, buckets = 0.0, []
            for bound, count in zip(bounds, row, strict=False):
                running += count
                buckets.append((bound, running))
            family.add_metric(list(values), buckets, row[-1])
        return family


class CallStats:
    """The calls this process answered (by method and outcome) and made (by plugin and
    method), and whether the last call to each plugin reached it."""

    def __init__(self) -> None:
        self.answered: Counter[tuple[str, str]] = Counter()
        self.answer_seconds = Timings()
        self.made_seconds = Timings()
        self.up: dict[str, bool] = {}

    def answer(self, method: str, ok: bool, seconds: float) -> None:
        self.answered[(method, "ok" if ok else "error")] += 1
        self.answer_seconds.observe((method,), seconds)

    def made(self, plugin: str, method: str, reached: bool, seconds: float) -> None:
        self.made_seconds.observe((plugin, method), seconds)
        self.up[plugin] = reached

    def collect(self) -> Iterator[Metric]:
        """The figures as Prometheus families (the registry calls this at each scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        calls = CounterMetricFamily("infrakit_rpc_calls", "Calls this plugin answered, by "
                                    "method and outcome (ok, or error: any JSON-RPC error).",
                                    labels=["method", "outcome"])
        for labels, count in sorted(self.answered.items()):
            calls.add_metric(list(labels), count)
        yield calls
        yield self.answer_seconds.family("infrakit_rpc_call_seconds", "Seconds this plugin "
                                         "took to answer a call, by method.", ["method"])
        yield self.made_seconds.family(
            "infrakit_plugin_call_seconds", "Seconds the calls this process made to other "
            "plugins took, by plugin and method (errors included).", ["plugin", "method"])
        up = GaugeMetricFamily("infrakit_plugin_up", "1 when the last call this process made "
                               "to the plugin reached it (any answer), 0 when it did not.",
                               labels=["plugin"])
        for plugin, reached in sorted(self.up.items()):
            up.add_metric([plugin], int(reached))
        yield up


STATS = CallStats()
"""This process's figures: one process serves one plugin."""

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format, as every Prometheus server since 2.0 reads it (what
``generate_latest`` writes for names of plain ASCII, as all of ours are)."""

_registered = False


def metrics_page(_query: bytes) -> Page:
    """``GET /metrics``: every collector of the default registry (this module's, and those
    other modules registered, such as the group controller's), as Prometheus text."""
    global _registered
    from prometheus_client import REGISTRY

    if not _registered:
        REGISTRY.register(STATS)
        _registered = True
    return Page(exposition(REGISTRY.collect()), TEXT_FORMAT)


_PLAIN_TYPES = {"counter", "gauge", "histogram"}
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_ESCAPED = re.compile(r'[\\\n"]')


class _One:
    """One family, as a collector: what ``generate_latest`` takes."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


def exposition(families: Iterable[Metric]) -> bytes:
    """``families`` in the Prometheus text format. A counter, gauge or histogram with plain
    names and no timestamps (every family of ours) is written here, at about a fifth of
    the cost of ``prometheus_client.generate_latest`` (whose care for every name and label
    made a scrape of 100 groups take 15 ms of CPU); any other family is written by
    ``generate_latest`` itself."""
    from prometheus_client import generate_latest

    out: list[str] = []
    for family in families:
        if not _plain(family):
            out.append(generate_latest(_One(family)).decode())
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        out.extend(f"{s.name}{_labels(s.labels)} {_number(s.value)}\n" for s in family.samples)
    return "".join(out).encode()


def _plain(family: Metric) -> bool:
    """Whether the family is one :func:`exposition` writes itself."""
    samples = family.samples
    return (family.type in _PLAIN_TYPES and bool(_LEGACY_NAME.match(family.name))
            and not any(s.timestamp is not None or s.exemplar is not None
                        or s.name.endswith("_created") for s in samples)
            and all(_LEGACY_NAME.match(k) and ":" not in k
                    for k in {k for s in samples for k in s.labels}))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    if not _ESCAPED.search(value):
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == value and value not in (math.inf, -math.inf):
        return repr(float(value))
    return "NaN" if value != value else "+Inf" if value > 0 else "-Inf"
