"""When a manager sends an alert: pending until its ``for`` time has passed, firing once,
again every repeat interval, resolved once when its condition ends; and the body it sends,
in Alertmanager's webhook format."""

from __future__ import annotations

import re

from infrakit.manager.alerting import Tracker
from infrakit.manager.alerts import BREAKER_OPEN, CRASH_LOOPING, PLUGIN_DOWN, Alert, duration
from infrakit.manager.webhook import NEVER, Notice, payload

T0 = 1_700_000_000.0


def alert(name: str = BREAKER_OPEN, group: str = "web", hold: float = 60.0,
          description: str = "3 members of group web are unhealthy",
          **labels: str) -> Alert:
    return Alert(name, "critical", (("group", group), *sorted(labels.items())), description,
                 hold)


def sent(notes: list[list[Notice]]) -> list[tuple[str, str, str]]:
    """(alertname, group, status) of each alert of each notification."""
    return [(n.alert.name, dict(n.alert.labels)["group"], n.status)
            for batch in notes for n in batch]


def test_an_alert_fires_once_its_condition_has_lasted_its_for_time() -> None:
    tracker = Tracker(repeat=3600)
    assert tracker.update([alert()], T0) == []
    assert tracker.update([alert()], T0 + 59) == []
    assert sent(tracker.update([alert()], T0 + 60)) == [(BREAKER_OPEN, "web", "firing")]
    assert tracker.update([alert()], T0 + 61) == []


def test_a_condition_that_ends_before_its_for_time_sends_nothing() -> None:
    tracker = Tracker(repeat=3600)
    tracker.update([alert()], T0)
    assert tracker.update([], T0 + 30) == []
    assert tracker.update([alert()], T0 + 31) == []  # pending afresh: 60 s from now
    assert tracker.update([alert()], T0 + 90) == []
    assert sent(tracker.update([alert()], T0 + 91)) == [(BREAKER_OPEN, "web", "firing")]


def test_an_alert_resolves_once_and_says_since_and_until_when() -> None:
    tracker = Tracker(repeat=3600)
    tracker.update([alert(hold=0)], T0)
    [[resolved]] = tracker.update([], T0 + 5)
    assert (resolved.status, resolved.starts, resolved.ends) == ("resolved", T0, T0 + 5)
    assert tracker.update([], T0 + 6) == []


def test_a_firing_alert_is_sent_again_every_repeat_interval() -> None:
    tracker = Tracker(repeat=100)
    tracker.update([alert(hold=0)], T0)
    assert tracker.update([alert(hold=0)], T0 + 99) == []
    assert sent(tracker.update([alert(hold=0)], T0 + 100)) == [(BREAKER_OPEN, "web", "firing")]
    assert tracker.update([alert(hold=0)], T0 + 150) == []
    assert len(tracker.update([alert(hold=0)], T0 + 200)) == 1


def test_one_notification_per_alert_name_and_group_with_all_its_firing_alerts() -> None:
    tracker = Tracker(repeat=3600)
    down = [alert(PLUGIN_DOWN, hold=0, plugin=p, seen_by="group")
            for p in ("instance-process", "flavor-vanilla")]
    notes = tracker.update([*down, alert(CRASH_LOOPING, hold=0),
                            alert(CRASH_LOOPING, "db", hold=0)], T0)
    assert sorted(len(batch) for batch in notes) == [1, 1, 2]
    # one plugin answers again: its group's notification says so, with the one still down
    [batch] = tracker.update([down[0], alert(CRASH_LOOPING, hold=0),
                              alert(CRASH_LOOPING, "db", hold=0)], T0 + 1)
    assert [(dict(n.alert.labels)["plugin"], n.status) for n in batch] == [
        ("instance-process", "firing"), ("flavor-vanilla", "resolved")]
    assert payload(batch)["status"] == "firing"


def test_the_body_has_alertmanagers_fields_and_values() -> None:
    one = alert(PLUGIN_DOWN, description="Group web cannot reach plugin x: gone.",
                plugin="x", seen_by="group")
    body = payload([Notice(one, "firing", T0, None)])
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                         "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                         "alerts"}
    assert body["version"] == "4"
    assert body["groupKey"] == '{}:{alertname="InfrakitPluginDown", group="web"}'
    assert body["groupLabels"] == {"alertname": PLUGIN_DOWN, "group": "web"}
    [sent_alert] = body["alerts"]
    assert set(sent_alert) == {"status", "labels", "annotations", "startsAt", "endsAt",
                               "generatorURL", "fingerprint"}
    assert sent_alert["labels"] == {"alertname": PLUGIN_DOWN, "group": "web", "plugin": "x",
                                    "seen_by": "group", "severity": "critical"}
    assert sent_alert["annotations"] == {"summary": "Plugin x is not reachable",
                                         "description": one.description}
    assert sent_alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert sent_alert["endsAt"] == NEVER
    assert re.fullmatch("[0-9a-f]{16}", sent_alert["fingerprint"])
    assert body["commonLabels"] == sent_alert["labels"]
    ended = payload([Notice(one, "resolved", T0, T0 + 1.5)])
    assert ended["status"] == "resolved"
    assert ended["alerts"][0]["endsAt"] == "2023-11-14T22:13:21.500Z"
    assert ended["alerts"][0]["fingerprint"] == sent_alert["fingerprint"]


def test_the_fingerprint_is_the_labels_and_not_the_words() -> None:
    assert alert(description="a").fingerprint == alert(description="b").fingerprint
    assert alert().fingerprint != alert(group="db").fingerprint


def test_durations_read_as_words() -> None:
    assert [duration(s) for s in (600, 60, 90, 1, 0.5)] == [
        "10 minutes", "1 minute", "90 seconds", "1 second", "0.5 seconds"]
