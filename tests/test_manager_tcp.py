"""A manager's TCP listener: TLS and a bearer token, or nothing at all is said; and
followers on another machine (here: another UTS namespace, so another host name) forward
to the leader through it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from infrakit.spi.errors import CallFailed
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, answers_handshake, require_engine, wait_until

TOKEN = "s3cret-token-of-the-managers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    return self_signed(tmp_path)


def self_signed(directory: Path) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1, its key, and a token file of mode 600."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key, token = directory / "cert.pem", directory / "key.pem", directory / "token"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return {"cert": cert, "key": key, "token": token}


def tls_options(tls: dict[str, Path]) -> list[str]:
    return ["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]),
            "--token-file", str(tls["token"])]


def post(port: int, cert: Path, body: bytes, token: str | None,
         path: str = "/", method: str = "POST") -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


INSPECT = json.dumps({"jsonrpc": "2.0", "method": "Group.InspectGroups", "params": {},
                      "id": 1}).encode()


def test_the_listener_answers_only_over_tls_and_only_with_the_token(
        procs: Processes, home: Path, tls: dict[str, Path]) -> None:
    port = free_port()
    procs.spawn([PY, "-m", "infrakit", "manager", "--listen", str(port), *tls_options(tls)],
                home / "test-logs" / "manager.log")
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to serve")
    status, body = post(port, tls["cert"], INSPECT, TOKEN)
    assert status == 200 and json.loads(body) == {"jsonrpc": "2.0", "result": {"Groups": None},
                                                  "id": 1}
    for token in (None, "wrong", TOKEN + "x", ""):
        status, body = post(port, tls["cert"], INSPECT, token)
        assert (status, body) == (401, b"unauthorized\n")  # nothing leaked
        status, body = post(port, tls["cert"], b"", token, "/info/api.json", "GET")
        assert (status, body) == (401, b"unauthorized\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # no TLS: no HTTP
        raw.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " +
                    TOKEN.encode() + b"\r\nContent-Length: " + str(len(INSPECT)).encode() +
                    b"\r\n\r\n" + INSPECT)
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"HTTP/1.1 200" not in answer and b"Groups" not in answer
    with pytest.raises(ConnectionRefusedError):  # bound to 127.0.0.1 alone, by default
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_callers_without_the_token_cannot_fill_the_managers_connection_cap(
        procs: Processes, home: Path, tls: dict[str, Path]) -> None:
    """256 TLS connections without the token (the cap), half of them asking and half
    silent, do not keep a caller with the token (a follower forwarding) from the leader."""
    port = free_port()
    procs.spawn([PY, "-m", "infrakit", "manager", "--listen", str(port), *tls_options(tls)],
                home / "test-logs" / "manager.log")
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to serve")
    context = ssl.create_default_context(cafile=str(tls["cert"]))
    crowd = []
    try:
        for n in range(256):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                crowd.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
            except (ssl.SSLError, OSError):  # made room for a newer one: closed at once
                raw.close()
                continue
            if n % 2:
                with contextlib.suppress(OSError):
                    crowd[-1].sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        for _ in range(3):
            status, body = post(port, tls["cert"], INSPECT, TOKEN)
            assert status == 200, (status, body)
    finally:
        for conn in crowd:
            conn.close()


def test_the_cli_talks_to_a_manager_over_tls(procs: Processes, home: Path, cli: Cli,
                                            start_plugin: StartPlugin,
                                            tls: dict[str, Path], tmp_path: Path) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    port = free_port()
    procs.spawn([PY, "-m", "infrakit", "manager", "--listen", str(port), *tls_options(tls)],
                home / "test-logs" / "manager.log")
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to serve")
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"ID": "web", "Properties": {
        "Allocation": {"Size": 1}, "Instance": {"Plugin": "instance-file"},
        "Flavor": {"Plugin": "flavor-vanilla"}}}))
    remote = ["--url", f"https://127.0.0.1:{port}/", "--token-file", str(tls["token"]),
              "--tls-ca", str(tls["cert"])]
    env = {"INFRAKIT_PLUGINS_DIR": str(tmp_path / "elsewhere")}  # no local socket to use
    done = cli("group", *remote, "commit", str(spec), env=env)
    assert done.returncode == 0 and done.stdout.strip() == "Committed web: Managing 1 instances", \
        done.stderr
    listed = cli("manager", *remote, "inspect", "-o", "json", env=env)
    assert listed.returncode == 0 and "web" in json.loads(listed.stdout)["Groups"]
    wrong = tmp_path / "wrong"
    wrong.write_text("a-token-that-is-not-the-one\n")
    wrong.chmod(0o600)
    refused = cli("group", "--url", f"https://127.0.0.1:{port}/", "--token-file", str(wrong),
                  "--tls-ca", str(tls["cert"]), "ls", env=env)
    assert refused.returncode == 1 and "HTTP 401: unauthorized" in refused.stderr
    assert "Traceback" not in refused.stderr
    plain = cli("group", "--url", f"http://127.0.0.1:{port}/", "--token-file",
                str(tls["token"]), "ls", env=env)
    assert plain.returncode == 1 and "--url: 'http://127.0.0.1" in plain.stderr


def test_bad_listener_settings_are_refused_with_the_option_named(
        cli: Cli, tls: dict[str, Path], tmp_path: Path) -> None:
    port = str(free_port())
    missing = cli("manager", "--listen", port, "--tls-cert", str(tls["cert"]))
    assert missing.returncode == 1 and "--tls-key: required with --listen" in missing.stderr
    assert "Traceback" not in missing.stderr
    tls["token"].chmod(0o644)
    loose = cli("manager", "--listen", port, *tls_options(tls))
    assert loose.returncode == 1 and "--token-file" in loose.stderr and "chmod 600" in \
        loose.stderr
    tls["token"].chmod(0o600)
    wrong = cli("manager", "--listen", port, *tls_options(tls)[:1], str(tmp_path / "nope"),
                *tls_options(tls)[2:])
    assert wrong.returncode == 1 and "--tls-cert/--tls-key: cannot load" in wrong.stderr
    port_text = cli("manager", "--listen", "127.0.0.1:http", *tls_options(tls))
    assert port_text.returncode == 1 and "--listen: '127.0.0.1:http' is not" in \
        port_text.stderr


def uts_problem() -> str | None:
    if os.geteuid() != 0:
        return "a follower on another host name needs root for a UTS namespace"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None


def test_a_follower_on_another_machine_forwards_over_tls(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path, etcd_url: str,
        tls: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    require_engine(uts_problem())
    monkeypatch.setenv("INFRAKIT_ETCD_PREFIX", f"/tcp{time.monotonic_ns()}/")
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    plugins = home / "plugins"
    opts = ["--store", "etcd", "--etcd-endpoints", etcd_url, "--lease-ttl", "2"]
    leader_port = free_port()
    leader = procs.spawn([PY, "-m", "infrakit", "manager", "--name", "group-a", *opts,
                          "--listen", f"127.0.0.1:{leader_port}", *tls_options(tls)],
                         home / "test-logs" / "group-a.log")
    wait_until(lambda: (json.loads(cli("manager", *opts, "status", "-o", "json").stdout)
                        or {}).get("PID") == leader.pid, 15, what="a to lead")

    def elsewhere(name: str, *extra: str) -> None:
        """A manager on a machine named ``far``: it cannot use a's UNIX socket."""
        args = " ".join([PY, "-m", "infrakit", "manager", "--name", name, *opts, *extra])
        procs.spawn(["unshare", "--uts", "sh", "-c", f"hostname far && exec {args}"],
                    home / "test-logs" / f"{name}.log")
        wait_until(lambda: answers_handshake(plugins / name), 15, what=f"{name} to serve")

    elsewhere("group-b", "--listen", f"127.0.0.1:{free_port()}", *tls_options(tls))
    spec = GroupSpec(id="web", properties={
        "Allocation": {"Size": 2},
        "Instance": {"Plugin": "instance-file", "Properties": {}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})
    with RPCClient(plugins / "group-b") as conn:
        follower = GroupClient(conn)
        assert follower.commit_group(spec, False) == "Managing 2 instances"
        wait_until(lambda: follower.describe_group("web").converged, 15,
                   what="the group to converge, described through the follower")
        # the leader records who asked the follower, not the follower's token
        said = [(e.verb, e.actor) for e in follower.events("web", None, None, 0) if e.verb]
        assert said == [("commit", f"local:{pwd.getpwuid(os.geteuid()).pw_name}")]
    elsewhere("group-c")  # no TLS settings: it says how to fix that
    with RPCClient(plugins / "group-c") as conn, pytest.raises(CallFailed) as refused:
        GroupClient(conn).commit_group(spec, False)
    assert f"listens on https://127.0.0.1:{leader_port}/, but this manager has no " \
           "--tls-cert/--tls-ca and --token-file" in str(refused.value)
