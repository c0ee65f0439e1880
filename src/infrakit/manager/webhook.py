"""Alert notifications in Alertmanager's webhook format (version 4), and their delivery.

A receiver written for Alertmanager (``webhook_configs``) takes them as they are: the same
fields, ``groupKey`` and ``fingerprint`` included, so it can tell repeats from news.

Delivery never holds up the groups: :meth:`WebhookSender.send` only queues (a bounded
queue per URL; when a receiver falls that far behind, the newest notification is dropped,
said in the log), and one task per URL posts, waiting at most ``TIMEOUT`` seconds for an
answer and retrying a failure that may pass (no answer, HTTP 408, 429, 5xx) with
exponential backoff, up to ``ATTEMPTS`` times. What is not delivered is logged with the
reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import tenacity

from infrakit.manager.alerts import Alert

log = logging.getLogger("infrakit.alerts")

RECEIVER = "infrakit-manager"
QUEUE = 100
"""Notifications waiting for one URL at most."""
TIMEOUT = 10.0
"""Seconds a receiver has to answer one POST."""
ATTEMPTS = 5
FIRST_RETRY = 1.0
"""Seconds before the first retry; each next one waits twice as long, up to a minute."""
STOP_RETRY = 0.5
"""Seconds a stopping sender waits for its tasks to end before it cancels them again."""
NEVER = "0001-01-01T00:00:00Z"
"""``endsAt`` of an alert still firing, as Alertmanager writes it."""


@dataclass(frozen=True)
class Notice:
    """One alert as a notification carries it."""

    alert: Alert
    status: str
    """``firing`` or ``resolved``."""
    starts: float
    ends: float | None


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every map has."""
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _alert(n: Notice) -> dict[str, Any]:
    return {"status": n.status, "labels": n.alert.label_map,
            "annotations": _annotations(n.alert), "startsAt": rfc3339(n.starts),
            "endsAt": rfc3339(n.ends) if n.ends is not None else NEVER,
            "generatorURL": "", "fingerprint": n.alert.fingerprint}


def _annotations(alert: Alert) -> dict[str, str]:
    return {"summary": alert.summary, "description": alert.description}


def payload(notices: list[Notice]) -> dict[str, Any]:
    """The body Alertmanager would POST for the alerts ``notices`` of one name and one
    group (``group_by: [alertname, group]``)."""
    labels = [n.alert.label_map for n in notices]
    group_labels = {"alertname": labels[0]["alertname"], "group": labels[0]["group"]}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in
                                       sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(n.status == "firing" for n in notices) else "resolved",
        "receiver": RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": _common(labels),
        "commonAnnotations": _common([_annotations(n.alert) for n in notices]),
        "externalURL": "",
        "alerts": [_alert(n) for n in notices],
    }


def shown(url: str) -> str:
    """``url`` for a log line: without a user, password or query, which may hold a
    secret."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class _Retry(Exception):
    """A failure that may pass: the POST is tried again."""


class _Refused(Exception):
    """The receiver refused the notification: trying again would not help."""


class WebhookSender:
    """Posts notifications to every URL of ``urls``, each in its own time."""

    def __init__(self, urls: tuple[str, ...], timeout: float = TIMEOUT,
                 attempts: int = ATTEMPTS, first_retry: float = FIRST_RETRY) -> None:
        self.urls = urls
        self.shown = [shown(u) for u in urls]
        self.timeout = timeout
        self.attempts = attempts
        self.first_retry = first_retry
        self._queues: dict[str, asyncio.Queue[tuple[bytes, str]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Content-Type": "application/json", "User-Agent": "infrakit-manager"})
        loop = asyncio.get_running_loop()
        for url in self.urls:
            queue = self._queues[url] = asyncio.Queue(QUEUE)
            self._tasks.append(loop.create_task(self._deliver_all(url, queue),
                                                name=f"webhook {shown(url)}"))

    async def stop(self) -> None:
        """Stop at once: what was not sent yet is dropped (the next leader sends what
        still fires)."""
        pending = set(self._tasks)
        self._tasks = []
        while pending:
            for task in pending:
                task.cancel()
            # again if need be: a cancel that lands as the POST times out is taken for the
            # timeout, and the sender would go on waiting for the next notification
            _, pending = await asyncio.wait(pending, timeout=STOP_RETRY)
        left = sum(q.qsize() for q in self._queues.values())
        if left:
            log.info("alerts: %d notifications not sent: this manager stopped leading", left)
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, body: dict[str, Any], what: str) -> None:
        """Queue ``body`` for every URL; never waits."""
        raw = msgspec.json.encode(body)
        for url, queue in self._queues.items():
            try:
                queue.put_nowait((raw, what))
            except asyncio.QueueFull:
                log.warning("alert webhook %s: %s dropped: %d notifications are waiting "
                            "already (the receiver is down or too slow)", shown(url), what,
                            QUEUE)

    async def _deliver_all(self, url: str, queue: asyncio.Queue[tuple[bytes, str]]) -> None:
        while True:
            body, what = await queue.get()
            await self._deliver(url, body, what)

    async def _deliver(self, url: str, body: bytes, what: str) -> None:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.first_retry, max=60),
            retry=tenacity.retry_if_exception_type(_Retry), reraise=True,
            before_sleep=lambda state: log.info(
                "alert webhook %s: %s: attempt %d failed (%s); trying again", shown(url),
                what, state.attempt_number, state.outcome and state.outcome.exception()))
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(url, body)
        except _Retry as exc:
            log.warning("alert webhook %s: %s not delivered after %d attempts: %s",
                        shown(url), what, self.attempts, exc)
        except _Refused as exc:
            log.warning("alert webhook %s: %s not delivered: %s", shown(url), what, exc)
        else:
            log.info("alert webhook %s: %s delivered", shown(url), what)

    async def _post(self, url: str, body: bytes) -> None:
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(url, data=body) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text(errors="replace")).strip()[:200]
                why = f"the receiver answered HTTP {resp.status} {resp.reason or ''}".rstrip()
        except asyncio.TimeoutError:
            raise _Retry(f"no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Retry(f"cannot reach it: {exc}") from None
        why += f": {text}" if text else ""
        if resp.status in (408, 429) or resp.status >= 500:
            raise _Retry(why)
        raise _Refused(f"{why} (not retried: it refuses this notification)")
