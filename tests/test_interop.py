"""Our group plugin driving instance and flavor plugins written without our runtime: a
bare HTTP server on a UNIX socket answering only what the reference's wire samples show
(no pid file, no extras), as a plugin of the original InfraKit would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupDescription, GroupSpec
from infrakit.spi.calls import GroupAPI
from tests.conftest import StartPlugin, StartScript
from tests.helpers import wait_until

BARE = r'''
import http.server, itertools, json, os, socketserver, sys

DIR = sys.argv[1]
instances = {}
ids = itertools.count(7291462007060546743)


def instance(method, p):
    t = p.get("Type", "")
    if method == "Instance.Validate":
        return {"Type": t, "OK": True}
    if method == "Instance.Provision":
        spec = p["Spec"]
        iid = f"instance-{next(ids)}"
        instances[iid] = {"ID": iid, "LogicalID": spec.get("LogicalID"),
                          "Tags": spec.get("Tags") or {}}
        return {"Type": t, "ID": iid}
    if method == "Instance.Destroy":
        if instances.pop(p["Instance"], None) is None:
            raise KeyError(f"no such instance {p['Instance']}")
        return {"Type": t, "OK": True}
    if method == "Instance.Label":
        instances[p["Instance"]]["Tags"].update(p["Labels"])
        return {"Type": t, "OK": True}
    if method == "Instance.DescribeInstances":
        want = (p.get("Tags") or {}).items()
        return {"Type": t, "Descriptions": [d for d in instances.values()
                                            if want <= d["Tags"].items()]}
    raise UnknownMethod(f'rpc: can\'t find method "{method}"')


def flavor(method, p):
    t = p.get("Type", "")
    if method in ("Flavor.Validate", "Flavor.Drain"):
        return {"Type": t, "OK": True}
    if method == "Flavor.Prepare":
        spec = p["Spec"]
        props = p.get("Properties") or {}
        spec["Tags"] = {**(spec.get("Tags") or {}), **props.get("Tags", {})}
        spec["Init"] = "\n".join(props.get("Init", []))
        return {"Type": t, "Spec": spec}
    if method == "Flavor.Healthy":
        return {"Type": t, "Health": 1}
    raise UnknownMethod(f'rpc: can\'t find method "{method}"')


class UnknownMethod(Exception):
    """What the reference's RPC server (gorilla/rpc json2) answers for a method it lacks."""


KIND = sys.argv[2]
API = {"instance": ("Instance", "0.5.0", instance), "flavor": ("Flavor", "0.1.0", flavor)}
NAME, VERSION, HANDLE = API[KIND]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            if req["method"] == "Handshake.Implements":
                result = {"APIs": [{"Name": NAME, "Version": VERSION}]}
            elif req["method"] == "Handshake.Types":
                result = {"Types": {f"{NAME}/{VERSION}": ["."]}}
            else:
                result = HANDLE(req["method"], req["params"])
            body = {"jsonrpc": "2.0", "result": result, "id": req["id"]}
        except Exception as exc:
            body = {"jsonrpc": "2.0", "error": {"code": -32000, "message": str(exc),
                                                "data": None}, "id": req["id"]}
        out = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


name = "bare-instance" if KIND == "instance" else "bare-flavor"
path = os.path.join(DIR, name)
os.makedirs(DIR, mode=0o700, exist_ok=True)
Server(path, Handler).serve_forever()
'''


@pytest.fixture
def bare(home: Path, start_script: StartScript) -> None:
    script = home / "bare.py"
    script.write_text(BARE)
    wrapper = "import runpy, sys\nsys.argv.append({kind!r})\nrunpy.run_path({path!r})\n"
    start_script(wrapper.format(kind="instance", path=str(script)), "bare-instance")
    start_script(wrapper.format(kind="flavor", path=str(script)), "bare-flavor")


def _converged(client: GroupAPI, what: str) -> GroupDescription:
    def done() -> GroupDescription | None:
        desc = client.describe_group("g")
        return desc if desc.converged else None

    found = wait_until(done, 20, what=what)
    assert found is not None
    return found


def test_our_group_drives_plugins_that_speak_only_the_samples_shapes(
        bare: None, monkeypatch: pytest.MonkeyPatch, start_plugin: StartPlugin) -> None:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    group = start_plugin("group").path
    props: dict[str, Any] = {"Allocation": {"Size": 3},
             "Instance": {"Plugin": "bare-instance", "Properties": {"Note": "v1"}},
             "Flavor": {"Plugin": "bare-flavor",
                        "Properties": {"Init": ["echo hello"], "Tags": {"tier": "web"}}}}
    with RPCClient(group) as conn:
        client = GroupClient(conn)
        assert client.commit_group(GroupSpec(id="g", properties=props), False) == \
            "Managing 3 instances"
        desc = _converged(client, "the group to converge on the bare plugins")
        assert len(desc.instances or []) == 3
        assert all((m.tags or {}).get("tier") == "web" for m in desc.instances or [])
        # a rolling update and a scale-in work through the bare plugins too
        props["Instance"]["Properties"] = {"Note": "v2"}
        props["Allocation"] = {"Size": 2}
        client.commit_group(GroupSpec(id="g", properties=props), False)
        final = _converged(client, "the update to finish")
        assert len(final.instances or []) == 2
        assert not {m.id for m in final.instances or []} & {m.id for m in desc.instances or []}
        client.destroy_group("g")
