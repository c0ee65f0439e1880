"""The crash-loop backoff and what members inherit from the ones that ended before them,
as plain objects: the timing rules without a clock or a socket."""

from __future__ import annotations

import math

from infrakit.plugins.group.endings import Backoff, Endings
from infrakit.spi import EndedInstance


def test_the_backoff_doubles_from_one_second_up_to_its_limit() -> None:
    backoff = Backoff("web")
    backoff.limit = 10
    delays = []
    for n in range(6):
        backoff.failed(100.0 * n, f"failure {n}")
        delays.append(backoff.next_launch - 100.0 * n)
    assert delays == [1, 2, 4, 8, 10, 10]
    assert backoff.held(500.5) and not backoff.held(510.0)
    assert backoff.describe(505.0) == ("next launch in 5s after 6 failures in a row "
                                       "(last: failure 5)")


def test_the_backoff_resets_once_a_later_member_stays_healthy_long_enough() -> None:
    backoff = Backoff("web")
    backoff.failed(100.0, "proc-1 exited with status 2")
    backoff.settle([50.0], now=200.0, young=60)  # healthy, but from before the failure
    assert backoff.failures == 1
    backoff.settle([120.0], now=170.0, young=60)  # launched after it, healthy for 50 s
    assert backoff.failures == 1
    backoff.settle([120.0], now=180.0, young=60)
    assert backoff.failures == 0 and backoff.next_launch == -math.inf
    assert backoff.describe(180.0) == ""


def _ended(iid: str, started: float, ended: float, crashed: bool = True,
           logical_id: str | None = None) -> EndedInstance:
    return EndedInstance(id=iid, logical_id=logical_id, reason="exited with status 2",
                         crashed=crashed, started=started, ended=ended, output=["a", "b"])


def test_endings_are_judged_by_age_and_by_whether_the_member_was_ever_healthy() -> None:
    endings = Endings()
    never_seen = endings.classify(_ended("p-1", 10, 10.2), None, young=60)
    never_healthy = endings.classify(_ended("p-2", 10, 30), (10.0, False), young=60)
    young = endings.classify(_ended("p-3", 10, 30), (10.0, True), young=60)
    old = endings.classify(_ended("p-4", 10, 100), (10.0, True), young=60)
    removed = endings.classify(_ended("p-5", 10, 11, crashed=False), (10.0, False), young=60)
    assert [e.kind for e in (never_seen, never_healthy, young, old, removed)] == [
        "failed launch", "failed launch", "died young", "died", "removed"]
    assert [e.failure for e in (never_seen, young, old, removed)] == [True, True, False, False]
    assert young.describe() == "p-3 exited with status 2 after 20.0s (died young); last " \
                               "output: b"


def test_a_new_member_inherits_the_restarts_of_the_one_it_replaces() -> None:
    endings = Endings()
    assert [e.id for e in endings.new([_ended("p-1", 0, 1)])] == ["p-1"]
    assert endings.new([_ended("p-1", 0, 1)]) == []  # reported again: handled once
    endings.classify(_ended("p-1", 0, 1), None, young=60)
    endings.adopt([("p-2", None)])
    assert endings.restarts["p-2"] == 1 and endings.last["p-2"].instance == "p-1"
    endings.classify(_ended("p-2", 1, 2), (1.0, False), young=60)
    endings.adopt([("p-3", None)])
    assert endings.restarts["p-3"] == 2 and "p-2" not in endings.restarts


def test_in_a_group_of_logical_ids_the_heir_has_the_same_id() -> None:
    endings = Endings()
    endings.classify(_ended("p-1", 0, 1, logical_id="db-a"), None, young=60)
    endings.adopt([("p-2", "db-b")])
    assert "p-2" not in endings.restarts
    endings.adopt([("p-3", "db-a")])
    assert endings.restarts["p-3"] == 1
