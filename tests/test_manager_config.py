"""`infrakit manager commit | inspect | export`: every group at once, through a real group
plugin, in our format and the reference InfraKit's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infrakit.manager.config import parse_configuration
from infrakit.spi.errors import PluginError
from tests.conftest import Cli, StartPlugin
from tests.helpers import wait_until


def props(size: int, note: str = "v1") -> dict[str, Any]:
    return {"Allocation": {"Size": size},
            "Instance": {"Plugin": "instance-file", "Properties": {"Note": note}},
            "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}


@pytest.fixture
def stack(start_plugin: StartPlugin) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    start_plugin("group")


def ok(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def groups(cli: Cli) -> dict[str, Any]:
    exported: dict[str, Any] = json.loads(ok(cli("manager", "export")).stdout)["Groups"]
    return exported


@pytest.mark.usefixtures("stack")
def test_commit_reads_the_references_format_and_export_round_trips(cli: Cli,
                                                                  home: Path) -> None:
    reference = {"Groups": {"web": {"ID": "web", "Properties": props(2)},
                            "db": props(1)}}  # a value may also be the properties alone
    (home / "all.json").write_text(json.dumps(reference))
    out = ok(cli("manager", "commit", str(home / "all.json"))).stdout.splitlines()
    assert out == ["web: Managing 2 instances", "db: Managing 1 instances"]
    assert groups(cli) == {"db": {"ID": "db", "Properties": props(1)},
                           "web": {"ID": "web", "Properties": props(2)}}
    ok(cli("manager", "export", str(home / "backup.json")))
    again = ok(cli("manager", "commit", str(home / "backup.json"))).stdout.splitlines()
    assert again == ["db: Noop", "web: Noop"]
    table = ok(cli("manager", "inspect")).stdout.splitlines()
    assert table[0].split() == ["ID", "ALLOCATION", "INSTANCE", "FLAVOR"]
    assert table[1].split() == ["db", "Size:", "1", "instance-file", "flavor-vanilla"]


@pytest.mark.usefixtures("stack")
def test_pretend_changes_nothing_and_prune_destroys_only_when_asked(cli: Cli,
                                                                   home: Path) -> None:
    first = [{"ID": "a", "Properties": props(1)}, {"ID": "b", "Properties": props(1)}]
    (home / "first.yml").write_text(json.dumps(first))
    ok(cli("manager", "commit", str(home / "first.yml")))
    second = [{"Plugin": "group", "Properties": {"ID": "a", "Properties": props(2)}}]
    (home / "second.json").write_text(json.dumps(second))
    told = ok(cli("manager", "commit", "--pretend", "--prune", str(home / "second.json")))
    assert told.stdout.splitlines() == [
        "a: Adding 1 instances to increase the group size to 2",
        f"b: would be destroyed with its members (not in {home / 'second.json'})"]
    assert groups(cli)["a"]["Properties"] == props(1)  # nothing changed
    kept = ok(cli("manager", "commit", str(home / "second.json")))
    assert kept.stdout.splitlines()[-1].startswith("b: left alone")
    assert set(groups(cli)) == {"a", "b"}
    def members(gid: str) -> list[Any]:
        out: list[Any] = json.loads(ok(cli("instance", "--name", "instance-file", "describe",
                                           "--tags", f"infrakit.group={gid}", "-o",
                                           "json")).stdout)
        return out

    wait_until(lambda: len(members("b")) == 1, 10, what="group b's member")
    ok(cli("manager", "commit", "--prune", str(home / "second.json")))
    assert set(groups(cli)) == {"a"}
    assert members("b") == []  # destroyed with its group


@pytest.mark.usefixtures("stack")
def test_a_bad_group_commits_nothing_and_names_itself(cli: Cli, home: Path) -> None:
    bad = {"Groups": {"good": props(1), "bad": {**props(1), "Allocation": {}}}}
    (home / "bad.json").write_text(json.dumps(bad))
    done = cli("manager", "commit", str(home / "bad.json"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bad: Allocation must not be blank; nothing was committed" in done.stderr
    assert groups(cli) == {}


@pytest.mark.parametrize(("data", "message"), [
    ({"Groups": []}, "Groups: must map each group's ID to its spec"),
    ({"Groups": {"a": {"ID": "b", "Properties": {}}}}, "Groups.a.ID: 'b' differs from its key"),
    ([{"ID": "", "Properties": {}}], "[0].ID: must not be blank"),
    ([{"Plugin": "instance-file", "Properties": {}}], "[0].Plugin: 'instance-file' is not a "
                                                      "group plugin"),
    ([{"ID": "a", "Properties": {}}, {"ID": "a", "Properties": {}}], "'a' appears twice"),
    ([5], "[0]: must be a group spec"),
    ({"web": {}}, 'a configuration is {"Groups"'),
])
def test_malformed_configurations_name_the_entry(data: Any, message: str) -> None:
    with pytest.raises(PluginError) as err:
        parse_configuration(data)
    assert message in str(err.value)
