"""The CLI's hot path loads only what it uses: its start-up is mostly imports.

``plugin ls``, ``instance describe`` and ``group describe ID`` run as ``python -m
infrakit`` does, through :mod:`runpy`, with one addition: at exit the process writes the
names of the modules it holds to a file. No timing here (this machine's speed varies);
bench/cli_coldstart.py times them. What a module costs is in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, StartPlugin
from tests.helpers import PY
from tests.test_cli import ok

#: Never on the path of a read command: SDKs, servers, event loops, TLS, the e-mail package
#: that http.client pulls in, YAML and logging (both loaded only when asked for), templates,
#: and the layers a CLI call never runs itself.
NEVER = ("boto3", "botocore", "libcloud", "docker", "etcd3gw", "tenacity", "asyncio",
         "uvloop", "aiohttp", "httptools", "ssl", "_ssl", "email", "http.client", "yaml",
         "logging", "subprocess", "sqlite3", "jinja2", "prometheus_client", "infrakit.plugins",
         "infrakit.store", "infrakit.manager", "infrakit.rpc.server", "infrakit.rpc.http",
         "infrakit.rpc.tcp", "infrakit.rpc.lookup")

_RUN_AND_REPORT = """
import atexit, runpy, sys
report = sys.argv.pop(1)
atexit.register(lambda: open(report, "w").write("\\n".join(sys.modules)))
runpy.run_module("infrakit", run_name="__main__", alter_sys=True)
"""

GROUP = {"ID": "web", "Properties": {
    "Allocation": {"Size": 1},
    "Instance": {"Plugin": "instance-file", "Properties": {}},
    "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}


@pytest.fixture
def running(cli: Cli, start_plugin: StartPlugin, home: Path) -> None:
    """The plugins a user has running, and a group committed."""
    for kind in ("instance-file", "flavor-vanilla", "group"):
        start_plugin(kind)
    (home / "web.json").write_text(json.dumps(GROUP))
    ok(cli("group", "commit", "web.json"))


def modules_of(home: Path, *args: str) -> set[str]:
    """The modules ``infrakit ARGS`` held when it exited (it must succeed)."""
    report = home / "modules.txt"
    done = subprocess.run([PY, "-c", _RUN_AND_REPORT, str(report), *args], cwd=home,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    names = set(report.read_text().split())
    assert "click" in names and "infrakit.cli.main" in names, names
    return names


def _loaded(names: set[str], unwanted: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == u or n.startswith(u + ".") for u in unwanted))


@pytest.mark.parametrize("args", [
    ("plugin", "ls"),
    ("instance", "--name", "instance-file", "describe"),
    ("group", "describe", "web"),
    ("group", "ls"),
])
def test_a_read_command_loads_nothing_heavy(running: None, home: Path,
                                            args: tuple[str, ...]) -> None:
    assert _loaded(modules_of(home, *args), NEVER) == []


def test_plugin_ls_loads_no_interface_of_a_plugin(running: None, home: Path) -> None:
    """It only shakes hands: the verbs' tables and typed clients stay unloaded."""
    names = modules_of(home, "plugin", "ls")
    assert _loaded(names, ("infrakit.spi.group", "infrakit.spi.instance", "infrakit.spi.flavor",
                           "infrakit.rpc.typed", "infrakit.cli.connect", "json")) == []
