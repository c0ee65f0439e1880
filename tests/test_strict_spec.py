"""Strict group specs as a user meets them through the CLI: an unknown key is refused with
its path and the field it most likely meant, by the group plugin and by the manager alike;
a file that is neither JSON nor YAML is named with the line and column of its fault;
durations are written as people write them; errors are sentences, and documents under
``-o json``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrakit.cli.specfile import read_as
from infrakit.plugins.group.spec import parse_group
from infrakit.spi.durations import format_duration, parse_duration
from infrakit.spi.errors import PluginError
from infrakit.spi.group import GroupSpec
from tests.conftest import Cli, Processes, StartPlugin
from tests.stacks import start_local_manager
from tests.test_cli import ok, one_line_error

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
ID: web
Properties:
  Allocation:
    Size: 2
  Instance:
    Plugin: instance-file
    Properties:
      Note: any key at all, the instance plugin's own
  Flavor:
    Plugin: flavor-vanilla
    Properties:
      Tags: {tier: web}
"""


@pytest.fixture
def stack(start_plugin: StartPlugin) -> None:
    for kind in ("instance-file", "flavor-vanilla", "group"):
        start_plugin(kind)


def _write(home: Path, text: str, name: str = "g.yml") -> str:
    (home / name).write_text(text)
    return name


def _groups(cli: Cli) -> list[str]:
    return [g["ID"] for g in json.loads(ok(cli("group", "ls", "-o", "json")).stdout) or []]


@pytest.mark.parametrize(("change", "line", "message"), [
    (("  Allocation:", "  Alocation:"), 3,
     "Properties.Alocation: unknown field; did you mean Allocation?"),
    (("    Size: 2", "    Sise: 2"), 4,
     "Properties.Allocation.Sise: unknown field; did you mean Size?"),
    (("  Allocation:", "  Sise: 3\n  Allocation:"), 3,
     "Properties.Sise: unknown field; did you mean Allocation.Size?"),
    (("  Allocation:", "  HealthGracePeriod: 5\n  Allocation:"), 3,
     "Properties.HealthGracePeriod: unknown field; did you mean HealthGrace?"),
    (("  Allocation:", "  Labels: {a: b}\n  Allocation:"), 3,
     "Properties.Labels: unknown field; the fields here are Allocation, Instance, Flavor, "),
    (("    Plugin: instance-file", "    Plugin: instance-file\n    Propertes: {}"), 7,
     "Properties.Instance.Propertes: unknown field; did you mean Properties?"),
    (("  Allocation:", "  healthgrace: 5\n  Allocation:"), 3,
     "Properties.healthgrace: unknown field; did you mean HealthGrace?"),
    (("    Plugin: instance-file", "    Plugin: ''"), 6,
     "Properties.Instance.Plugin: must name a plugin"),
], ids=["typo", "in-allocation", "one-level-down", "longer", "no-match", "wrapper", "case",
        "blank"])
def test_an_unknown_key_of_the_group_is_refused_with_its_line_path_and_a_suggestion(
        cli: Cli, home: Path, stack: None, change: tuple[str, str], line: int,
        message: str) -> None:
    name = _write(home, SPEC.replace(*change, 1))
    for pretend in ((), ("--pretend",)):
        said = one_line_error(cli("group", "commit", name, *pretend))
        assert said.startswith(f"Error: g.yml, line {line}: Group plugin 'group': {message}"), \
            said
        assert "code" not in said and "-32000" not in said
    # from standard input there is no line to tell
    said = one_line_error(cli("group", "commit", "-", input=SPEC.replace(*change, 1)))
    assert said.startswith(f"Error: Group plugin 'group': {message}"), said
    assert _groups(cli) == []


def test_an_unknown_top_level_key_is_refused_before_anything_is_sent(cli: Cli,
                                                                      home: Path) -> None:
    """No plugin runs: the CLI refuses the file itself, naming it."""
    name = _write(home, SPEC.replace("Properties:", "Propertes:", 1))
    line = one_line_error(cli("group", "commit", name))
    assert line == ("Error: g.yml: not a valid group spec: Propertes: unknown field; did you "
                    "mean Properties?")


def test_the_manager_refuses_what_the_group_plugin_refuses(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path) -> None:
    start_local_manager(procs, start_plugin, home)
    spec = yaml.safe_load(SPEC)
    spec["Properties"]["Alocation"] = spec["Properties"].pop("Allocation")
    good = {**yaml.safe_load(SPEC), "ID": "db"}
    _write(home, json.dumps({"Groups": {"db": good, "web": spec}}), "all.json")
    line = one_line_error(cli("manager", "commit", "all.json"))
    assert line == ("Error: web: Properties.Alocation: unknown field; did you mean "
                    "Allocation?; nothing was committed")
    line = one_line_error(cli("group", "commit", _write(home, json.dumps(spec, indent=1),
                                                        "web.json")))
    assert line == ("Error: web.json, line 18: Group plugin 'group': Properties.Alocation: "
                    "unknown field; did you mean Allocation?")
    assert _groups(cli) == []
    _write(home, json.dumps({"Groups": {"db": good, "web": {"Properties": {}, "Labels": 1}}}),
           "all.json")
    line = one_line_error(cli("manager", "commit", "all.json"))
    assert line == ("Error: all.json: Groups.web.Labels: unknown field; the fields here are "
                    "ID, Properties")


@pytest.mark.parametrize(("name", "text", "where"), [
    ("bad.yml", "ID: web\nProperties:\n  Allocation:\n    Size: 2\n   Instance: 3\n",
     "bad.yml, line 5, column 4: not valid YAML: expected <block end>, but found '<block "
     "mapping start>' (while parsing a block mapping at line 3, column 3)"),
    ("bad.yml", "ID: web\nProperties: {Allocation: [1, }\n",
     "bad.yml, line 2, column 30: not valid YAML: expected the node content, but found '}'"),
    ("bad.json", '{\n  "ID": "web",\n  "Properties": {"Allocation": {"Size": 2,}}\n}\n',
     "bad.json, line 3, column 43: not valid JSON: Expecting property name enclosed in "
     "double quotes"),
    ("bad", '{"ID": "web",\n "Properties": {"a": [1, }}\n',
     "bad, line 2, column 26: not valid JSON: Expecting value"),
], ids=["yaml-block", "yaml-flow", "json", "json-by-its-first-character"])
def test_a_syntax_error_names_the_file_line_and_column(cli: Cli, home: Path, name: str,
                                                       text: str, where: str) -> None:
    _write(home, text, name)
    assert one_line_error(cli("group", "commit", name)) == f"Error: {where}"


def test_durations_are_written_as_people_write_them(cli: Cli, home: Path,
                                                    stack: None) -> None:
    spec = SPEC + "  HealthGrace: 5m\n  StartupGrace: 1h30m\n  UpdatePause: 500ms\n" \
                  "  BackoffLimit: 90s\n  ProvisionDeadline: 600\n"
    name = _write(home, spec)
    ok(cli("group", "commit", name))
    committed = yaml.safe_load(ok(cli("group", "inspect", "web")).stdout)
    assert committed["Properties"]["HealthGrace"] == "5m"  # kept as its author wrote it
    ok(cli("group", "set-size", "web", "3"))
    resized = yaml.safe_load(ok(cli("group", "inspect", "web")).stdout)["Properties"]
    assert resized["Allocation"] == {"Size": 3} and resized["StartupGrace"] == "1h30m"
    changed = _write(home, spec.replace("Size: 2", "Size: 3").replace("5m", "60"))
    assert "Changing HealthGrace from 300 to 60" in ok(cli("group", "commit", changed)).stdout
    ok(cli("group", "destroy", "web"))


@pytest.mark.parametrize("value", ["5 minutes", "5", "1d", "m5", "true"])
def test_a_bad_duration_names_the_field_and_the_forms_accepted(cli: Cli, home: Path,
                                                               stack: None, value: str) -> None:
    name = _write(home, SPEC + f"  HealthGrace: '{value}'\n")
    line = one_line_error(cli("group", "commit", name))
    assert line.endswith(f"Properties.HealthGrace: '{value}' is not a duration; give seconds "
                         'as a number (90), or a string such as "90s", "5m", "1h30m" or '
                         '"500ms"'), line


def test_an_error_is_a_sentence_and_a_document_under_o_json(cli: Cli, stack: None) -> None:
    line = one_line_error(cli("group", "describe", "nope"))
    assert line == "Error: Group plugin 'group': Group 'nope' is not being watched"
    done = cli("group", "describe", "nope", "-o", "json")
    assert done.returncode == 1 and done.stdout == ""
    assert json.loads(done.stderr) == {
        "Error": "Group plugin 'group': Group 'nope' is not being watched", "Code": -32000}
    done = cli("group", "--name", "absent", "ls", "-o", "yaml")
    assert done.returncode == 1
    said = yaml.safe_load(done.stderr)
    assert said["Code"] is None and "no plugin named 'absent' is running" in said["Error"]
    # a command's own default format (inspect prints YAML) leaves its errors as words
    assert one_line_error(cli("group", "inspect", "nope")).startswith("Error: Group 'nope'")


@pytest.mark.parametrize("path", [
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("group*.yml")),
    "tests/e2e/cattle.json", "tests/e2e/cattle2.json"])
def test_every_spec_shipped_is_accepted(path: str) -> None:
    """The examples and the reference's own end-to-end specs (whose flavor properties
    carry keys of the flavor's, such as ``Attachments``)."""
    spec = read_as(str(ROOT / path), GroupSpec, "group spec")
    assert parse_group(spec).target() > 0


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400), ("0", 0),
    ("2h0m1s", 7201), ("-5s", -5), ("250us", 0.00025)])
def test_durations_are_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 m", "1d", "5mm", "1h-30m", "--5s"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (60, "1m"), (300, "5m"), (5400, "1h30m"), (0.5, "500ms"), (0, "0s"), (90, "1m30s"),
    (1.5, "1.5s"), (45, "45s")])
def test_durations_are_shown_as_they_may_be_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_a_wire_spec_with_an_unknown_top_level_key_is_refused() -> None:
    """What the CLI refuses, a plugin refuses from any other client too."""
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="unknown field `Labels`"):
        msgspec.json.decode(b'{"ID": "web", "Properties": {}, "Labels": {}}', type=GroupSpec)


def test_properties_of_the_instance_and_flavor_are_theirs_to_check() -> None:
    props: dict[str, Any] = yaml.safe_load(textwrap.dedent(SPEC))["Properties"]
    props["Flavor"]["Properties"]["Anything"] = {"Goes": 1}
    assert parse_group(GroupSpec(id="web", properties=props)).flavor.properties["Anything"]
    with pytest.raises(PluginError) as refused:
        parse_group(GroupSpec(id="web", properties={**props, "Flavor": {
            "Plugins": "flavor-vanilla"}}))
    assert str(refused.value) == ("Properties.Flavor.Plugins: unknown field; did you mean "
                                  "Plugin?")


def test_the_plugins_durations_are_written_the_same_way(cli: Cli, home: Path,
                                                        start_plugin: StartPlugin) -> None:
    """A probe's Timeout (flavor-vanilla) and a process's StopGrace (instance-process)."""
    start_plugin("flavor-vanilla")
    start_plugin("instance-process")
    flavor = _write(home, "Health: {HTTP: 'http://127.0.0.1:9/', Timeout: 500ms}\n", "f.yml")
    ok(cli("flavor", "--name", "flavor-vanilla", "validate", flavor))
    flavor = _write(home, "Health: {HTTP: 'http://127.0.0.1:9/', Timout: 1s}\n", "f.yml")
    line = one_line_error(cli("flavor", "--name", "flavor-vanilla", "validate", flavor))
    assert line.endswith("Properties.Health.Timout: unknown field; did you mean Timeout?")
    process = _write(home, "Command: [sleep, '1']\nStopGrace: 1m30s\n", "p.yml")
    ok(cli("instance", "--name", "instance-process", "validate", process))
    process = _write(home, "Command: [sleep, '1']\nStopGrace: soon\n", "p.yml")
    line = one_line_error(cli("instance", "--name", "instance-process", "validate", process))
    assert "Properties.StopGrace: 'soon' is not a duration" in line
