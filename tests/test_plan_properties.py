"""Property-based tests of the planner: from any starting point, applying its plans
keeps within the limits and converges in a bounded number of passes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG, Desired, Member, plan
from infrakit.spi.types import Description

NOW = 1000.0


def _member(n: int, sha: str, logical_id: str | None = None) -> Member:
    return Member(Description(id=f"i{n}", logical_id=logical_id,
                              tags={GROUP_TAG: "g", CONFIG_TAG: sha}), since=float(n))


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 12), start=st.lists(st.sampled_from(["new", "old"]), max_size=15),
       surge=st.integers(0, 3), unavailable=st.integers(0, 3))
def test_size_groups_converge_within_limits(size: int, start: list[str], surge: int,
                                            unavailable: int) -> None:
    if surge == 0 and unavailable == 0:
        surge = 1  # the spec refuses both 0
    desired = Desired(size=size, logical_ids=(), config_sha="new", max_surge=surge,
                      max_unavailable=unavailable, max_unhealthy=size)
    members = [_member(n, sha) for n, sha in enumerate(start)]
    serial = len(members)
    limit = max(len(members), size + surge)
    for _ in range(4 * (size + len(start)) + 4):
        p = plan(desired, members, [], NOW)
        if p.converged:
            break
        gone = set(p.destroy)
        members = [m for m in members if m.id not in gone]
        for _ in p.provision:
            members.append(_member(serial, "new"))
            serial += 1
        assert len(members) <= limit, "above Size + MaxSurge"
        if start.count("old") and len(start) == size:  # a pure rolling update
            assert len(members) >= size - unavailable, "below Size - MaxUnavailable"
    else:
        raise AssertionError(f"did not converge: {len(members)} members")
    assert len(members) == size
    assert all((m.desc.tags or {})[CONFIG_TAG] == "new" for m in members)


@settings(max_examples=200, deadline=None)
@given(wanted=st.lists(st.sampled_from("abcdef"), unique=True, min_size=1),
       start=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from(["new", "old"])),
                      max_size=10))
def test_quorum_groups_converge_to_one_current_member_per_logical_id(
        wanted: list[str], start: list[tuple[str, str]]) -> None:
    desired = Desired(size=0, logical_ids=tuple(wanted), config_sha="new",
                      max_unhealthy=len(wanted))
    members = [_member(n, sha, lid) for n, (lid, sha) in enumerate(start)]
    start_counts = {lid: sum(1 for s_lid, _ in start if s_lid == lid) for lid, _ in start}
    serial = len(members)
    for _ in range(3 * (len(wanted) + len(start)) + 3):
        p = plan(desired, members, [], NOW)
        if p.converged:
            break
        gone = set(p.destroy)
        members = [m for m in members if m.id not in gone]
        for lid in p.provision:
            members.append(_member(serial, "new", lid))
            serial += 1
        per_id = [m.desc.logical_id for m in members if m.desc.logical_id in wanted]
        assert len(per_id) <= max(len(wanted), len(start)), "more members than ever needed"
        assert all(per_id.count(lid) <= max(1, start_counts.get(lid, 0)) for lid in per_id), \
            "a second instance of a logical ID was provisioned"
    else:
        raise AssertionError("did not converge")
    assert sorted(m.desc.logical_id or "" for m in members) == sorted(wanted)
    assert all((m.desc.tags or {})[CONFIG_TAG] == "new" for m in members)
