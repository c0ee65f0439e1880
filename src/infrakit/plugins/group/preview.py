"""What committing a spec would do, as ``terraform plan`` says it: the fields that change,
then what will happen to the members, in words a user can act on.

The group plugin answers ``Group.PlanGroup`` and ``Group.CommitGroup`` (pretend or not)
from here, where the committed spec and the members are known, so that the CLI, the
manager and the reference's CLI hear the same plan (the reference's CLI, its summary).
What will happen is what the controller's own decision does over the members seen now
(:mod:`~infrakit.plugins.group.rehearse`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from infrakit.plugins.group.controller import declared
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG, Member
from infrakit.plugins.group.rehearse import Rehearsal, rehearse
from infrakit.plugins.group.report import adoption, changes
from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.plugins.group.specdiff import spec_changes, tunables
from infrakit.plugins.group.wording import Facts, shown, steps_of
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import PluginError
from infrakit.spi.group import FieldChange, GroupPlan
from infrakit.spi.types import Description

if TYPE_CHECKING:
    from infrakit.plugins.group.controller import GroupController


async def commit_summary(c: GroupController | None, plugins: PluginLookup, gid: str,
                         props: GroupProperties) -> str:
    """What ``Group.CommitGroup`` answers for ``props``: the summary of the plan, without
    rehearsing it (a commit of a group of 100,000 members need not wait for that)."""
    if c is None:
        return _new_details(props, await _described(plugins, gid, props, []))
    members, _, _ = await c.observe(judge=False)
    return _details(c.props, props, members)


def _details(old: GroupProperties, new: GroupProperties, members: list[Member]) -> str:
    sha = config_sha(new)
    current = sum((m.desc.tags or {}).get(CONFIG_TAG) == sha for m in members)
    return changes(old, new, len(members) - current, current)


def _new_details(props: GroupProperties, found: list[Description]) -> str:
    return f"Managing {props.target()} instances" + adoption(found, props)


async def plan_change(c: GroupController, props: GroupProperties) -> GroupPlan:
    """What committing ``props`` would do to the group that ``c`` runs."""
    members, inflight, _ = await c.observe(judge=False)
    sha = config_sha(props)
    details = _details(c.props, props, members)
    held = c.rollout.would_hold(sha)
    notes: list[str] = []
    old, new = c.props.instance.plugin, props.instance.plugin
    if new != old:  # the controller will look for its members there, and only there
        notes.append(f"Instance.Plugin changes from {old} to {new}: the group will look for "
                     f"its members with {new}, and leave the {len(members)} members that "
                     f"{old} made as they are (destroy them with {old} when done with them)")
        now = time.time()
        members = [Member(d, since=now) for d in await _described(c.plugins, c.group, props,
                                                                   notes)]
    done = rehearse(declared(props, sha, held, False), members, time.time())
    notes += _notes(done)
    if inflight:
        ops = sorted({op.op for op in inflight})
        notes.append(f"{len(inflight)} operations in flight ({', '.join(ops)}) are not in "
                     "this plan: it starts from the members there are now")
    if c.backoff.held(time.time()):
        notes.append(f"launches are held back now: {c.backoff.describe(time.time())}")
    fields = spec_changes(c.props, props)
    tuned = [f"{f.path.removeprefix('Properties.')} {shown(f.old)} → {shown(f.new)}"
             for f in tunables(fields)]
    facts = Facts(old=c.props, new=props, group=c.group, done=done, members=len(members),
                  config_changed=sha != c.sha, paused=c.rollout.paused, tunables=tuned)
    return _plan(c.group, False, fields, facts, notes, details)


async def plan_new(plugins: PluginLookup, gid: str, props: GroupProperties) -> GroupPlan:
    """What committing ``props`` would do for a group not watched yet: create its members,
    or adopt those it finds (a freed group committed again)."""
    notes: list[str] = []
    found = await _described(plugins, gid, props, notes)
    sha = config_sha(props)
    now = time.time()
    done = rehearse(declared(props, sha, False, False), [Member(d, since=now) for d in found],
                    now)
    notes += _notes(done)
    details = _new_details(props, found)
    facts = Facts(old=None, new=props, group=gid, done=done, members=len(found),
                  config_changed=True, paused=False, tunables=[])
    return _plan(gid, True, spec_changes(None, props), facts, notes, details)


async def _described(plugins: PluginLookup, gid: str, props: GroupProperties,
                     notes: list[str]) -> list[Description]:
    """The members of group ``gid`` that the instance plugin of ``props`` describes; none,
    with a note saying why, when it cannot tell (the commit does not depend on it: the
    first pass will tell)."""
    try:
        return await plugins.instance(props.instance.plugin).describe_instances(
            {GROUP_TAG: gid}, False)
    except PluginError as exc:
        notes.append(f"cannot tell which members exist already: {exc}")
        return []


def _plan(gid: str, new: bool, fields: list[FieldChange], facts: Facts, notes: list[str],
          details: str) -> GroupPlan:
    steps, counts = steps_of(facts)
    done = facts.done
    return GroupPlan(
        id=gid, new_group=new, changed=new or bool(fields) or bool(steps),
        fields=fields, steps=steps or ["no change"], add=counts.add, remove=counts.remove,
        removed=counts.removed or None, roll=counts.roll, batches=done.tally["batches"],
        per_batch=done.per_batch(), held=done.held, tunables=facts.tunables or None,
        notes=notes or None, details=details)


def _notes(done: Rehearsal) -> list[str]:
    notes = []
    if done.assumed_healthy:
        notes.append(f"{done.assumed_healthy} members are not healthy now; the plan takes "
                     "them as healthy, but the rolling update waits until they are")
    if not done.finished:
        notes.append("the plan stops after its first passes: the counts are a floor")
    return notes
