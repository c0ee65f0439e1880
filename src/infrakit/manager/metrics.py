"""A manager's leadership as Prometheus metrics: whether this manager leads, and its term,
read at each scrape of ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class _Leadership:
    """Reads the term of the manager this process runs (0 while it does not lead)."""

    def __init__(self) -> None:
        self.term: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        term = self.term()
        yield GaugeMetricFamily("infrakit_manager_leader", "1 while this manager leads (its "
                                "group controllers run), 0 while it follows or waits.",
                                value=int(term > 0))
        yield GaugeMetricFamily("infrakit_manager_term", "The term this manager leads in: "
                                "on etcd the revision that elected it (it grows with every "
                                "election), on sqlite 1 (a manager leads once, until it "
                                "exits); 0 while it does not lead.", value=term)


_LEADERSHIP: _Leadership | None = None


def watch_manager(term: Callable[[], int]) -> None:
    """Export the leadership of this process's manager, whose term ``term`` reads."""
    global _LEADERSHIP
    if _LEADERSHIP is None:
        from prometheus_client import REGISTRY

        _LEADERSHIP = _Leadership()
        REGISTRY.register(_LEADERSHIP)
    _LEADERSHIP.term = term
