"""``infrakit group diff`` and ``group commit --pretend`` as a user meets them, against real
plugin processes: the fields that change, then what the group will do to its members, in
the words and numbers of the controller's own decision; the exit status of ``diff``; the
manager's per-group plans; and the reference's group plugin and CLI on either side."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrakit.cli.exits import CHANGES
from tests.conftest import Cli, Processes, StartPlugin
from tests.stacks import reference_binary, start_local_manager, start_reference_group
from tests.test_cli import ok, one_line_error
from tests.test_terminal import on_terminal


def spec(size: int = 3, image: str = "busybox:1", **extra: Any) -> dict[str, Any]:
    return {"ID": "web", "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {"Image": image}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Tags": {"tier": "web"}}},
        **extra}}


@pytest.fixture
def stack(start_plugin: StartPlugin) -> None:
    for kind in ("instance-file", "flavor-vanilla", "group"):
        start_plugin(kind)


def write(home: Path, doc: dict[str, Any], name: str = "web.yml") -> str:
    (home / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return name


def diff(cli: Cli, name: str, *args: str, status: int = CHANGES) -> str:
    done = cli("group", "diff", name, *args)
    assert done.returncode == status, done
    assert "Traceback" not in done.stderr and "\x1b[" not in done.stdout  # no tty: no colour
    return done.stdout


def plan_of(cli: Cli, name: str) -> dict[str, Any]:
    done = cli("group", "diff", name, "-o", "json")
    assert done.returncode in (0, CHANGES), done
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def commit(cli: Cli, home: Path, doc: dict[str, Any]) -> None:
    ok(cli("group", "commit", write(home, doc, "committed.yml"), "--wait",
           "--wait-timeout", "30"))


def members(cli: Cli) -> list[str]:
    described = json.loads(ok(cli("group", "describe", "web", "-o", "json")).stdout)
    return sorted(m["ID"] for m in described["Instances"] or [])


@pytest.mark.usefixtures("stack")
def test_a_new_group_plans_its_creation(cli: Cli, home: Path) -> None:
    said = diff(cli, write(home, spec(3)))
    assert said.splitlines()[:2] == ["group web: new group",
                                     "  + Properties.Allocation.Size: 3"]
    assert '  + Properties.Instance.Properties.Image: "busybox:1"' in said
    assert "plan:\n  create 3 members (Size 3)\n" in said
    plan = plan_of(cli, "web.yml")
    assert (plan["NewGroup"], plan["Changed"], plan["Add"], plan["Details"]) == \
        (True, True, 3, "Managing 3 instances")
    assert ok(cli("group", "ls", "-o", "json")).stdout.strip() in ("null", "[]")  # nothing made


@pytest.mark.usefixtures("stack")
def test_an_image_change_shows_the_field_and_the_rolling_update(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(3))
    before = members(cli)
    said = diff(cli, write(home, spec(3, "busybox:2"), "image.yml"))
    assert said.splitlines() == [
        "group web: 1 field changed",
        '  ~ Properties.Instance.Properties.Image: "busybox:1" → "busybox:2"',
        "", "plan:",
        "  roll 3 members to the new config, 1 at a time (MaxSurge 1, MaxUnavailable 0): "
        "≈ 3 batches"]
    # the numbers are the controller's: two surge members at a time, a pause between rounds
    faster = plan_of(cli, write(home, spec(3, "busybox:2", MaxSurge=2, UpdatePause="1m")))
    assert (faster["Roll"], faster["PerBatch"], faster["Batches"]) == (3, 2, 2)
    assert faster["Steps"][0] == ("roll 3 members to the new config, 2 at a time (MaxSurge 2, "
                                  "MaxUnavailable 0): ≈ 2 batches, at least 1m in all "
                                  "(UpdatePause 1m)")
    assert faster["Tunables"] == ["MaxSurge 1 → 2", "UpdatePause 0 → 60"]
    # --pretend: the reference's line, alone when piped (the original's scenario compares
    # it exactly), with the plan under it on a terminal
    line = "Committing web would involve: Performing a rolling update on 3 instances\n"
    assert ok(cli("group", "commit", "image.yml", "--pretend")).stdout == line
    status, shown = on_terminal(["group", "commit", "image.yml", "--pretend"], home)
    assert status == 0 and shown.startswith(f"{line}\ngroup web: 1 field changed\n")
    assert "roll 3 members" in shown
    assert members(cli) == before  # a plan changes nothing
    committed = yaml.safe_load(ok(cli("group", "inspect", "web")).stdout)
    assert committed["Properties"]["Instance"]["Properties"]["Image"] == "busybox:1"


@pytest.mark.usefixtures("stack")
def test_a_size_change_says_how_many_and_which_members_go(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(2))
    first = members(cli)
    commit(cli, home, spec(3))
    newest = [m for m in members(cli) if m not in first]
    assert "plan:\n  add 2 members (Size 3 → 5)\n" in diff(cli, write(home, spec(5)))
    said = diff(cli, write(home, spec(1)))
    assert said.splitlines()[-1].startswith(
        f"  remove 2 members (Size 3 → 1), unhealthy ones first, then outdated ones, then the "
        f"newest (ScaleInOrder newest): {newest[0]}, ")
    oldest = plan_of(cli, write(home, spec(1, ScaleInOrder="oldest")))
    assert oldest["Remove"] == 2 and oldest["Removed"] == first  # as the controller picks
    both = plan_of(cli, write(home, spec(5, "busybox:2")))
    assert (both["Add"], both["Roll"]) == (2, 3)
    assert both["Steps"][:2] == ["add 2 members (Size 3 → 5)",
                                 "roll 3 members to the new config, 1 at a time (MaxSurge 1, "
                                 "MaxUnavailable 0): ≈ 3 batches"]


@pytest.mark.usefixtures("stack")
def test_a_tunable_change_is_never_noop(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(2))
    name = write(home, spec(2, HealthGrace=5))
    assert diff(cli, name).splitlines() == [
        "group web: 1 field changed", "  ~ Properties.HealthGrace: 60 → 5", "", "plan:",
        "  tunables: HealthGrace 60 → 5 (no member changes for them)"]
    pretend = ok(cli("group", "commit", name, "--pretend")).stdout
    assert pretend == "Committing web would involve: Changing HealthGrace from 60 to 5\n"
    assert json.loads(ok(cli("group", "commit", name, "--pretend", "-o", "json")).stdout)[
        "Details"] == "Changing HealthGrace from 60 to 5"
    # a tunable taken out goes back to its default, which the plan says
    commit(cli, home, spec(2, HealthGrace=5))
    assert "  ~ Properties.HealthGrace: 5 → 60\n" in diff(cli, write(home, spec(2)))


@pytest.mark.usefixtures("stack")
def test_the_same_spec_is_no_change_with_exit_status_0(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(2, HealthGrace=60))
    same = write(home, spec(2, HealthGrace="1m"))  # spelt otherwise, the same value
    assert diff(cli, same, status=0) == "group web: no change\n"
    assert plan_of(cli, same)["Changed"] is False
    status, shown = on_terminal(["group", "commit", same, "--pretend"], home)
    assert (status, shown) == (0, "Committing web would involve: Noop\n\ngroup web: no change\n")
    assert diff(cli, write(home, spec(2, "busybox:2")), "-o", "yaml").startswith("ID: web\n")


@pytest.mark.usefixtures("stack")
def test_a_bad_file_is_named_with_its_line_and_column(cli: Cli, home: Path) -> None:
    (home / "bad.yml").write_text("ID: web\nProperties:\n  Allocation:\n    Size: 2\n"
                                  "   Instance: 3\n")
    line = one_line_error(cli("group", "diff", "bad.yml"))
    assert line.startswith("Error: bad.yml, line 5, column 4: not valid YAML")
    doc = spec(2)
    doc["Properties"] = {"Alocation" if k == "Allocation" else k: v
                         for k, v in doc["Properties"].items()}
    line = one_line_error(cli("group", "diff", write(home, doc, "typo.yml")))
    assert line == ("Error: typo.yml, line 3: Group plugin 'group': Properties.Alocation: "
                    "unknown field; did you mean Allocation?")


@pytest.mark.usefixtures("stack")
def test_a_template_is_planned_as_it_is_committed(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(2))
    text = yaml.safe_dump(spec(2, "{{ image }}"), sort_keys=False)
    (home / "web.yml.j2").write_text(text)
    said = diff(cli, "web.yml.j2", "--var", "image=busybox:3")
    assert '  ~ Properties.Instance.Properties.Image: "busybox:1" → "busybox:3"' in said


@pytest.mark.usefixtures("stack")
def test_changes_are_in_colour_only_on_a_terminal(cli: Cli, home: Path) -> None:
    commit(cli, home, spec(2))
    name = write(home, spec(2, "busybox:2"))
    status, shown = on_terminal(["group", "diff", name], home)
    assert status == CHANGES
    assert '\x1b[33m  ~ Properties.Instance.Properties.Image: "busybox:1" → "busybox:2"' \
        '\x1b[0m' in shown
    assert "\x1b[" not in diff(cli, name)  # piped: the same lines, plain


def test_a_new_instance_plugin_says_the_old_members_are_left(
        cli: Cli, home: Path, start_plugin: StartPlugin) -> None:
    for kind in ("instance-file", "flavor-vanilla", "group"):
        start_plugin(kind)
    start_plugin("instance-file", "instance-other")
    commit(cli, home, spec(2))
    moved = spec(2)
    moved["Properties"]["Instance"]["Plugin"] = "instance-other"
    plan = plan_of(cli, write(home, moved))
    assert plan["Steps"] == ["add 2 members (Size 2)"]  # as the controller will: none there
    assert plan["Notes"] == [
        "Instance.Plugin changes from instance-file to instance-other: the group will look "
        "for its members with instance-other, and leave the 2 members that instance-file "
        "made as they are (destroy them with instance-file when done with them)"]


def test_the_help_documents_the_exit_status(cli: Cli) -> None:
    said = " ".join(ok(cli("group", "diff", "--help")).stdout.split())
    assert f"{CHANGES} changes: committing FILE would change the group" in said
    assert "0 no change" in said
    assert "--pretend" in ok(cli("group", "commit", "--help")).stdout
    root = ok(cli("--help")).stdout
    assert f"{CHANGES}    group diff: the spec would change the group" in root


def test_the_manager_plans_every_group_as_the_group_plugin_does(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path) -> None:
    start_local_manager(procs, start_plugin, home)
    commit(cli, home, spec(2))
    name = write(home, spec(2, "busybox:2", HealthGrace="5s"))
    said = diff(cli, name)  # through the manager
    assert "roll 2 members to the new config" in said
    assert "tunables: HealthGrace 60 → 5" in said
    write(home, {"Groups": {"web": spec(2, "busybox:2", HealthGrace="5s")["Properties"]}},
          "all.yml")
    summary = ["web: Performing a rolling update on 2 instances",
               "Changing HealthGrace from 60 to 5"]
    assert ok(cli("manager", "commit", "--pretend", "all.yml")).stdout.splitlines() == summary
    status, shown = on_terminal(["manager", "commit", "--pretend", "all.yml"], home)
    told = re.sub(r"\x1b\[[0-9;]*m", "", shown).splitlines()  # its colours aside
    assert status == 0 and told[:2] == summary  # then the group's plan, under its line
    assert [line.strip() for line in told[2:]] == [line.strip() for line in said.splitlines()]
    assert "busybox:1" in ok(cli("group", "inspect", "web")).stdout  # nothing committed


def test_the_reference_group_plugin_gets_its_own_pretend_commit(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path,
        plugins_dir: Path) -> None:
    start_reference_group(procs, start_plugin, home, plugins_dir)
    name = write(home, spec(3))
    said = ok(cli("group", "commit", name, "--pretend")).stdout
    assert said == "Committing web would involve: Managing 3 instances\n"
    line = one_line_error(cli("group", "diff", name))
    assert line == ("Error: group plugin 'group' cannot plan (it does not serve "
                    "Group.PlanGroup); 'infrakit group commit --pretend FILE' asks it what a "
                    "commit would do, in its own words")


@pytest.mark.usefixtures("stack")
def test_the_reference_cli_hears_the_change_of_a_tunable(cli: Cli, home: Path,
                                                         plugins_dir: Path) -> None:
    binary = reference_binary("infrakit")
    commit(cli, home, spec(2))
    (home / "tuned.json").write_text(json.dumps(spec(2, HealthGrace=5)))
    done = subprocess.run([str(binary), "group", "commit", "tuned.json", "--pretend"],
                          capture_output=True, text=True, timeout=30, cwd=home,
                          env={**os.environ, "INFRAKIT_PLUGINS_DIR": str(plugins_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Committing web would involve: Changing HealthGrace from " \
                                  "60 to 5"
