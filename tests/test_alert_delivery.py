"""How the manager's webhook sender delivers, and when it gives up: against real HTTP
receivers on 127.0.0.1 that fail, refuse, or never answer. Sending never waits."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from infrakit.manager import webhook
from infrakit.manager.webhook import WebhookSender
from tests.test_alert_webhooks import Receiver

BODY = {"version": "4", "alerts": []}


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(200)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        server.close()


async def deliver(sender: WebhookSender, log: pytest.LogCaptureFixture, until: str,
                  *bodies: str) -> float:
    """Start ``sender``, queue ``bodies``, and stop it once the log says ``until``;
    returns how long the queueing took."""
    await sender.start()
    try:
        started = time.perf_counter()
        for what in bodies:
            sender.send(BODY, what)
        queued = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while until not in log.text:
            assert time.monotonic() < deadline, f"the log never said {until!r}: {log.text}"
            await asyncio.sleep(0.02)
        return queued
    finally:
        await sender.stop()


def test_a_failing_receiver_is_tried_again_then_given_up_on_saying_why(
        caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(failing=10)
    try:
        sender = WebhookSender((receiver.url,), attempts=3, first_retry=0.05)
        with caplog.at_level(logging.INFO, "infrakit.alerts"):
            asyncio.run(deliver(sender, caplog, "not delivered", "X firing for group web"))
    finally:
        receiver.close()
    assert receiver.failing == 7, "not tried exactly 3 times"
    assert receiver.bodies == []
    assert (f"alert webhook http://127.0.0.1:{receiver.server.server_address[1]}/hook: X "
            "firing for group web not delivered after 3 attempts: the receiver answered "
            "HTTP 500 Internal Server Error") in caplog.text


def test_a_receiver_that_never_answers_holds_up_no_send(
        silent: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "QUEUE", 3)
    sender = WebhookSender((silent,), timeout=0.3, attempts=1)
    with caplog.at_level(logging.INFO, "infrakit.alerts"):
        queued = asyncio.run(deliver(sender, caplog, "alert 0 not delivered",
                                     *(f"alert {i}" for i in range(6))))
    assert queued < 0.05, f"queueing 6 notifications took {queued:.3f}s"
    # one taken by the sender, 3 waiting: the last two find the queue full
    assert "alert 5 dropped: 3 notifications are waiting already" in caplog.text
    assert "alert 0 not delivered after 1 attempts: no answer within 0.3s" in caplog.text


def test_a_receiver_that_refuses_is_not_asked_again(caplog: pytest.LogCaptureFixture) -> None:
    """A 4xx (but 408 and 429) will not pass by itself: one attempt, and the reason."""
    receiver = Receiver(failing=10, failure=400)
    try:
        sender = WebhookSender((receiver.url,), attempts=3, first_retry=0.05)
        with caplog.at_level(logging.INFO, "infrakit.alerts"):
            asyncio.run(deliver(sender, caplog, "not delivered", "Y resolved for group db"))
    finally:
        receiver.close()
    assert receiver.failing == 9
    assert ("Y resolved for group db not delivered: the receiver answered HTTP 400 Bad "
            "Request (not retried: it refuses this notification)") in caplog.text


def test_a_receiver_that_cannot_be_reached_is_tried_again(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port with nothing on it
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    sender = WebhookSender((closed,), attempts=2, first_retry=0.05)
    with caplog.at_level(logging.INFO, "infrakit.alerts"):
        asyncio.run(deliver(sender, caplog, "not delivered", "Y resolved for group db"))
    assert "Y resolved for group db: attempt 1 failed (cannot reach it: " in caplog.text
    assert "not delivered after 2 attempts: cannot reach it" in caplog.text
