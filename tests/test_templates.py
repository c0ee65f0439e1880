"""Spec files as Jinja2 templates: ``group commit`` and ``manager commit`` of a ``.j2``
file (or any, with ``--template``) through real plugins, and ``infrakit template
render``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cli, StartPlugin
from tests.helpers import PY

Done = subprocess.CompletedProcess[str]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "templates"

GROUP = """\
ID: {{ name }}
Properties:
  Allocation:
    Size: {{ size }}
{% include "parts/instance.yml" %}
  Flavor:
    Plugin: flavor-vanilla
    Properties:
      Init: ["echo {{ env("IK_GREETING") }} {{ env("IK_UNSET_HERE", "fallback") }}"]
      Health: {TCP: "127.0.0.1:{% raw %}{{ .Properties.port }}{% endraw %}"}
"""
INSTANCE_PART = """\
  Instance:
    Plugin: instance-file
    Properties:
      Note: {{ note }}
{% if debug %}
      Debug: enabled
{% endif %}
"""


def ok(done: Done) -> Done:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def one_line_error(done: Done) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def stack(start_plugin: StartPlugin) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    start_plugin("group")


@pytest.fixture
def spec_dir(home: Path) -> Path:
    """``specs/web.yml.j2``, including ``specs/parts/instance.yml``, and ``vars.yml``."""
    (home / "specs" / "parts").mkdir(parents=True)
    (home / "specs" / "web.yml.j2").write_text(GROUP)
    (home / "specs" / "parts" / "instance.yml").write_text(INSTANCE_PART)
    (home / "vars.yml").write_text("name: web\nsize: 1\nnote: from-the-file\n")
    return home / "specs"


def inspect(cli: Cli, gid: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(ok(cli("group", "inspect", gid, "-o", "json")).stdout)
    return spec


@pytest.mark.usefixtures("stack")
def test_group_commit_renders_variables_includes_and_the_environment(
        cli: Cli, home: Path, spec_dir: Path) -> None:
    done = ok(cli("group", "commit", "specs/web.yml.j2", "--vars", "vars.yml", "--var",
                  "size=2", "--var", "debug=true", env={"IK_GREETING": "hi"}))
    assert done.stdout.strip() == "Committed web: Managing 2 instances"
    props = inspect(cli, "web")["Properties"]
    assert props["Allocation"] == {"Size": 2}  # --var wins over the file, as a number
    assert props["Instance"]["Properties"] == {"Note": "from-the-file", "Debug": "enabled"}
    assert props["Flavor"]["Properties"] == {
        "Init": ["echo hi fallback"],
        "Health": {"TCP": "127.0.0.1:{{ .Properties.port }}"}}  # the flavor's, untouched
    shown = ok(cli("template", "render", "specs/web.yml.j2", "--vars", "vars.yml", "--var",
                   "size=2", "--var", "debug=false", env={"IK_GREETING": "hi"})).stdout
    assert yaml.safe_load(shown)["Properties"]["Instance"]["Properties"] == {
        "Note": "from-the-file"}  # false is false, not the text "false"
    assert "\n\n" not in shown  # blocks leave no blank lines behind


@pytest.mark.usefixtures("stack")
def test_manager_commit_renders_a_configuration(cli: Cli, home: Path) -> None:
    (home / "all.json.j2").write_text(
        '{"Groups": {\n'
        '{% for g in groups %}\n'
        '  "{{ g }}": {"Allocation": {"Size": {{ size }}},\n'
        '    "Instance": {"Plugin": "instance-file", "Properties": {"Note": "{{ g }}"}},\n'
        '    "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}'
        '{{ "," if not loop.last }}\n'
        '{% endfor %}\n'
        '}}\n')
    (home / "groups.json").write_text(json.dumps({"groups": ["a", "b"], "size": 1}))
    done = ok(cli("manager", "commit", "all.json.j2", "--vars", "groups.json"))
    assert done.stdout.splitlines() == ["a: Managing 1 instances", "b: Managing 1 instances"]
    exported = json.loads(ok(cli("manager", "export")).stdout)["Groups"]
    assert {gid: g["Properties"]["Instance"]["Properties"] for gid, g in exported.items()} \
        == {"a": {"Note": "a"}, "b": {"Note": "b"}}


@pytest.mark.usefixtures("stack")
def test_a_template_that_fails_names_its_line_and_commits_nothing(
        cli: Cli, home: Path, spec_dir: Path) -> None:
    line = one_line_error(cli("group", "commit", "specs/web.yml.j2", "--var", "name=web",
                              "--var", "note=x", env={"IK_GREETING": "hi"}))
    assert line.startswith("Error: specs/web.yml.j2, line 4: 'size' is undefined (give it "
                           "with --var size=VALUE")
    line = one_line_error(cli("manager", "commit", "specs/web.yml.j2", "--vars", "vars.yml",
                              "--var", "size=1"))  # the included file names its own line
    assert line.startswith("Error: specs/parts/instance.yml, line 5: 'debug' is undefined")
    line = one_line_error(cli("manager", "commit", "specs/web.yml.j2", "--vars", "vars.yml",
                              "--var", "size=1", "--var", "debug=false"))
    assert line == ("Error: specs/web.yml.j2, line 9: the environment variable IK_GREETING "
                    'is not set (set it, or give a default: env("IK_GREETING", "default"))')
    assert ok(cli("group", "ls", "-q")).stdout == ""


@pytest.mark.usefixtures("stack")
def test_a_field_refused_in_a_template_is_named_by_its_path(cli: Cli, home: Path) -> None:
    """The template's lines are not those of the document it renders to: the field is
    named by its path alone, and `template render` shows where it is."""
    (home / "typo.yml.j2").write_text(
        "ID: web\n\n\nProperties:\n  {{ key }}: {Size: 1}\n"
        "  Instance: {Plugin: instance-file, Properties: {}}\n"
        "  Flavor: {Plugin: flavor-vanilla, Properties: {}}\n")
    line = one_line_error(cli("group", "commit", "typo.yml.j2", "--var", "key=Alocation"))
    assert "Alocation" in line and "Allocation" in line, line
    assert "line" not in line
    assert ok(cli("group", "ls", "-q")).stdout == ""


@pytest.mark.parametrize(("files", "message"), [
    ({"t.j2": "a: 1\nb: {% if %}\n"},
     "t.j2, line 2: Expected an expression, got 'end of statement block'"),
    ({"t.j2": "a: 1\n\n{% include 'p/x.yml' %}\n", "p/x.yml": "x: 1\ny: {{ nope.z }}\n"},
     "p/x.yml, line 2: 'nope' is undefined"),
    ({"t.j2": "{% include 'p/x.yml' %}", "p/x.yml": "{% include 'y.yml' %}", "p/y.yml": "{{ q"},
     "p/y.yml, line 1: unexpected end of template"),
    ({"t.j2": "a: 1\n{% include '../secret.yml' %}\n"},
     "t.j2, line 2: '../secret.yml' is outside d/: a template reads only files in its own "
     "directory and below it"),
    ({"t.j2": "a: 1\n{% include 'link.yml' %}\n"},
     "t.j2, line 2: 'link.yml' is outside d/"),
    ({"t.j2": "{% include 'none.yml' %}"}, "t.j2, line 1: d/none.yml: no such file"),
    ({"t.j2": "a: 1\n{% include 't.j2' %}\n"},
     "t.j2, line 2: includes itself, directly or through another file"),
    ({"t.j2": "a: {{ ''.__class__.__mro__ }}\n"},
     "t.j2, line 1: access to attribute '__class__' of 'str' object is unsafe"),
    ({"t.j2": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"},
     "t.j2: renders to more than 16 MiB; refused"),
])
def test_render_errors_name_the_file_and_line(cli: Cli, home: Path, files: dict[str, str],
                                              message: str) -> None:
    (home / "secret.yml").write_text("password: hunter2\n")
    top = home / "d"
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)
    (top / "link.yml").symlink_to(home / "secret.yml")
    line = one_line_error(cli("template", "render", "d/t.j2"))
    assert line.startswith(f"Error: d/{message}"), line
    assert "hunter2" not in line


def test_template_flag_renders_any_name_and_standard_input(cli: Cli, home: Path) -> None:
    (home / "plain.yml").write_text("a: {{ x }}\n")
    (home / "part.yml").write_text("b: {{ x + 1 }}\n")
    assert ok(cli("template", "render", "plain.yml", "--var", "x=1")).stdout == "a: 1\n"
    assert ok(cli("template", "render", "-", "--var", "x=2",
                  input='{% include "part.yml" %}')).stdout == "b: 3\n"
    line = one_line_error(cli("group", "commit", "plain.yml", "--var", "x=1"))
    assert line == ("Error: plain.yml: template variables were given, but it is not a "
                    "template (its name does not end in .j2): add --template to render it")
    line = one_line_error(cli("group", "commit", "--template", "-", input="ID: {{ x }}\n"))
    assert line.startswith("Error: standard input, line 1: 'x' is undefined")
    # rendered, but not YAML: named as rendered, so that `template render` shows why
    line = one_line_error(cli("group", "commit", "--template", "-", "--var", "x=1",
                              input="ID: [{{ x }}\n"))
    assert line.startswith("Error: standard input (as rendered)")


@pytest.mark.parametrize(("args", "message"), [
    (["--var", "size"], "Invalid value for --var: 'size' is not of the form NAME=VALUE"),
    (["--var", "1x=2"], "Invalid value for --var: '1x' is not a name a template can use"),
    (["--var", "env=2"], "Invalid value for --var: 'env' is the function env(), not a "
                         "variable"),
    (["--vars", "list.yml"], "Invalid value for --vars: list.yml holds a list, not a mapping"),
    (["--vars", "bad-name.yml"], "Invalid value for --vars: 'a-b' is not a name a template"),
])
def test_bad_variables_are_usage_errors(cli: Cli, home: Path, args: list[str],
                                        message: str) -> None:
    (home / "t.j2").write_text("a: 1\n")
    (home / "list.yml").write_text("- 1\n")
    (home / "bad-name.yml").write_text("a-b: 1\n")
    done = cli("template", "render", "t.j2", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr


def test_the_example_renders_to_a_group_spec(cli: Cli) -> None:
    text = ok(cli("template", "render", str(EXAMPLES / "web.yml.j2"), "--vars",
                  str(EXAMPLES / "staging.yml"), "--var", "memory_mb=64")).stdout
    spec = yaml.safe_load(text)
    assert spec["ID"] == "web-staging" and spec["Properties"]["Allocation"] == {"Size": 3}
    assert spec["Properties"]["Instance"]["Properties"]["Limits"] == {"MemoryMB": 64}
    assert spec["Properties"]["Flavor"]["Properties"]["Health"]["HTTP"] \
        == "http://127.0.0.1:{{ .Properties.Ports.http }}/"


def test_commands_that_render_nothing_do_not_import_jinja2() -> None:
    """Jinja2 is imported to render, and only then: it would slow every command."""
    probe = ("import sys; from infrakit.cli import group, manager, template; "
             "from infrakit.cli.specfile import read_document; "
             "read_document(sys.argv[1]); print('jinja2' in sys.modules)")
    vars_file = EXAMPLES / "staging.yml"
    done = subprocess.run([PY, "-c", probe, str(vars_file)], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
