"""A built-in plugin process loads only what it serves.

Each plugin runs as ``python -m infrakit plugin run KIND`` does, through :mod:`runpy`, with
one addition: at exit it writes the names of the modules it holds to a file. The test reads
them after the plugin has answered a few calls and stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import FlavorClient, InstanceClient
from infrakit.spi import Allocation, Description, Health, Spec
from tests.conftest import Plugin, Processes
from tests.helpers import PY, stop_process

#: What neither plugin serves with: the CLI, the async client, TLS, SDKs, templates.
NEVER = ("click", "aiohttp", "ssl", "_ssl", "_hashlib", "uvloop", "email", "http.client",
         "urllib.request", "yaml", "jinja2", "boto3", "botocore", "docker", "libcloud",
         "tempfile", "sqlite3", "infrakit.cli", "infrakit.rpc.client", "infrakit.rpc.tcp",
         "infrakit.store", "infrakit.manager", "infrakit.spi.group")

#: The registry of built-in kinds, which the process reads to build its plugin.
REGISTRY = {"infrakit.cli", "infrakit.cli.kinds"}

_RUN_AND_REPORT = """
import atexit, runpy, sys
report = sys.argv.pop(1)
atexit.register(lambda: open(report, "w").write("\\n".join(sys.modules)))
runpy.run_module("infrakit", run_name="__main__", alter_sys=True)
"""

Started = tuple[Plugin, Path]
StartReporting = Callable[[str], Started]


@pytest.fixture
def start_reporting(procs: Processes, plugins_dir: Path) -> StartReporting:
    """Start a built-in plugin that reports its modules at exit; the plugin and the report."""

    def start(kind: str) -> Started:
        report = procs.home / f"{kind}.modules"
        log = procs.home / "test-logs" / f"{kind}.log"
        proc = procs.spawn([PY, "-c", _RUN_AND_REPORT, str(report), "plugin", "run", kind], log)
        return procs.wait_ready(kind, plugins_dir / kind, proc, log), report

    return start


def _imported(started: Started) -> set[str]:
    """Every module the plugin held when it stopped."""
    plugin, report = started
    assert stop_process(plugin.proc) == 0, plugin.output()
    names = set(report.read_text().split())
    assert {"msgspec", "infrakit.rpc.server"} <= names, names
    return names


def _loaded(names: set[str], unwanted: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names - REGISTRY
                  if any(n == u or n.startswith(u + ".") for u in unwanted))


def test_instance_file_loads_only_what_it_serves(start_reporting: StartReporting) -> None:
    started = start_reporting("instance-file")
    with RPCClient(started[0].path) as conn:
        client = InstanceClient(conn)
        ids = [client.provision(Spec(tags={"n": str(i)})) for i in range(3)]
        assert len(client.describe_instances({}, False)) == len(ids)
    assert _loaded(_imported(started), (*NEVER, "infrakit.spi.flavor")) == []


def test_flavor_vanilla_loads_only_what_it_serves(start_reporting: StartReporting) -> None:
    started = start_reporting("flavor-vanilla")
    with RPCClient(started[0].path) as conn:
        flavor = FlavorClient(conn)
        flavor.validate({"Init": "echo hi"}, Allocation(size=1))
        assert flavor.healthy({}, Description(id="i-1")) is Health.HEALTHY
        assert flavor.healthy({"Health": {"Command": "true"}},
                              Description(id="i-1")) is Health.HEALTHY
    assert _loaded(_imported(started), (*NEVER, "infrakit.plugins.instance")) == []


def test_an_http_probe_loads_its_client_when_it_runs(start_reporting: StartReporting) -> None:
    """The other side of the above: what an HTTP probe needs comes when one runs (the
    standard library's client, not aiohttp), and the report shows it."""
    started = start_reporting("flavor-vanilla")
    with RPCClient(started[0].path) as conn:
        health = FlavorClient(conn).healthy({"Health": {"HTTP": "http://127.0.0.1:1/"}},
                                            Description(id="i-1"))
        assert health is Health.UNHEALTHY
    loaded = _loaded(_imported(started), NEVER)
    assert "urllib.request" in loaded and "aiohttp" not in loaded
