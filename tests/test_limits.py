"""What the CLI will read, expand and send is bounded, and a request a plugin refuses for
its size is reported as such, never as a plugin that does not answer.

A YAML document of a few hundred bytes can stand for gigabytes through nested aliases; a
plugin accepts a request body of at most 4 MiB and answers 413 above it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import time
from pathlib import Path

import pytest

from infrakit.cli.specfile import SpecFileError, read_document
from infrakit.rpc.client import AsyncRPCClient, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.typed import AsyncInstanceClient, InstanceClient
from infrakit.spi import Spec
from infrakit.spi.errors import CallFailed
from infrakit.spi.types import MAX_BODY
from tests.conftest import StartPlugin
from tests.helpers import PY

#: What the CLI may take while refusing a bomb: far less than expanding it would.
CLI_MEMORY = 1024 * 1024 * 1024


def bomb(levels: int = 9, width: int = 9) -> str:
    """The classic: each level an anchored list of ``width`` aliases of the one before, so
    ``width ** levels`` strings stand behind the last alias."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join([*lines, "ID: bomb", f"Properties: *l{levels - 1}", ""])


def run_cli(home: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """The CLI with its address space capped, so that a fault expands into an error of its
    own instead of into this machine's memory."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY, CLI_MEMORY))

    return subprocess.run([PY, "-m", "infrakit", *args], capture_output=True, text=True,
                          cwd=home, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=cap)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# -- reading documents -----------------------------------------------------------------------


def test_the_alias_bomb_is_small_and_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(bomb())
    assert path.stat().st_size < 600
    started = time.monotonic()
    with pytest.raises(SpecFileError) as refused:
        read_document(str(path))
    assert time.monotonic() - started < 2.0
    message = refused.value.format_message()
    assert message.startswith(f"{path}: ")
    assert "YAML aliases expand it to more than 16 MiB" in message


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text("ID: loop\nProperties: &p {Again: [1, *p]}\n")
    with pytest.raises(SpecFileError) as refused:
        read_document(str(path))
    assert refused.value.format_message() == (
        f"{path}: a YAML alias refers to a node that contains it")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  "a: " + "[" * 100_000 + "]" * 100_000])
def test_a_document_nested_too_deeply_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.txt"
    path.write_text(text)
    with pytest.raises(SpecFileError) as refused:
        read_document(str(path))
    assert refused.value.format_message() == f"{path}: nested too deeply to read"


def test_anchors_shared_a_few_times_are_read(tmp_path: Path) -> None:
    """Sharing a block between groups is what aliases are for: a few uses of a few
    kilobytes are nothing."""
    path = tmp_path / "config.yml"
    common = {"Init": ["echo " + "x" * 4000], "Tags": {"tier": "web"}}
    groups = "\n".join(f"  g{i}:\n    Flavor: *common" for i in range(50))
    path.write_text(f"common: &common {json.dumps(common)}\nGroups:\n{groups}\n")
    data = read_document(str(path))
    assert all(data["Groups"][f"g{i}"]["Flavor"] == common for i in range(50))


def test_the_cli_refuses_the_bomb_without_growing(start_plugin: StartPlugin,
                                                  home: Path) -> None:
    """It used to expand the bomb to 2.4 GB, send it, and blame the plugin for the broken
    pipe when the plugin refused it."""
    start_plugin("group")
    (home / "bomb.yml").write_text(bomb())
    for args in (["group", "commit", "bomb.yml"], ["manager", "commit", "bomb.yml"],
                 ["instance", "--name", "group", "provision", "bomb.yml"]):
        line = one_line_error(run_cli(home, *args))
        assert line.startswith("Error: bomb.yml: its YAML aliases expand it"), (args, line)


# -- sending ---------------------------------------------------------------------------------


def test_the_clients_limit_is_the_servers() -> None:
    from infrakit.rpc.http import Limits

    assert Limits().body == MAX_BODY


def test_the_cli_does_not_send_a_request_over_the_limit(start_plugin: StartPlugin,
                                                        home: Path) -> None:
    start_plugin("group")
    spec = {"ID": "big", "Properties": {"Note": "x" * (5 * 2**20)}}
    (home / "big.json").write_text(json.dumps(spec))
    line = one_line_error(run_cli(home, "group", "commit", "big.json"))
    assert line == ("Error: Group plugin 'group': the request is 5.0 MiB, more than the "
                    "4 MiB a plugin accepts; not sent")


def test_neither_client_sends_a_request_over_the_limit(instance_file: Path) -> None:
    big = Spec(properties={"Note": "x" * MAX_BODY})
    with RPCClient(instance_file) as rpc, pytest.raises(CallFailed) as refused:
        InstanceClient(rpc).provision(big)
    assert refused.value.reason.endswith("more than the 4 MiB a plugin accepts; not sent")

    async def run() -> None:
        async with AsyncRPCClient(instance_file) as arpc:
            with pytest.raises(CallFailed) as refused:
                await AsyncInstanceClient(arpc).provision(big)
            assert refused.value.reason.endswith("a plugin accepts; not sent")
            assert await AsyncInstanceClient(arpc).describe_instances({}, False) == []

    asyncio.run(run())


@pytest.mark.parametrize("size", [5 * 2**20, 70 * 2**20])
def test_a_413_is_reported_as_a_413(instance_file: Path, size: int) -> None:
    """Past 64 MiB the plugin stops reading and closes: the client's write fails, and the
    answer it had already been sent is what it reports, not a plugin that does not
    answer."""
    body = b'{"jsonrpc": "2.0", "method": "Instance.Validate", "id": 1, "params": "' + \
        b"x" * size + b'"}'
    with RPCClient(instance_file) as rpc, pytest.raises(RPCError) as refused:
        rpc._post(body)  # past the check of the size: as a client without one would send
    assert str(refused.value) == ("the plugin refused the request: it is larger than "
                                  "4 MiB (HTTP 413)")
    with RPCClient(instance_file) as rpc:  # and it still serves
        assert InstanceClient(rpc).describe_instances({}, False) == []
