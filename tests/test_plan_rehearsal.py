"""The rehearsal of the controller's decision that a plan is made of: its counts are those
of running ``plan()`` pass after pass, rounds counted in bulk included, and its words say
them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from infrakit.plugins.group.plan import CONFIG_TAG, Desired, Member, Verdict
from infrakit.plugins.group.rehearse import rehearse
from infrakit.plugins.group.spec import GroupProperties
from infrakit.plugins.group.wording import Facts, duration, steps_of
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Description


def members(n: int, sha: str = "old", ids: list[str] | None = None,
            verdicts: dict[int, Verdict] | None = None) -> list[Member]:
    return [Member(Description(id=f"m{i}", logical_id=ids[i] if ids else None,
                               tags={CONFIG_TAG: sha}),
                   verdict=(verdicts or {}).get(i, Verdict.HEALTHY), since=float(i))
            for i in range(n)]


def desired(size: int = 0, sha: str = "new", **kw: Any) -> Desired:
    return Desired(size=size, logical_ids=kw.pop("ids", ()), config_sha=sha, **kw)


@pytest.mark.parametrize("surge", [1, 2, 3, 7])
def test_a_rolling_update_replaces_max_surge_members_a_round(surge: int) -> None:
    # small groups run every pass; larger ones count the repeated rounds: same answer
    for n in (1, 2, 5, 13, 40, 97, 500):
        done = rehearse(desired(n, max_surge=surge), members(n), 0.0)
        assert (done.tally["provisioned"], done.tally["destroyed"]) == (n, n)
        assert done.tally["batches"] == math.ceil(n / surge), (n, surge)
        assert done.per_batch() == min(surge, n)
        assert done.finished and not done.held


def test_max_unavailable_destroys_first_and_surge_waits() -> None:
    # as plan() does: with MaxUnavailable 1 the group goes one below its size and refills
    done = rehearse(desired(5, max_surge=1, max_unavailable=1), members(5), 0.0)
    assert (done.tally["batches"], done.per_batch()) == (5, 1)


def test_a_large_group_is_planned_in_few_passes() -> None:
    done = rehearse(desired(100_000, max_surge=50), members(100_000), 0.0)
    assert done.tally["rolled"] == 100_000 and done.tally["batches"] == 2000
    assert done.finished


def test_scale_in_removes_the_newest_or_the_oldest_as_the_spec_says() -> None:
    assert rehearse(desired(3, "old"), members(5), 0.0).removed == ["m4", "m3"]
    assert rehearse(desired(3, "old", newest_first=False), members(5), 0.0).removed == \
        ["m0", "m1"]
    sick = members(5, verdicts={1: Verdict.UNHEALTHY})  # unhealthy ones go first
    assert rehearse(desired(3, "old"), sick, 0.0).removed == ["m1", "m4"]


def test_a_paused_update_holds_its_members() -> None:
    done = rehearse(desired(4, update_paused=True), members(4), 0.0)
    assert done.held == 4 and not done.tally


def test_members_not_healthy_now_are_taken_as_healthy_and_counted() -> None:
    done = rehearse(desired(3), members(3, verdicts={0: Verdict.STARTING}), 0.0)
    assert done.assumed_healthy == 1 and done.tally["rolled"] == 3


def test_a_failed_member_is_replaced_first() -> None:
    done = rehearse(desired(3, "old"), members(3, verdicts={2: Verdict.FAILED}), 0.0)
    assert done.failed == ["m2"] and done.tally["provisioned"] == 1


def props(**raw: Any) -> GroupProperties:
    return decode_properties({"Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}, **raw},
                             GroupProperties)


def words(old: GroupProperties | None, new: GroupProperties, found: list[Member],
          sha: str = "new", paused: bool = False) -> list[str]:
    ids = tuple(new.allocation.logical_ids or ())
    done = rehearse(desired(new.allocation.size, sha, ids=ids, max_surge=new.max_surge,
                            update_paused=paused), found, 0.0)
    changed = any((m.desc.tags or {}).get(CONFIG_TAG) != sha for m in found)
    return steps_of(Facts(old=old, new=new, group="g", done=done, members=len(found),
                          config_changed=changed, paused=paused, tunables=[]))[0]


def test_a_quorum_group_rolls_one_logical_id_at_a_time() -> None:
    old, new = props(Allocation={"LogicalIDs": ["a", "b"]}), \
        props(Allocation={"LogicalIDs": ["a", "b", "c"]})
    assert words(old, new, members(2, ids=["a", "b"])) == [
        "add 1 member (LogicalIDs c)",
        "roll 2 members to the new config, one at a time, each keeping its LogicalID, and "
        "only while every member is healthy: 2 batches"]
    fewer = props(Allocation={"LogicalIDs": ["a"]})
    assert words(old, fewer, members(2, "new", ids=["a", "b"])) == [
        "remove 1 member whose LogicalIDs are no longer given: m1"]


def test_a_paused_update_says_how_to_resume_it() -> None:
    assert words(props(Allocation={"Size": 2}), props(Allocation={"Size": 2}), members(2),
                 paused=True) == [
        "2 members keep the old config: the rolling update is paused ('infrakit group "
        "resume-update' resumes it)"]


def test_shrinking_during_a_rolling_update_removes_outdated_members_first() -> None:
    assert words(props(Allocation={"Size": 5}), props(Allocation={"Size": 3}), members(5)) == [
        "remove 2 members (Size 5 → 3), outdated ones first",
        "roll 3 members to the new config, 1 at a time (MaxSurge 1, MaxUnavailable 0): "
        "≈ 4 batches"]


@pytest.mark.parametrize(("seconds", "text"), [(2.5, "2.5s"), (60, "1m"), (90, "1m30s"),
                                               (3600, "1h"), (5430, "1h30m30s")])
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text
