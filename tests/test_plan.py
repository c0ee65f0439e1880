"""The planner is a pure function: every decision is checked here without a socket."""

from __future__ import annotations

from infrakit.plugins.group.plan import (
    BOOTSTRAP,
    CONFIG_TAG,
    GROUP_TAG,
    Desired,
    Member,
    Verdict,
    plan,
)
from infrakit.plugins.group.storage import InFlight
from infrakit.spi.types import Description

SHA = "newsha"
NOW = 1000.0


def member(iid: str, sha: str = SHA, logical_id: str | None = None,
           verdict: Verdict = Verdict.HEALTHY, since: float = 0.0) -> Member:
    return Member(Description(id=iid, logical_id=logical_id,
                              tags={GROUP_TAG: "g", CONFIG_TAG: sha}), verdict, since)


def provision(key: str, instance: str | None = None, deadline: float = NOW + 60,
              logical_id: str | None = None) -> InFlight:
    return InFlight(key=key, group="g", op="provision", instance=instance,
                    logical_id=logical_id, started=NOW - 1, deadline=deadline)


def destroy(instance: str, deadline: float = NOW + 60) -> InFlight:
    return InFlight(key=f"destroy:{instance}", group="g", op="destroy", instance=instance,
                    started=NOW - 1, deadline=deadline)


def size(n: int) -> Desired:
    return Desired(size=n, logical_ids=(), config_sha=SHA)


def test_empty_group_provisions_its_size_and_is_not_converged() -> None:
    p = plan(size(3), [], [], NOW)
    assert p.provision == [None, None, None]
    assert not p.converged


def test_exact_group_is_converged_and_idle() -> None:
    p = plan(size(2), [member("i1"), member("i2")], [], NOW)
    assert p.idle and p.converged


def test_pending_provisions_count_toward_the_size() -> None:
    """The slow-provider case: provisioned but not yet described."""
    p = plan(size(4), [member("i1")], [provision("k1", "i2"), provision("k2")], NOW)
    assert p.provision == [None]
    assert not p.converged  # something is still in flight
    assert p.resolved == []


def test_a_described_provision_is_resolved_and_counts_once() -> None:
    p = plan(size(2), [member("i1"), member("i2")], [provision("k1", "i2")], NOW)
    assert p.resolved == ["k1"]
    assert p.provision == [] and p.destroy == []


def test_an_expired_provision_stops_counting() -> None:
    p = plan(size(2), [member("i1")], [provision("k1", deadline=NOW)], NOW)
    assert p.resolved == ["k1"]
    assert p.provision == [None]


def test_no_scale_in_while_provisions_are_pending() -> None:
    p = plan(size(1), [member("i1"), member("i2")], [provision("k1")], NOW)
    assert p.destroy == []


def test_scale_in_removes_outdated_members_first() -> None:
    p = plan(size(2), [member("i1"), member("i2", "old"), member("i3")], [], NOW)
    assert p.destroy == ["i2"]


def test_members_being_destroyed_do_not_count_and_are_not_destroyed_again() -> None:
    p = plan(size(2), [member("i1"), member("i2")], [destroy("i2")], NOW)
    assert p.provision == [None]
    assert "i2" not in p.destroy
    assert not p.converged


def test_a_finished_or_expired_destroy_record_is_resolved() -> None:
    gone = plan(size(1), [member("i1")], [destroy("i9")], NOW)
    assert gone.resolved == ["destroy:i9"]
    stuck = plan(size(2), [member("i1"), member("i2")], [destroy("i2", deadline=NOW)], NOW)
    assert stuck.resolved == ["destroy:i2"]
    assert stuck.provision == [] and stuck.destroy == []  # i2 counts again


def test_rolling_update_surges_one_then_removes_an_outdated_member() -> None:
    old = [member("i1", "old"), member("i2", "old")]
    first = plan(size(2), old, [], NOW)
    assert first.provision == [None] and first.destroy == [] and first.outdated == 2
    surged = plan(size(2), [*old, member("i3")], [], NOW)
    assert surged.provision == [] and surged.destroy == ["i1"]
    done = plan(size(2), [member("i3"), member("i4")], [], NOW)
    assert done.converged


def test_rolling_update_never_goes_above_size_plus_surge() -> None:
    members = [member("i1", "old"), member("i2", "old")]
    inflight: list[InFlight] = []
    for step in range(10):
        p = plan(size(2), members, inflight, NOW)
        assert len(members) + len([o for o in inflight if o.op == "provision"]) + \
            len(p.provision) <= 3
        members = [m for m in members if m.id not in p.destroy]
        members += [member(f"n{step}{i}") for i, _ in enumerate(p.provision)]
        if p.converged:
            break
    assert {(m.desc.tags or {})[CONFIG_TAG] for m in members} == {SHA}
    assert len(members) == 2


def test_bootstrap_members_are_adopted_not_replaced() -> None:
    p = plan(size(2), [member("i1"), member("i2", BOOTSTRAP)], [], NOW)
    assert p.relabel == ["i2"]
    assert p.provision == [] and p.destroy == []


def quorum(*ids: str) -> Desired:
    return Desired(size=0, logical_ids=ids, config_sha=SHA)


def test_quorum_provisions_each_missing_logical_id() -> None:
    p = plan(quorum("a", "b", "c"), [member("i1", logical_id="b")],
             [provision("k", logical_id="c")], NOW)
    assert p.provision == ["a"]


def test_quorum_removes_duplicates_and_strangers() -> None:
    p = plan(quorum("a", "b"), [member("i1", logical_id="a"), member("i2", logical_id="a"),
                                member("i3", logical_id="b"), member("i4", logical_id="z")],
             [], NOW)
    assert sorted(p.destroy) == ["i2", "i4"]
    assert p.provision == []


def test_quorum_rolling_update_replaces_one_logical_id_at_a_time() -> None:
    members = [member("i1", "old", "a"), member("i2", "old", "b")]
    p = plan(quorum("a", "b"), members, [], NOW)
    assert p.destroy == ["i1"] and p.provision == []
    after = plan(quorum("a", "b"), [members[1]], [], NOW)
    assert after.provision == ["a"] and after.destroy == []


def test_a_failed_member_is_replaced_but_a_merely_unhealthy_one_is_not() -> None:
    desired = Desired(size=3, logical_ids=(), config_sha=SHA, max_unhealthy=1)
    waiting = plan(desired, [member("i1"), member("i2"), member("i3", verdict=Verdict.UNHEALTHY)],
                   [], NOW)
    assert waiting.destroy == [] and not waiting.converged and waiting.unhealthy == 1
    failed = plan(desired, [member("i1"), member("i2"), member("i3", verdict=Verdict.FAILED)],
                  [], NOW)
    assert failed.destroy == failed.replace == ["i3"]


def test_the_circuit_breaker_stops_replacing_when_too_many_are_unhealthy() -> None:
    desired = Desired(size=3, logical_ids=(), config_sha=SHA, max_unhealthy=1)
    sick = [member(f"i{n}", verdict=Verdict.FAILED) for n in range(3)]
    p = plan(desired, sick, [], NOW)
    assert p.breaker_open and p.destroy == [] and not p.converged


def test_starting_members_are_not_judged_and_block_convergence() -> None:
    p = plan(size(1), [member("i1", verdict=Verdict.STARTING)], [], NOW)
    assert p.idle and not p.converged


def test_rolling_update_waits_for_the_new_member_to_be_healthy() -> None:
    old = [member("i1", "old"), member("i2", "old")]
    starting = plan(size(2), [*old, member("i3", verdict=Verdict.STARTING)], [], NOW)
    assert starting.destroy == [] and starting.provision == []
    ready = plan(size(2), [*old, member("i3")], [], NOW)
    assert len(ready.destroy) == 1 and ready.destroy[0] in {"i1", "i2"}


def test_max_unavailable_lets_an_update_proceed_without_surge() -> None:
    desired = Desired(size=2, logical_ids=(), config_sha=SHA, max_surge=0, max_unavailable=1)
    p = plan(desired, [member("i1", "old"), member("i2", "old")], [], NOW)
    assert len(p.destroy) == 1 and p.provision == []
    refill = plan(desired, [member("i2", "old")], [], NOW)
    assert refill.provision == [None]


def test_scale_in_takes_unhealthy_then_outdated_then_newest() -> None:
    desired = Desired(size=1, logical_ids=(), config_sha=SHA, max_unhealthy=5)
    members = [member("old-young", "old", since=50), member("cur-young", since=90),
               member("cur-old", since=10), member("sick", verdict=Verdict.UNHEALTHY,
                                                    since=5)]
    # outdated members are taken first when the rolling update is done with them;
    # with a config change pending the rolling rules apply, so commit the same sha here
    p = plan(desired, [m for m in members if m.id != "old-young"], [], NOW)
    assert p.destroy == ["sick", "cur-young"]
    oldest = Desired(size=1, logical_ids=(), config_sha=SHA, max_unhealthy=5,
                     newest_first=False)
    q = plan(oldest, [m for m in members if m.id not in ("old-young", "sick")], [], NOW)
    assert q.destroy == ["cur-old"]


def test_quorum_update_waits_until_every_member_is_healthy() -> None:
    members = [member("i1", "old", "a"), member("i2", SHA, "b", verdict=Verdict.STARTING)]
    p = plan(quorum("a", "b"), members, [], NOW)
    assert p.destroy == []


def test_a_paused_update_leaves_outdated_members_but_still_heals_and_scales() -> None:
    desired = Desired(size=3, logical_ids=(), config_sha=SHA, update_paused=True)
    old = [member("i1", "old"), member("i2", "old")]
    p = plan(desired, old, [], NOW)
    assert p.provision == [None]  # a missing member is still replaced
    q = plan(desired, [*old, member("i3")], [], NOW)
    assert q.idle and not q.converged and q.outdated == 2


def test_a_pause_between_batches_delays_the_next_surge() -> None:
    desired = Desired(size=2, logical_ids=(), config_sha=SHA, batch_pause=30)
    old = [member("i1", "old"), member("i2", "old")]
    first = plan(desired, old, [], NOW)
    assert first.provision == [None] and first.batch
    later = [member("i2", "old"), member("n1")]
    too_soon = plan(desired, later, [], NOW + 10, last_batch=NOW)
    assert too_soon.provision == [] and not too_soon.batch
    assert plan(desired, later, [], NOW + 30, last_batch=NOW).provision == [None]


def test_members_being_destroyed_take_room_under_size_plus_surge() -> None:
    """A destroy left by a process that died: its member still exists until it is carried
    out, so the rolling update must not surge past it."""
    old = [member(f"i{i}", "old") for i in range(1, 5)]
    p = plan(size(5), [*old, member("n1"), member("i6", "old")], [destroy("i6")], NOW)
    assert p.provision == [] and p.destroy == []
    no_surge = Desired(size=2, logical_ids=(), config_sha=SHA, max_surge=0)
    waits = plan(no_surge, [member("i1"), member("i2")], [destroy("i2")], NOW)
    assert waits.provision == []  # the replacement once i2 is gone, never beside it
    gone = plan(no_surge, [member("i1")], [destroy("i2")], NOW)
    assert gone.provision == [None] and gone.resolved == ["destroy:i2"]


def test_the_plan_counts_the_members_of_each_config_those_being_destroyed_included() -> None:
    """What the usage counts, from the sweep the plan makes anyway."""
    untagged = Member(Description(id="i6", tags={GROUP_TAG: "g"}))
    p = plan(size(3), [member("i1"), member("i2"), member("i3", "old"), member("i4", "old"),
                       member("i5", BOOTSTRAP), untagged],
             [destroy("i2"), destroy("i4")], NOW)
    assert p.configs == {SHA: 2, "old": 2, BOOTSTRAP: 1, None: 1}
    assert p.outdated == 2 and p.relabel == ["i5"]  # i3 and i6; i4 is going already
    assert plan(size(1), [], [], NOW).configs == {SHA: 0}
