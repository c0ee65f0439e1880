"""The Prometheus alerting rules of examples/prometheus: valid, loaded by the example
configuration, passing their unit tests (each alert firing and not firing at its
boundaries) under the real ``promtool``, and worded as the manager's own alerts are."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrakit.manager.alerts import NEXT, SUMMARIES
from tests.helpers import require_engine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "prometheus"
RULES = EXAMPLES / "infrakit-alerts.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    require_engine(None if tool else "promtool is not installed (Debian package prometheus)")
    assert tool is not None
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=EXAMPLES,
                          timeout=60)


def test_the_rules_are_valid_and_pass_the_lint() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_the_example_configuration_loads_the_rules() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_each_alert_fires_and_does_not_at_its_boundaries() -> None:
    done = promtool("test", "rules", "infrakit-alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_rule_that_fires_a_minute_early_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests hold the boundaries: moved by a minute, they fail."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("for: 10m", "for: 9m"))
    shutil.copy(EXAMPLES / "infrakit-alerts.test.yml", tmp_path)
    done = promtool("test", "rules", str(tmp_path / "infrakit-alerts.test.yml"))
    assert done.returncode != 0
    assert "alertname: InfrakitGroupNotConverged, time: 9m" in done.stdout + done.stderr


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _as_python(template: str) -> str:
    """A Prometheus annotation in the manager's template form: ``{group}`` for
    ``{{ $labels.group }}``."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", r"{\1}", template)


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_the_manager_words_its_alerts_as_the_rules_do(name: str) -> None:
    """The same summary, and the same advice on what to run next, whether Prometheus or
    the manager's webhook raises the alert."""
    rules = [r for r in _rules() if r["alert"] == name]
    assert rules, f"{name} has no rule"
    worded = [(_as_python(r["annotations"]["summary"]),
               _as_python(r["annotations"]["description"])) for r in rules]
    assert SUMMARIES[name] in [summary for summary, _ in worded]
    description = next(d for s, d in worded if s == SUMMARIES[name])
    assert description.endswith(NEXT[name]), (description, NEXT[name])


def test_every_rule_says_what_to_run_next() -> None:
    for rule in _rules():
        assert "Run `infrakit " in rule["annotations"]["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
