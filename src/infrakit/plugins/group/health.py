"""Health verdicts: a flavor's answers about a group's members, turned into what the plan
acts on, with the grace periods that keep a slow starter or a blip from being replaced.

Each member is judged by the health check of the spec it was made from (the flavor block
of its config), so a commit that changes the probe never judges old members by a check
they were not built to pass. A member that has never been healthy is ``starting`` until
``StartupGrace + HealthGrace`` have passed, then it failed to launch; one that was healthy
is ``unhealthy`` for ``HealthGrace`` before it failed. A flavor that cannot answer makes its
members ``unknown``, with the reason, never the last verdict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import msgspec

from infrakit.plugins.group.plan import CONFIG_TAG, Member, Verdict
from infrakit.plugins.group.sizing import ROOM, runs, size_of
from infrakit.plugins.group.spec import GroupProperties, PluginSpec
from infrakit.spi.calls import AsyncFlavorAPI, PluginLookup
from infrakit.spi.errors import PluginError, Unreachable
from infrakit.spi.types import MAX_BODY, Description, Health, HealthReport

log = logging.getLogger("infrakit.group")

BATCH = 500
"""Most members in one batch call, to keep bodies small (and fewer where their
descriptions would not fit in what a plugin accepts)."""


class HealthJudge:
    """Remembers, per member, since when it is known, whether it was ever healthy, since
    when it is unhealthy, and the last verdicts other than healthy with their reasons, so
    that a pass that does not ask the flavor (DescribeGroup) still shows them."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._first_seen: dict[str, float] = {}
        self._never_healthy: set[str] = set()
        """Members seen but not healthy yet (kept small: the usual member leaves it at its
        first healthy answer)."""
        self._unhealthy_since: dict[str, float] = {}
        self._verdicts: dict[str, tuple[Verdict, str]] = {}
        self._checks: dict[str, PluginSpec] = {}
        """The flavor block of each config whose members may still exist, by config hash."""
        self.unreachable: dict[str, float] = {}
        """Flavor plugins that did not answer, and since when."""
        self._new: list[tuple[Description, float]] = []
        """Members first seen since :meth:`take_new`, and when."""

    def remember(self, sha: str, flavor: PluginSpec) -> None:
        """A committed config: its members are judged by this flavor block."""
        self._checks[sha] = flavor

    def wants_properties(self) -> bool:
        """Whether some check refers to its members' properties, so that the members must
        be described with them to be judged."""
        return any(aims_by_properties(check) for check in self._checks.values())

    def seen(self, member: str) -> tuple[float, bool] | None:
        """When ``member`` was first seen and whether it was ever healthy; None if never."""
        since = self._first_seen.get(member)
        return None if since is None else (since, member not in self._never_healthy)

    def take_new(self) -> list[tuple[Description, float]]:
        """The members first seen since the last call, and when (the usage counts them
        from then, and the others from the pass before)."""
        new, self._new = self._new, []
        return new

    def unhealthy_since(self, member: str) -> float | None:
        """Since when ``member`` has failed its health checks, if it does."""
        return self._unhealthy_since.get(member)

    def last(self, desc: Description, now: float) -> Member:
        """A member as the last pass judged it; one it has not seen yet is starting."""
        since = self._first_seen.get(desc.id)
        if since is None:
            return Member(desc, Verdict.STARTING, now, "not judged yet")
        verdict, reason = self._verdicts.get(desc.id, (Verdict.HEALTHY, ""))
        return Member(desc, verdict, since, reason)

    def unknown_reason(self) -> str:
        """Why some health is unknown, in words, or empty."""
        return "; ".join(f"flavor plugin {name!r} unreachable since "
                         f"{time.strftime('%H:%M:%S', time.localtime(since))}"
                         for name, since in sorted(self.unreachable.items()))

    async def judge(self, plugins: PluginLookup, props: GroupProperties, sha: str,
                    observed: list[Description]) -> list[Member]:
        """Ask each member's flavor about it and turn the answers into verdicts.

        An error from the flavor counts as "unknown", never as "unhealthy", so a broken
        health check cannot get members destroyed; and if it says "unhealthy" of too many
        at once, the plan's circuit breaker stops the replacing.
        """
        self._checks[sha] = props.flavor
        asked = self._by_check(sha, observed)
        replies = await asyncio.gather(*(
            _ask(plugins, self._checks[tag],
                 observed if ks is None else [observed[k] for k in ks]) for tag, ks in asked))
        if len(asked) == 1:
            answers = replies[0]
        else:
            answers = [HealthReport(Health.UNKNOWN)] * len(observed)
            for (_, ks), reply in zip(asked, replies, strict=True):
                for k, answer in zip(ks or (), reply, strict=True):
                    answers[k] = answer
        used = {tag for tag, _ in asked}
        self._checks = {t: c for t, c in self._checks.items() if t in used or t == sha}
        self._note_reachability(asked, replies)
        return self._verdicts_of(props, observed, answers, time.time())

    def _by_check(self, sha: str, observed: list[Description],
                  ) -> list[tuple[str, list[int] | None]]:
        """The members to judge by each config's check, by index (None: all of them, the
        usual case, when only the current config has a check that differs)."""
        if all(c == self._checks[sha] for c in self._checks.values()):
            return [(sha, None)]
        by_check: dict[str, list[int]] = defaultdict(list)
        for k, desc in enumerate(observed):
            tag = (desc.tags or {}).get(CONFIG_TAG, sha)
            by_check[tag if tag in self._checks else sha].append(k)
        return list(by_check.items())

    def _note_reachability(self, asked: list[tuple[str, list[int] | None]],
                           replies: list[list[HealthReport | Exception]]) -> None:
        for (tag, _), reply in zip(asked, replies, strict=True):
            name = self._checks.get(tag, PluginSpec()).plugin
            failed = [a for a in reply if isinstance(a, Exception)]
            if any(isinstance(a, Unreachable) for a in failed):
                if name not in self.unreachable:
                    log.warning("group %s: flavor plugin %r is not answering; health of %d "
                                "members unknown: %s", self.group, name, len(failed), failed[0])
                self.unreachable.setdefault(name, time.time())
            elif name in self.unreachable:
                del self.unreachable[name]
                log.info("group %s: flavor plugin %r answers again", self.group, name)
            if failed and not any(isinstance(a, Unreachable) for a in failed):
                log.warning("group %s: health of %d members unknown: %s", self.group,
                            len(failed), failed[0])

    def _verdicts_of(self, props: GroupProperties, observed: list[Description],
                     answers: list[HealthReport | Exception], now: float) -> list[Member]:
        first_seen, unhealthy_since = self._first_seen, self._unhealthy_since
        never_healthy = self._never_healthy
        verdicts: dict[str, tuple[Verdict, str]] = {}
        members: list[Member] = []
        append = members.append
        young = props.startup_grace + props.health_grace
        for desc, answer in zip(observed, answers, strict=True):
            iid = desc.id
            since = first_seen.get(iid)
            if since is None:
                since = first_seen[iid] = now
                never_healthy.add(iid)
                self._new.append((desc, now))
            if isinstance(answer, HealthReport) and answer.health is Health.HEALTHY:
                if never_healthy:
                    never_healthy.discard(iid)
                if unhealthy_since:
                    unhealthy_since.pop(iid, None)
                append(Member(desc, Verdict.HEALTHY, since))
                continue
            if isinstance(answer, Exception) or answer.health is not Health.UNHEALTHY:
                verdict = Verdict.UNKNOWN
                reason = str(answer) if isinstance(answer, Exception) else \
                    answer.reason or "the flavor cannot tell"
            elif iid in never_healthy:
                verdict = Verdict.STARTING if now - since < young else Verdict.FAILED
                reason = answer.reason if verdict is Verdict.STARTING else \
                    f"never healthy in {young:g}s: {answer.reason or 'unhealthy'}"
            elif now - since < props.startup_grace:
                verdict, reason = Verdict.STARTING, answer.reason
            else:
                bad = unhealthy_since.setdefault(iid, now)
                verdict = Verdict.FAILED if now - bad >= props.health_grace else \
                    Verdict.UNHEALTHY
                reason = f"unhealthy for {now - bad:.0f}s: {answer.reason or 'unhealthy'}"
            verdicts[iid] = (verdict, reason)
            append(Member(desc, verdict, since, reason))
        if len(first_seen) > len(observed):  # some members are gone: forget them
            for gone in set(first_seen).difference(d.id for d in observed):
                del first_seen[gone]
                unhealthy_since.pop(gone, None)
                never_healthy.discard(gone)
        self._verdicts = verdicts
        return members


def aims_by_properties(flavor: PluginSpec) -> bool:
    """Whether a flavor block refers to its members' properties, as a probe aimed by
    ``{{ .Properties.port }}`` does. Only then are the members described with their
    properties in each pass: those may hold the whole spec a member was made from, and
    reading them for every member costs more than the rest of a pass (the reference's group
    never asks for them, and its flavors are judged without them)."""
    return b".Properties" in msgspec.json.encode(flavor.properties)


async def _ask(plugins: PluginLookup, check: PluginSpec,
               observed: list[Description]) -> list[HealthReport | Exception]:
    """The flavor's answer per member, in batches at once; a failed batch answers each of
    its members with its error."""
    try:
        flavor: AsyncFlavorAPI = plugins.flavor(check.plugin)
    except PluginError as exc:  # not running: as unreachable as a plugin that hangs
        return [Unreachable(check.plugin, "Flavor", str(exc))] * len(observed)

    async def health(chunk: list[Description]) -> list[HealthReport | Exception]:
        try:
            return await flavor.healthy_each(check.properties, chunk)
        except PluginError as exc:
            return [exc] * len(chunk)

    budget = MAX_BODY - size_of(check.properties) - ROOM
    chunks = await asyncio.gather(*(health(c) for c in _chunks(observed, budget)))
    return [a for chunk in chunks for a in chunk]


def _chunks(observed: list[Description], budget: int) -> list[list[Description]]:
    """``observed`` in batches of at most ``BATCH`` members and ``budget`` bytes: members
    are described with their properties, which may hold the whole spec they were made
    from, Init included."""
    chunks = []
    for i in range(0, len(observed), BATCH):
        batch = observed[i:i + BATCH]
        if size_of(batch) <= budget:  # as a rule: one measure for the whole batch
            chunks.append(batch)
        else:
            chunks += [batch[r.start:r.stop] for r in runs([size_of(d) for d in batch],
                                                           budget)]
    return chunks
