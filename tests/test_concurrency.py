"""Many CLI clients at once against one group plugin: 50 processes commit and describe the
same group and groups of their own. Nothing deadlocks, no commit is lost, and the spec the
controller runs is the one stored last (so a restart changes nothing)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from infrakit.plugins.group.confighash import config_hash
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from tests.conftest import Cli, StartPlugin
from tests.helpers import PY, wait_until

CLIENTS = 50


def spec(gid: str, size: int, note: str) -> dict[str, Any]:
    return {"ID": gid, "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {"Note": note}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}


def sha(document: dict[str, Any]) -> str:
    props = document["Properties"]
    return config_hash(props["Instance"], props["Flavor"])


def test_50_clients_commit_and_describe_at_once(start_plugin: StartPlugin, home: Path,
                                               cli: Cli, monkeypatch: Any) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    instance = start_plugin("instance-file").path
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    specs = {}
    for n in range(CLIENTS):  # half commit the shared group, half a group of their own
        document = spec("shared", 1 + n % 3, f"client {n}") if n % 2 else \
            spec(f"own-{n}", 1, f"client {n}")
        specs[n] = document
        (home / f"spec-{n}.json").write_text(json.dumps(document))
    clients = [subprocess.Popen(
        ["sh", "-c", f'"$0" -m infrakit group commit spec-{n}.json && '
                     f'"$0" -m infrakit group describe {specs[n]["ID"]} -o json', PY],
        cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(CLIENTS)]
    deadline = time.monotonic() + 100
    for n, client in enumerate(clients):  # nothing deadlocks: every client is answered
        out, err = client.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert client.returncode == 0, f"client {n}: {err}"
        assert json.loads(out[out.index("{"):]) is not None

    def stored() -> dict[str, GroupSpec]:
        with RPCClient(group.path) as conn:
            return {g.id: g for g in GroupClient(conn).inspect_groups()}

    groups = stored()
    own = {d["ID"]: d for d in specs.values() if d["ID"] != "shared"}
    assert set(groups) == {"shared", *own}  # no commit lost
    for gid, document in own.items():
        assert groups[gid].properties == document["Properties"]
    shared = next(d for d in specs.values() if d["ID"] == "shared" and
                  d["Properties"] == groups["shared"].properties)

    def running(gid: str, document: dict[str, Any]) -> bool:
        """The group converged to ``document``: its size and its config."""
        with RPCClient(group.path) as conn:
            if not GroupClient(conn).describe_group(gid).converged:
                return False
        with RPCClient(instance) as conn:
            members = InstanceClient(conn).describe_instances({"infrakit.group": gid}, False)
        return len(members) == document["Properties"]["Allocation"]["Size"] and all(
            (m.tags or {}).get("infrakit.config_sha") == sha(document) for m in members)

    # the controller runs what was stored last, not what some other commit said
    wait_until(lambda: running("shared", shared), 30, what="the shared group to converge")
    wait_until(lambda: all(running(g, d) for g, d in own.items()), 30,
               what="every own group to converge")
    group.proc.send_signal(signal.SIGTERM)
    assert group.proc.wait(15) == 0
    group = start_plugin("group")
    assert stored() == groups  # a restart runs the same specs
    wait_until(lambda: running("shared", shared), 30, what="the same group after a restart")
    last = spec("shared", 2, "the last word")  # and, one after another, the last one wins
    (home / "last.json").write_text(json.dumps(last))
    assert cli("group", "commit", "last.json").returncode == 0
    assert stored()["shared"].properties == last["Properties"]
    wait_until(lambda: running("shared", last), 30, what="the last commit to win")
