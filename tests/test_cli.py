"""The ``infrakit`` command, run as ``python -m infrakit`` against real plugins."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import infrakit
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import InstanceClient
from infrakit.spi.types import Spec
from tests.conftest import Cli, StartPlugin, StartScript
from tests.helpers import answers_handshake, pid_alive, wait_until

Done = subprocess.CompletedProcess[str]


def ok(done: Done) -> Done:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\n" \
                                 f"stderr: {done.stderr}"
    return done


def one_line_error(done: Done, status: int = 1) -> str:
    """A failed command: exit ``status``, one line on stderr, no traceback; returns that
    line."""
    assert done.returncode == status, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def table(out: str) -> tuple[list[str], list[list[str]]]:
    lines = out.strip().splitlines()
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], split[1:]


@pytest.fixture
def inst(cli: Cli, instance_file: Path) -> Cli:
    """``infrakit instance --name instance-file ...``"""
    def run(*args: str, **kw: Any) -> Done:
        return cli("instance", "--name", "instance-file", *args, **kw)
    return run


@pytest.fixture
def flav(cli: Cli, flavor_vanilla: Path) -> Cli:
    """``infrakit flavor --name flavor-vanilla ...``"""
    def run(*args: str, **kw: Any) -> Done:
        return cli("flavor", "--name", "flavor-vanilla", *args, **kw)
    return run


def _describe(inst: Cli, *args: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(ok(inst("describe", "-o", "json", *args)).stdout)
    return data


# -- version and plugins --------------------------------------------------------------------


def test_version(cli: Cli) -> None:
    out = ok(cli("version")).stdout
    assert f"infrakit-py {infrakit.__version__}" in out
    assert "Instance/0.5.0" in out and "Flavor/0.1.0" in out and "Group/0.1.0" in out
    assert "Event/0.1.0" in out and "Metadata/0.1.0" in out


def test_plugin_start_then_ls_shows_one_row_per_interface(cli: Cli, plugins_dir: Path) -> None:
    started = ok(cli("plugin", "start", "instance-file", "flavor-vanilla")).stdout
    assert re.search(r"started instance-file \(pid \d+\)", started)
    assert re.search(r"started flavor-vanilla \(pid \d+\)", started)
    headers, rows = table(ok(cli("plugin", "ls")).stdout)
    assert headers == ["INTERFACE", "LISTEN", "NAME"]
    assert sorted(rows) == [
        ["Flavor/0.1.0", str(plugins_dir / "flavor-vanilla"), "flavor-vanilla"],
        ["Instance/0.5.0", str(plugins_dir / "instance-file"), "instance-file"],
    ]


def test_plugin_ls_json_and_yaml(cli: Cli, plugins_dir: Path) -> None:
    ok(cli("plugin", "start", "instance-file:files"))
    as_json = json.loads(ok(cli("plugin", "ls", "-o", "json")).stdout)
    as_yaml = yaml.safe_load(ok(cli("plugin", "ls", "-o", "yaml")).stdout)
    assert as_json == as_yaml
    [entry] = as_json
    assert entry["Name"] == "files"
    assert entry["State"] == "running"
    assert entry["Implements"] == ["Instance/0.5.0"]
    assert entry["Pid"] == int((plugins_dir / "files.pid").read_text())


def test_plugin_ls_with_nothing_running(cli: Cli) -> None:
    headers, rows = table(ok(cli("plugin", "ls")).stdout)
    assert headers == ["INTERFACE", "LISTEN", "NAME"]
    assert rows == []


def test_plugin_stop_stops_cleanly_and_removes_sockets(cli: Cli, plugins_dir: Path) -> None:
    ok(cli("plugin", "start", "instance-file", "flavor-vanilla"))
    pids = [int((plugins_dir / f"{n}.pid").read_text()) for n in ("instance-file",
                                                                   "flavor-vanilla")]
    out = ok(cli("plugin", "stop", "instance-file", "flavor-vanilla")).stdout
    assert f"stopped instance-file (pid {pids[0]})" in out
    assert f"stopped flavor-vanilla (pid {pids[1]})" in out
    assert sorted(p.name for p in plugins_dir.iterdir()) == []
    for pid in pids:
        def gone(pid: int = pid) -> bool:
            return not pid_alive(pid)

        wait_until(gone, 5.0, what=f"pid {pid} to exit")
    assert table(ok(cli("plugin", "ls")).stdout)[1] == []
    # the logs say they stopped, rather than being killed
    home = plugins_dir.parent
    for name in ("instance-file", "flavor-vanilla"):
        assert "stopped" in (home / "logs" / f"{name}.log").read_text()


def test_plugin_stop_unknown_name_is_error(cli: Cli) -> None:
    ok(cli("plugin", "start", "flavor-vanilla"))
    line = one_line_error(cli("plugin", "stop", "ghost"))
    assert "'ghost'" in line
    assert "flavor-vanilla" in line  # what is running instead


def test_plugin_stop_of_killed_plugin_removes_stale_files(cli: Cli, plugins_dir: Path) -> None:
    ok(cli("plugin", "start", "--no-supervise", "instance-file"))  # or it comes back
    pid = int((plugins_dir / "instance-file.pid").read_text())
    os.kill(pid, 9)
    wait_until(lambda: not pid_alive(pid), 5.0, what="the plugin to die")
    assert (plugins_dir / "instance-file").exists()
    out = ok(cli("plugin", "stop", "instance-file")).stdout
    assert "stale" in out
    assert not (plugins_dir / "instance-file").exists()
    assert not (plugins_dir / "instance-file.pid").exists()


def test_plugin_start_unknown_kind_is_error(cli: Cli) -> None:
    done = cli("plugin", "start", "instance-nope")
    assert done.returncode != 0
    assert "instance-nope" in done.stderr
    assert "instance-file" in done.stderr  # lists the known kinds
    assert "Traceback" not in done.stderr


def test_plugin_start_with_custom_name_and_log_level(cli: Cli, plugins_dir: Path) -> None:
    ok(cli("--log", "5", "plugin", "start", "instance-file:custom"))
    sock = plugins_dir / "custom"
    assert answers_handshake(sock)
    # the daemon logs at the level it was started with: debug shows request bodies
    log = plugins_dir.parent / "logs" / "custom.log"
    wait_until(lambda: "Handshake.Implements" in log.read_text(), 5.0,
               what="the request to be logged")


# -- instance -------------------------------------------------------------------------------


def test_provision_from_json_yaml_and_stdin(inst: Cli, home: Path) -> None:
    (home / "a.json").write_text(json.dumps(
        {"Properties": {"size": "s"}, "Tags": {"src": "json"}, "Init": "echo json"}))
    (home / "b.yaml").write_text(
        "Properties:\n  size: m\nTags:\n  src: yaml\nLogicalID: db-1\n"
        "Attachments:\n  - ID: vol-1\n    Type: ebs\n")
    from_json = ok(inst("provision", str(home / "a.json"))).stdout.strip()
    from_yaml = ok(inst("provision", str(home / "b.yaml"))).stdout.strip()
    from_stdin = ok(inst("provision", "-", input="Tags: {src: stdin}\n")).stdout.strip()
    ids = [from_json, from_yaml, from_stdin]
    assert len(set(ids)) == 3
    described = {d["ID"]: d for d in _describe(inst, "--properties")}
    assert described[from_json]["Tags"] == {"src": "json"}
    # the file plugin describes the whole spec an instance was made with
    assert described[from_json]["Properties"]["Properties"] == {"size": "s"}
    assert described[from_json]["Properties"]["Init"] == "echo json"
    assert described[from_yaml]["Tags"] == {"src": "yaml"}
    assert described[from_yaml]["LogicalID"] == "db-1"
    assert described[from_yaml]["Properties"]["Properties"] == {"size": "m"}
    assert described[from_stdin]["Tags"] == {"src": "stdin"}
    assert described[from_stdin]["LogicalID"] is None


@pytest.fixture
def three(inst: Cli, instance_file: Path) -> list[str]:
    """Three instances, provisioned over RPC (the CLI's provision has its own test)."""
    specs = [Spec(tags={"tier": "web", "env": "prod"}, properties={"n": 1}),
             Spec(tags={"tier": "web", "env": "dev"}, properties={"n": 2}, logical_id="w2"),
             Spec(tags={"tier": "db", "env": "prod"})]
    with RPCClient(instance_file) as rpc:
        return [InstanceClient(rpc).provision(s) for s in specs]


def test_describe_table(inst: Cli, three: list[str]) -> None:
    headers, rows = table(ok(inst("describe")).stdout)
    assert headers == ["ID", "LOGICAL", "TAGS"]
    assert rows == [[three[0], "-", "env=prod,tier=web"], [three[1], "w2", "env=dev,tier=web"],
                    [three[2], "-", "env=prod,tier=db"]]


def test_describe_tags_must_all_match(inst: Cli, three: list[str]) -> None:
    assert ok(inst("describe", "-q", "--tags", "tier=web")).stdout.split() == three[:2]
    assert ok(inst("describe", "-q", "--tags", "tier=web", "--tags", "env=prod")
              ).stdout.split() == [three[0]]
    assert ok(inst("describe", "-q", "--tags", "tier=none")).stdout.split() == []


def test_describe_properties_column(inst: Cli, three: list[str]) -> None:
    headers, rows = table(ok(inst("describe", "--properties", "--tags", "env=prod")).stdout)
    assert headers == ["ID", "LOGICAL", "TAGS", "PROPERTIES"]
    assert [(r[0], json.loads(r[3])["Properties"]) for r in rows] == [
        (three[0], {"n": 1}), (three[2], None)]


def test_describe_quiet_prints_only_ids(inst: Cli, three: list[str]) -> None:
    assert ok(inst("describe", "-q")).stdout.splitlines() == three


def test_describe_json_and_yaml_agree(inst: Cli, three: list[str]) -> None:
    as_json = json.loads(ok(inst("describe", "-o", "json")).stdout)
    as_yaml = yaml.safe_load(ok(inst("describe", "-o", "yaml")).stdout)
    assert as_json == as_yaml
    assert [d["ID"] for d in as_json] == three
    assert all("Properties" not in d for d in as_json)
    with_props = json.loads(ok(inst("describe", "-o", "json", "--properties")).stdout)
    assert [d["Properties"]["Properties"] for d in with_props] == [{"n": 1}, {"n": 2}, None]


def test_label(inst: Cli, three: list[str]) -> None:
    out = ok(inst("label", three[2], "owner=me", "env=staging")).stdout
    assert three[2] in out
    tags = {d["ID"]: d["Tags"] for d in _describe(inst)}
    assert tags[three[2]] == {"tier": "db", "env": "staging", "owner": "me"}
    assert tags[three[0]] == {"tier": "web", "env": "prod"}


def test_label_bad_pair_is_usage_error(inst: Cli, three: list[str]) -> None:
    done = inst("label", three[0], "novalue")
    assert done.returncode != 0
    assert "novalue" in done.stderr
    assert "Traceback" not in done.stderr


def test_destroy_several(inst: Cli, three: list[str]) -> None:
    out = ok(inst("destroy", three[0], three[2])).stdout
    assert out.splitlines() == [f"destroyed {three[0]}", f"destroyed {three[2]}"]
    assert ok(inst("describe", "-q")).stdout.split() == [three[1]]


def test_destroy_goes_on_past_a_failure(inst: Cli, three: list[str]) -> None:
    done = inst("destroy", three[0], "instance-999", three[1])
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"destroyed {three[0]}", f"destroyed {three[1]}"]
    assert "instance-999" in done.stderr
    assert "Traceback" not in done.stderr
    assert ok(inst("describe", "-q")).stdout.split() == [three[2]]


def test_instance_validate(inst: Cli) -> None:
    assert ok(inst("validate", "-", input='{"any": "thing"}')).stdout.strip() == "valid"


# -- flavor ---------------------------------------------------------------------------------


@pytest.fixture
def flavor_files(home: Path) -> dict[str, str]:
    files = {
        "props": {"Init": ["echo a", "echo b"], "Tags": {"project": "x"},
                  "Attachments": {"db-1": [{"ID": "vol-1", "Type": "ebs"}]}},
        "spec": {"Init": "echo spec", "Tags": {"t": "1"}, "LogicalID": "db-1"},
        "bad": {"Init": 3},
        "unknown": {"Bogus": 1},
    }
    out = {}
    for name, data in files.items():
        path = home / f"{name}.json"
        path.write_text(json.dumps(data))
        out[name] = str(path)
    return out


def test_flavor_validate(flav: Cli, flavor_files: dict[str, str]) -> None:
    assert ok(flav("validate", flavor_files["props"])).stdout.strip() == "valid"
    assert ok(flav("validate", flavor_files["props"], "--logical-ids", "db-1,db-2")).stdout


@pytest.mark.parametrize(("which", "named"), [("bad", "Properties.Init"), ("unknown", "Bogus")])
def test_flavor_validate_rejects_bad_properties(flav: Cli, flavor_files: dict[str, str],
                                                which: str, named: str) -> None:
    line = one_line_error(flav("validate", flavor_files[which]))
    assert named in line
    assert line.startswith("Error: Flavor plugin 'flavor-vanilla': Properties")


def test_flavor_prepare(flav: Cli, flavor_files: dict[str, str]) -> None:
    out = json.loads(ok(flav("prepare", flavor_files["props"], flavor_files["spec"],
                             "--logical-ids", "db-1")).stdout)
    assert out == {"Properties": None, "Tags": {"t": "1", "project": "x"},
                   "Init": "echo spec\necho a\necho b", "LogicalID": "db-1",
                   "Attachments": [{"ID": "vol-1", "Type": "ebs"}]}
    as_yaml = yaml.safe_load(ok(flav("prepare", "-o", "yaml", flavor_files["props"],
                                     flavor_files["spec"], "--logical-ids", "db-1")).stdout)
    assert as_yaml == out


def test_flavor_prepare_size_and_logical_ids_are_exclusive(flav: Cli,
                                                           flavor_files: dict[str, str]) -> None:
    done = flav("prepare", flavor_files["props"], flavor_files["spec"], "--size", "2",
                "--logical-ids", "a")
    assert done.returncode != 0
    assert "--size" in done.stderr and "--logical-ids" in done.stderr


def test_flavor_healthy(flav: Cli, flavor_files: dict[str, str]) -> None:
    headers, rows = table(ok(flav("healthy", flavor_files["props"], "--id", "instance-1",
                                  "--tags", "a=b")).stdout)
    assert headers == ["ID", "HEALTH", "TAGS"]
    assert rows == [["instance-1", "healthy", "a=b"]]
    out = json.loads(ok(flav("healthy", flavor_files["props"], "--id", "instance-1",
                             "-o", "json")).stdout)
    assert out == {"ID": "instance-1", "Health": 1, "State": "healthy"}


def test_flavor_drain(flav: Cli, flavor_files: dict[str, str]) -> None:
    assert ok(flav("drain", flavor_files["props"], "--id", "instance-7")).stdout.strip() == \
        "drained instance-7"


# -- errors a user sees ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    '{"Tags": [1,\n  - x: : y\n',      # neither JSON nor YAML
    "just some words\n",               # YAML, but a bare string, not a document
    "",                                # empty
], ids=["garbage", "scalar", "empty"])
def test_spec_file_neither_json_nor_yaml_is_one_line_error(inst: Cli, home: Path,
                                                           content: str) -> None:
    path = home / "junk.txt"
    path.write_text(content)
    line = one_line_error(inst("provision", str(path)))
    assert "junk.txt" in line
    assert ok(inst("describe", "-q")).stdout == ""


def test_spec_file_with_wrong_field_type_is_one_line_error(inst: Cli) -> None:
    line = one_line_error(inst("provision", "-", input='{"Tags": {"a": 1}}'))
    assert "Tags" in line


def test_missing_spec_file_is_one_line_error(inst: Cli, home: Path) -> None:
    line = one_line_error(inst("provision", str(home / "absent.json")))
    assert "absent.json" in line


def test_plugin_not_running_lists_running_names(cli: Cli, start_plugin: StartPlugin) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    line = one_line_error(cli("instance", "--name", "nope", "describe"))
    assert "'nope'" in line
    assert "instance-file" in line and "flavor-vanilla" in line


def test_unknown_type_of_running_plugin_is_error(inst: Cli, cli: Cli) -> None:
    line = one_line_error(cli("instance", "--name", "instance-file/ec2", "describe"))
    assert "'ec2'" in line


def test_plugin_answer_error_without_debug_has_no_traceback(
    flav: Cli, flavor_files: dict[str, str]
) -> None:
    line = one_line_error(flav("validate", flavor_files["bad"]))
    assert line.startswith("Error: ")


def test_debug_shows_traceback(cli: Cli, flavor_vanilla: Path,
                               flavor_files: dict[str, str]) -> None:
    done = cli("--debug", "flavor", "--name", "flavor-vanilla", "validate", flavor_files["bad"])
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "CallFailed" in done.stderr
    assert "Properties.Init" in done.stderr


def test_log_5_logs_request_and_response_bodies(inst: Cli, cli: Cli, three: list[str]) -> None:
    done = ok(cli("--log", "5", "instance", "--name", "instance-file", "describe", "-q"))
    assert done.stdout.split() == three
    assert '"method":"Instance.DescribeInstances"' in done.stderr
    assert '"result":' in done.stderr
    assert three[0] in done.stderr  # the response body, not just a summary


def test_default_log_level_does_not_log_bodies(inst: Cli, three: list[str]) -> None:
    done = ok(inst("describe", "-q"))
    assert "Instance.DescribeInstances" not in done.stderr


FAILING_GROUP = '''
import sys
from pathlib import Path
from infrakit.rpc.server import serve
from infrakit.spi.group import GroupStatus

WHY = "Instance plugin 'instance-file': no capacity left"


class Groups:
    def commit_group(self, spec, pretend):
        return "Managing 2 instances"

    def describe_status(self, id):
        return GroupStatus(id=id, target=2, converged=False, members=[], in_flight=[],
                           outdated=0, update_paused=False, unhealthy=0, max_unhealthy=1,
                           breaker_open=False, errors=[WHY + " (2 times)"], failures=3,
                           backoff=f"next launch in 4s after 3 failures in a row (last: "
                                   f"launch failed: {WHY})")


serve("failing", group=Groups(), directory=Path(sys.argv[1]))
'''


def test_commit_wait_names_a_failure_once(cli: Cli, start_script: StartScript,
                                          home: Path) -> None:
    """The backoff says what failed last; the same error after it said it twice."""
    start_script(FAILING_GROUP, "failing")
    (home / "g.json").write_text(json.dumps({"ID": "web", "Properties": {}}))
    line = one_line_error(cli("group", "--name", "failing", "commit", "g.json", "--wait",
                              "--wait-timeout", "0.5"), status=3)
    assert line.count("Instance plugin 'instance-file'") == 1, line
    assert line.endswith("0/2 ready, 0 in flight, backoff: next launch in 4s after 3 failures "
                         "in a row (last: launch failed: Instance plugin 'instance-file': no "
                         "capacity left)")
