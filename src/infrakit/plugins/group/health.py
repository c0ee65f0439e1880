"""Health verdicts: a flavor's answers about a group's members, turned into what the plan
acts on, with the grace periods that keep a slow starter or a blip from being replaced."""

from __future__ import annotations

import asyncio
import logging
import time

from infrakit.plugins.group.plan import Member, Verdict
from infrakit.plugins.group.spec import GroupProperties
from infrakit.spi.calls import AsyncFlavorAPI
from infrakit.spi.errors import PluginError
from infrakit.spi.types import Description, Health

log = logging.getLogger("infrakit.group")

BATCH = 500
"""Most members in one batch call, to keep bodies small."""


class HealthJudge:
    """Remembers, per member, since when it is known and since when it is unhealthy, and
    the last verdicts other than healthy, so that a pass that does not ask the flavor
    (DescribeGroup) still shows them."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._first_seen: dict[str, float] = {}
        self._unhealthy_since: dict[str, float] = {}
        self._verdicts: dict[str, Verdict] = {}

    def last(self, desc: Description, now: float) -> Member:
        """A member as the last pass judged it; one it has not seen yet is starting."""
        since = self._first_seen.get(desc.id)
        if since is None:
            return Member(desc, Verdict.STARTING, now)
        return Member(desc, self._verdicts.get(desc.id, Verdict.HEALTHY), since)

    async def judge(self, flavor: AsyncFlavorAPI, props: GroupProperties,
                    observed: list[Description]) -> list[Member]:
        """Ask the flavor about every member and turn the answers into verdicts.

        An error from the flavor counts as "unknown", never as "unhealthy", so a broken
        health check cannot get members destroyed; and if it says "unhealthy" of too many
        at once, the plan's circuit breaker stops the replacing.
        """
        answers = await _ask(flavor, props, observed)
        failed = [(d.id, a) for d, a in zip(observed, answers, strict=True)
                  if isinstance(a, Exception)]
        if failed:
            first_id, first = failed[0]
            log.warning("group %s: health of %d members unknown; %s: %s", self.group,
                        len(failed), first_id, first)
        return self._verdicts_of(props, observed, answers, time.time())

    def _verdicts_of(self, props: GroupProperties, observed: list[Description],
                     answers: list[Health | Exception], now: float) -> list[Member]:
        first_seen, unhealthy_since = self._first_seen, self._unhealthy_since
        verdicts: dict[str, Verdict] = {}
        members: list[Member] = []
        append = members.append
        for desc, answer in zip(observed, answers, strict=True):
            iid = desc.id
            since = first_seen.get(iid)
            if since is None:
                since = first_seen[iid] = now
            if answer is not Health.UNHEALTHY:  # an error counts as unknown
                if unhealthy_since:
                    unhealthy_since.pop(iid, None)
                append(Member(desc, Verdict.HEALTHY, since))
                continue
            if now - since < props.startup_grace:
                verdict = Verdict.STARTING
            else:
                bad = unhealthy_since.setdefault(iid, now)
                verdict = Verdict.FAILED if now - bad >= props.health_grace else \
                    Verdict.UNHEALTHY
            verdicts[iid] = verdict
            append(Member(desc, verdict, since))
        if len(first_seen) > len(observed):  # some members are gone: forget them
            for gone in set(first_seen).difference(d.id for d in observed):
                del first_seen[gone]
                unhealthy_since.pop(gone, None)
        self._verdicts = verdicts
        return members


async def _ask(flavor: AsyncFlavorAPI, props: GroupProperties,
               observed: list[Description]) -> list[Health | Exception]:
    """The flavor's answer per member, in batches at once; a failed batch answers each of
    its members with its error."""

    async def health(chunk: list[Description]) -> list[Health | Exception]:
        try:
            return await flavor.healthy_each(props.flavor.properties, chunk)
        except PluginError as exc:
            return [exc] * len(chunk)

    chunks = await asyncio.gather(*(health(observed[i:i + BATCH])
                                    for i in range(0, len(observed), BATCH)))
    return [a for chunk in chunks for a in chunk]
