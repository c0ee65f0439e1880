"""``infrakit explain``: the group spec's reference, read from the typed spec that checks
commits, through the CLI; and docs/spec.md, which must be the same text."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from infrakit.cli.explain import EXAMPLE, reference_page
from infrakit.plugins.group.spec import GroupProperties, PluginSpec
from infrakit.spi.group import GroupSpec
from infrakit.spi.types import Allocation
from tests.conftest import Cli, StartPlugin
from tests.test_cli import ok

ROOT = Path(__file__).resolve().parent.parent


def _fields(out: str) -> dict[str, str]:
    """The FIELDS of an explain page: each name and the line that introduces it."""
    body = out.split("\nFIELDS:\n", 1)[1]
    return {m.group(1): m.group(0) for m in re.finditer(r"(?m)^  (\w+)  <.*$", body)}


def test_explain_group_lists_the_top_level_fields(cli: Cli) -> None:
    out = ok(cli("explain", "group")).stdout
    assert out.startswith("FIELD:    group <object>\n")
    assert list(_fields(out)) == ["ID", "Properties"]
    assert ok(cli("explain")).stdout == out  # group is the default


def test_explain_a_nested_object_shows_types_defaults_and_meaning(cli: Cli) -> None:
    out = ok(cli("explain", "group.Properties.Allocation")).stdout
    assert out.startswith("FIELD:    group.Properties.Allocation <object>\n")
    fields = _fields(out)
    assert fields == {"Size": "  Size  <integer>  default: 0",
                      "LogicalIDs": "  LogicalIDs  <[]string>"}
    assert "How many interchangeable members the group keeps (cattle)." in out
    # any letter case finds it, as a user may type it
    assert ok(cli("explain", "GROUP.properties.allocation")).stdout == out


def test_explain_properties_lists_every_field_the_group_reads(cli: Cli) -> None:
    fields = _fields(ok(cli("explain", "group.Properties")).stdout)
    assert list(fields) == [f.encode_name for f in msgspec.structs.fields(GroupProperties)]
    assert fields["HealthGrace"] == "  HealthGrace  <duration>  default: 1m"
    assert fields["MaxUnhealthy"] == '  MaxUnhealthy  <integer or string>  default: "50%"'
    assert fields["ScaleInOrder"] == ('  ScaleInOrder  <"newest" or "oldest">  '
                                      'default: "newest"')


def test_explain_a_duration_says_how_to_write_one(cli: Cli) -> None:
    out = ok(cli("explain", "group.Properties.StartupGrace")).stdout
    assert out.startswith("FIELD:    group.Properties.StartupGrace <duration>\n"
                          "DEFAULT:  0s\n")
    assert 'such as "90s", "5m", "1h30m" or\n    "500ms"' in out


def test_explain_recursive_shows_the_whole_tree(cli: Cli) -> None:
    lines = ok(cli("explain", "group", "-r")).stdout.splitlines()
    assert lines[:4] == ["group", "  ID  <string>", "  Properties  <object>",
                         "    Allocation  <object>"]
    assert "      Properties  <any>" in lines  # Instance's and Flavor's: the plugin's own


def test_explain_an_unknown_field_is_a_usage_error_with_a_suggestion(cli: Cli) -> None:
    done = cli("explain", "group.Properties.Alocation")
    assert done.returncode == 2
    assert ("group.Properties.Alocation: unknown field; did you mean Allocation?"
            in done.stderr)
    done = cli("explain", "pod")
    assert done.returncode == 2 and "'pod' is not a spec explain knows" in done.stderr


@pytest.mark.parametrize("struct", [GroupSpec, GroupProperties, Allocation, PluginSpec])
def test_every_field_of_the_spec_has_a_meaning(struct: type[msgspec.Struct]) -> None:
    """An undocumented field would show as ``-`` in explain and in docs/spec.md."""
    for info in msgspec.structs.fields(struct):
        metadata = getattr(info.type, "__metadata__", ())
        assert any(isinstance(m, msgspec.Meta) and m.description for m in metadata), \
            f"{struct.__name__}.{info.encode_name} has no Meta(description=...)"


def test_docs_spec_md_is_what_explain_prints(cli: Cli) -> None:
    page = (ROOT / "docs" / "spec.md").read_text()
    assert page == reference_page(), \
        "docs/spec.md is stale: run `make docs` (scripts/spec_reference.py)"
    for path in ("group", "group.Properties", "group.Properties.Allocation",
                 "group.Properties.Instance", "group.Properties.Flavor"):
        assert f"## {path}\n\n```text\n{ok(cli('explain', path)).stdout}```\n" in page
    assert "[docs/spec.md](docs/spec.md)" in (ROOT / "README.md").read_text()


def test_the_example_of_docs_spec_md_is_a_spec_the_group_accepts(
        cli: Cli, home: Path, start_plugin: StartPlugin) -> None:
    for kind in ("instance-process", "flavor-vanilla", "group"):
        start_plugin(kind)
    (home / "example.yml").write_text(EXAMPLE)
    said = ok(cli("group", "commit", "example.yml", "--pretend")).stdout
    assert said == "Committing web would involve: Managing 5 instances\n"
