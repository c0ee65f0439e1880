"""The command line as people expect it, and the extras: run as a user runs ``infrakit``.

Each command is a fresh process, as in test_cli.py; completion is asked the way bash asks
it, and, once, through bash itself with the script ``infrakit completion bash`` prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib.metadata import requires
from pathlib import Path

import pytest

import infrakit
from infrakit.cli.kinds import KINDS
from infrakit.extras import EXTRAS, PROJECT
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, require_engine, wait_until
from tests.test_cli import ok, one_line_error

Done = subprocess.CompletedProcess[str]

SPEC = {"ID": "web", "Properties": {
    "Allocation": {"Size": 1},
    "Instance": {"Plugin": "instance-file", "Properties": {}},
    "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}


@pytest.fixture
def groups(cli: Cli, start_plugin: StartPlugin, home: Path) -> list[str]:
    """A group plugin watching two committed groups, ``web`` and ``db``."""
    for kind in ("instance-file", "flavor-vanilla", "group"):
        start_plugin(kind)
    for gid in ("web", "db"):
        (home / f"{gid}.json").write_text(json.dumps({**SPEC, "ID": gid}))
        ok(cli("group", "commit", f"{gid}.json"))
    return ["db", "web"]


def completions(cli: Cli, *words: str) -> list[str]:
    """What ``infrakit WORDS<Tab>`` offers, asked as click's bash script asks it (the last
    word is the one being completed)."""
    done = ok(cli(env={"_INFRAKIT_COMPLETE": "bash_complete",
                       "COMP_WORDS": " ".join(["infrakit", *words]),
                       "COMP_CWORD": str(len(words))}))
    assert done.stderr == ""
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


# -- version ---------------------------------------------------------------------------------


def test_version_flag_and_version_as_json(cli: Cli) -> None:
    assert ok(cli("--version")).stdout == f"infrakit-py {infrakit.__version__}\n"
    data = json.loads(ok(cli("version", "-o", "json")).stdout)
    assert data == {"Version": infrakit.__version__,
                    "APIs": ["Instance/0.5.0", "Flavor/0.1.0", "Group/0.1.0", "Event/0.1.0",
                             "Metadata/0.1.0"]}


# -- global flags ----------------------------------------------------------------------------


def test_log_after_the_sub_command_traces_the_calls(cli: Cli, start_plugin: StartPlugin) -> None:
    start_plugin("instance-file")
    describe = ("instance", "--name", "instance-file", "describe")
    for args in ((*describe, "--log", "5"), (*describe[:3], "--log", "5", describe[3]),
                 ("--log", "5", *describe)):
        assert '"method":"Instance.DescribeInstances"' in ok(cli(*args)).stderr, args
    assert ok(cli(*describe)).stderr == ""  # the default level traces nothing
    assert ok(cli(*describe, "--log", "4")).stderr == ""


def test_debug_after_the_sub_command_shows_the_traceback(cli: Cli, flavor_vanilla: Path,
                                                        home: Path) -> None:
    (home / "bad.json").write_text(json.dumps({"Init": 3}))
    validate = ("flavor", "--name", "flavor-vanilla", "validate", "bad.json")
    assert "Properties.Init" in one_line_error(cli(*validate))
    for args in ((*validate, "--debug"), (*validate[:3], "--debug", *validate[3:])):
        loud = cli(*args)
        assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr


def test_help_of_a_sub_command_shows_the_global_flags(cli: Cli) -> None:
    out = ok(cli("group", "describe", "--help")).stdout
    assert "--log" in out and "--debug" in out and "Global" in out


# -- exit statuses ---------------------------------------------------------------------------


def test_exit_statuses_are_documented_and_kept(cli: Cli, home: Path) -> None:
    out = ok(cli("--help")).stdout
    for line in ("0    success", "1    an error", "2    a usage error",
                 "3    a --wait gave up", "130  interrupted"):
        assert line in out
    assert cli("group", "describe").returncode == 2  # ID missing
    assert cli("plugin", "ls", "--no-such-flag").returncode == 2
    assert cli("no-such-command").returncode == 2
    assert cli("group", "ls").returncode == 1  # no group plugin runs
    # 3, a --wait that gave up: test_supervise.py (plugin start) and test_group_plugin.py
    (home / "bad.json").write_text("{")
    assert cli("group", "commit", "bad.json").returncode == 1


def test_manager_status_fails_when_no_manager_leads(cli: Cli) -> None:
    line = one_line_error(cli("manager", "status"))
    assert line == "Error: no manager leads (none is running)"
    as_json = cli("manager", "status", "-o", "json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout) is None


# -- completion ------------------------------------------------------------------------------


def test_completion_offers_group_ids(cli: Cli, groups: list[str]) -> None:
    for verb in ("describe", "inspect", "events", "destroy", "free", "pause-update"):
        assert completions(cli, "group", verb, "") == groups, verb
    assert completions(cli, "group", "describe", "w") == ["web"]
    assert completions(cli, "group", "--name", "group", "inspect", "d") == ["db"]


def test_completion_offers_plugin_names_and_kinds(cli: Cli, start_plugin: StartPlugin) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    assert completions(cli, "instance", "--name", "") == ["flavor-vanilla", "instance-file"]
    assert completions(cli, "plugin", "stop", "i") == ["instance-file"]
    kinds = completions(cli, "plugin", "start", "instance-")
    assert "instance-file" in kinds and "instance-process" in kinds
    assert all(k.startswith("instance-") for k in kinds)
    assert completions(cli, "plugin", "run", "flavor-v") == ["flavor-vanilla"]


def test_completion_says_nothing_when_no_group_plugin_answers(cli: Cli) -> None:
    assert completions(cli, "group", "describe", "") == []
    assert completions(cli, "group", "--name", "nope", "describe", "") == []


def test_bash_completes_group_ids_with_the_printed_script(cli: Cli, groups: list[str]) -> None:
    bash = shutil.which("bash")
    require_engine(None if bash else "bash is not installed")
    script = ok(cli("completion", "bash")).stdout
    assert "_INFRAKIT_COMPLETE" in script
    ask = (f'{script}\nCOMP_WORDS=(infrakit group describe ""); COMP_CWORD=3\n'
           '_infrakit_completion infrakit; printf "%s\\n" "${COMPREPLY[@]}"')
    bindir = Path(PY).parent
    assert (bindir / "infrakit").exists()
    done = subprocess.run([str(bash), "-c", ask], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == groups


# -- the extras ------------------------------------------------------------------------------

_WITHOUT = """
import runpy, sys
for module in sys.argv.pop(1).split(","):
    sys.modules[module] = None  # as if it were not installed
runpy.run_module("infrakit", run_name="__main__", alter_sys=True)
"""


def without(cli_home: Path, modules: tuple[str, ...], *args: str) -> Done:
    """``infrakit ARGS`` in an interpreter where ``modules`` cannot be imported."""
    return subprocess.run([PY, "-c", _WITHOUT, ",".join(modules), *args], capture_output=True,
                          text=True, cwd=cli_home, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("extra", ["aws", "cloud", "docker", "qemu", "redfish"])
def test_starting_a_kind_whose_extra_is_missing_says_the_pip_line(home: Path, plugins_dir: Path,
                                                                 extra: str) -> None:
    kind = f"instance-{extra}"
    done = without(home, EXTRAS[extra], "plugin", "start", "instance-file", kind)
    line = one_line_error(done)
    assert line.startswith(f"Error: the plugin kind {kind} needs ")
    assert line.endswith(f"extra installs: pip install '{PROJECT}[{extra}]'")
    assert not plugins_dir.exists() or list(plugins_dir.iterdir()) == []  # none started
    run = one_line_error(without(home, EXTRAS[extra], "plugin", "run", kind))
    assert run.endswith(f"pip install '{PROJECT}[{extra}]'")


def test_the_etcd_store_without_its_extra_says_the_pip_line(home: Path) -> None:
    done = without(home, EXTRAS["etcd"], "manager", "--store", "etcd", "--etcd-endpoints",
                   "http://127.0.0.1:9", "status")
    assert one_line_error(done).endswith(f"pip install '{PROJECT}[etcd]'")


def test_local_use_needs_no_extra(cli: Cli, procs: Processes, home: Path,
                                  plugins_dir: Path) -> None:
    """The plugins and the CLI of local use, each in a process where no library of an
    extra can be imported."""
    every = ",".join(m for modules in EXTRAS.values() for m in modules)
    for kind in ("instance-file", "flavor-vanilla", "group"):
        log = home / "test-logs" / f"{kind}.log"
        proc = procs.spawn([PY, "-c", _WITHOUT, every, "plugin", "run", kind], log)
        procs.wait_ready(kind, plugins_dir / kind, proc, log)
    (home / "web.json").write_text(json.dumps(SPEC))
    bare = every.split(",")
    ok(without(home, tuple(bare), "group", "commit", "web.json"))
    wait_until(lambda: "converged: yes, 1 members" in ok(
        without(home, tuple(bare), "group", "describe", "web")).stdout, 20,
        what="the group to converge")
    with_extras = sum(1 for kind in KINDS.values() if kind.extra)  # each says its extra
    assert ok(cli("plugin", "start", "--help")).stdout.count("extra)") == with_extras == 5


def test_the_base_requirements_hold_no_provider_sdk() -> None:
    """What ``pip install infrakit-py`` pulls: nothing of an extra but through it."""
    wanted = requires(PROJECT) or []
    base = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in wanted
            if "extra ==" not in r}
    assert base.isdisjoint({"boto3", "botocore", "apache-libcloud", "docker", "etcd3gw"}), base
    extras = {r.split("extra ==")[1].strip().strip("\"'") for r in wanted if "extra ==" in r}
    assert set(EXTRAS) | {"all", "dev"} <= extras, extras
