"""Roles: named tokens, each with a role, guard a manager's TCP listener; the one method
table says which role each method needs; every call a group records names its caller."""

from __future__ import annotations

import hmac
import http.client
import importlib
import json
import os
import pkgutil
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

import infrakit.spi
from infrakit.rpc import tokens as tokens_module
from infrakit.rpc.client import Remote, RPCClient
from infrakit.rpc.tokens import Tokens, hashed
from infrakit.rpc.typed import GroupClient
from infrakit.spi.access import (
    Principal,
    Role,
    acting_as,
    authorize,
    current_actor,
    on_behalf,
)
from infrakit.spi.errors import CallFailed, Forbidden, PluginError
from infrakit.spi.group import GROUP
from infrakit.spi.methods import Interface
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, answers_handshake, wait_until
from tests.test_manager_tcp import free_port, post, self_signed

ALICE = "alice-operator-token-0123456789"
ROOT = "root-admin-token-0123456789abcdef"
MUTATING = ("Commit", "Free", "Destroy", "Provision", "Label", "Pause", "Resume", "Cancel",
            "Drain", "Prepare", "Set", "Update", "Create", "Delete", "Put", "Remove", "Write")
"""Words in a method's name that say it changes something."""


def every_interface() -> list[Interface]:
    """Every interface the spi package defines, found by walking it (a new one is
    checked without being named here)."""
    found: dict[int, Interface] = {}
    for info in pkgutil.iter_modules(infrakit.spi.__path__):
        module = importlib.import_module(f"infrakit.spi.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Interface):
                found[id(value)] = value
    return list(found.values())


def test_no_method_that_changes_something_is_left_to_viewers() -> None:
    interfaces = every_interface()
    assert {str(i.spec.name) for i in interfaces} >= {"Group", "Instance", "Flavor", "Event",
                                                       "Metadata"}
    left = [wire for i in interfaces for wire, m in i.methods.items()
            if any(word in wire.split(".", 1)[1] for word in MUTATING) and m.role is Role.VIEWER]
    assert left == []
    roles = {wire: m.role for wire, m in GROUP.methods.items()}
    assert roles["Group.DestroyGroup"] is roles["Group.FreeGroup"] is Role.ADMIN
    assert {roles[w] for w in ("Group.CommitGroup", "Group.DestroyInstances",
                               "Group.PauseUpdate", "Group.ResumeUpdate",
                               "Group.CancelUpdate")} == {Role.OPERATOR}
    assert {roles[w] for w in ("Group.DescribeGroup", "Group.InspectGroups", "Group.Events",
                               "Group.Usage", "Group.DescribeStatus")} == {Role.VIEWER}


def test_a_refusal_names_the_token_its_role_the_method_and_the_role_it_needs() -> None:
    bob = Principal("bob", Role.VIEWER)
    with pytest.raises(Forbidden) as refused:
        authorize(bob, GROUP.methods["Group.CommitGroup"])
    assert str(refused.value) == ("token 'bob' (viewer) may not call Group.CommitGroup: it "
                                  "needs the operator role")
    authorize(bob, GROUP.methods["Group.DescribeGroup"])
    authorize(Principal("root", Role.ADMIN), GROUP.methods["Group.DestroyGroup"])
    assert current_actor() is None
    with acting_as(bob):
        assert current_actor() == bob
    assert current_actor() is None


def test_only_an_admin_forwarding_a_call_may_name_its_caller() -> None:
    manager = Principal("managers", Role.ADMIN)
    assert on_behalf(manager, "alice") == Principal("alice", Role.ADMIN)
    assert on_behalf(manager, "local:alice") == Principal("local:alice", Role.ADMIN)
    bob = Principal("bob", Role.VIEWER)
    assert on_behalf(bob, "root") is bob
    assert on_behalf(Principal("op", Role.OPERATOR), "root").name == "op"
    for odd in ("", "x" * 129, "a\x1b[31m", " alice"):
        assert on_behalf(manager, odd) is manager


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_tokens_file_is_read_strictly_with_the_field_named(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    good = (f"tokens:\n- {{name: alice, role: operator, token: {hashed(ALICE)}}}\n"
            f"- {{name: root, role: admin, token: {ROOT}}}\n")
    tokens = Tokens.load(write_private(path, good))
    assert tokens.who(ALICE) == Principal("alice", Role.OPERATOR)
    assert tokens.who(ROOT.encode()) == Principal("root", Role.ADMIN)
    assert tokens.who(hashed(ALICE)) is None  # the hash is not the token
    assert tokens.who(ALICE[:-1]) is None and tokens.who("") is None
    assert tokens.bearer(f"Bearer {ALICE}".encode()) == Principal("alice", Role.OPERATOR)
    assert tokens.bearer(ALICE.encode()) is None
    cases = {
        "tokens:\n- {name: a, role: boss, token: " + ROOT + "}\n":
            "tokens[0].role: 'boss' is not a role; the roles are viewer, operator, admin",
        "tokens:\n- {name: a, role: admin, tokne: " + ROOT + "}\n":
            "tokens[0].tokne: unknown field; did you mean token?",
        "tokens:\n- {name: a, role: admin, token: short}\n":
            "tokens[0].token: shorter than 16 characters",
        "tokens:\n- {name: a, role: admin, token: 'sha256:abc'}\n":
            "tokens[0].token: a hashed token is 'sha256:' and 64 lowercase hex digits",
        f"tokens:\n- {{name: a, role: admin, token: {ROOT}}}\n"
        f"- {{name: a, role: viewer, token: {ALICE}}}\n": "tokens[1].name: 'a' is named twice",
        f"tokens:\n- {{name: a, role: admin, token: {ROOT}}}\n"
        f"- {{name: b, role: viewer, token: {hashed(ROOT)}}}\n":
            "tokens[1].token: the same token as 'a''s",
        "tokens:\n- {name: 'a b', role: admin, token: " + ROOT + "}\n":
            "tokens[0].name: 'a b' is not a name",
        "tokens: {name: a}\n": "tokens: expected a list",
    }
    for text, words in cases.items():
        with pytest.raises(PluginError) as bad:
            Tokens.load(write_private(path, text))
        assert f"--token-file: {path}: {words}" in str(bad.value), text
    write_private(path, good, 0o644)
    with pytest.raises(PluginError) as loose:
        Tokens.load(path)
    assert str(loose.value) == (f"--token-file: {path} is open to others (mode 0644); "
                                f"chmod 600 {path}")


def test_one_bare_token_is_admin(tmp_path: Path) -> None:
    tokens = Tokens.load(write_private(tmp_path / "token", ROOT + "\n"))
    assert tokens.principals == [Principal("admin", Role.ADMIN)]
    assert tokens.who(ROOT) == Principal("admin", Role.ADMIN)
    assert Tokens.single(ROOT).who(ROOT) == Principal("admin", Role.ADMIN)


def test_a_bad_file_on_reload_keeps_the_tokens_in_force(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = write_private(tmp_path / "tokens.yaml",
                         f"tokens:\n- {{name: alice, role: operator, token: {ALICE}}}\n")
    tokens = Tokens.load(path)
    write_private(path, "tokens:\n- {name: alice, role: chief, token: " + ALICE + "}\n")
    tokens.reload()
    assert tokens.who(ALICE) == Principal("alice", Role.OPERATOR)
    assert "tokens not reloaded, the previous ones stay in force" in caplog.text
    assert "tokens[0].role: 'chief' is not a role" in caplog.text
    write_private(path, f"tokens:\n- {{name: root, role: admin, token: {ROOT}}}\n")
    tokens.reload()
    assert tokens.who(ALICE) is None and tokens.who(ROOT) == Principal("root", Role.ADMIN)


def test_a_lookup_compares_every_entry_whichever_matches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No early return: the first entry matching, the last, or none, the lookup compares
    the digest of what was shown with every entry's, in full (digests of one length)."""
    names = [f"t{n}" for n in range(5)]
    tokens = Tokens([tokens_module._Known(Principal(n, Role.VIEWER),
                                          tokens_module.digest(f"{n}-token-0123456789"))
                     for n in names])
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for shown, who in (("t0-token-0123456789", "t0"), ("t4-token-0123456789", "t4"),
                       ("t0-token-012345678", None), ("x", None)):
        compared.clear()
        principal = tokens.who(shown)
        assert (principal.name if principal else None) == who
        assert compared == [(32, 32)] * len(names)


# -- through the CLI, against a real manager over TLS ------------------------------------

def _token_file(directory: Path, name: str, token: str) -> Path:
    return write_private(directory / f"{name}.token", token + "\n")


def _mint(cli: Cli, tokens: Path, name: str, role: str, directory: Path) -> Path:
    """``manager token add``: the token it prints, in a file of its holder's."""
    done = cli("manager", "token", "add", name, "--role", role, "--file", str(tokens))
    assert done.returncode == 0, done.stderr
    assert "shown only this once" in done.stderr
    minted = done.stdout.strip()
    assert minted not in tokens.read_text() and hashed(minted) in tokens.read_text()
    return _token_file(directory, name, minted)


def _start_manager(procs: Processes, home: Path, tls: dict[str, Path],
                   token_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    manager = procs.spawn([PY, "-m", "infrakit", "manager", "--listen", str(port),
                           "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]),
                           "--token-file", str(token_file)],
                          home / "test-logs" / "manager.log")
    wait_until(lambda: answers_handshake(home / "plugins" / "group"), 15,
               what="the manager to serve")
    return manager, port


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"ID": "web", "Properties": {
        "Allocation": {"Size": 1}, "Instance": {"Plugin": "instance-file"},
        "Flavor": {"Plugin": "flavor-vanilla"}}}))
    return spec


class As:
    """The CLI run by the holder of one token, against the manager's listener only."""

    def __init__(self, cli: Cli, port: int, cert: Path, token_file: Path, away: Path) -> None:
        self._cli, self._away = cli, away
        self._remote = ["--url", f"https://127.0.0.1:{port}/", "--token-file",
                        str(token_file), "--tls-ca", str(cert)]

    def group(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self._cli("group", *self._remote, *args,
                         env={"INFRAKIT_PLUGINS_DIR": str(self._away)})
        assert "Traceback" not in done.stderr
        return done


def test_roles_govern_the_listener_and_the_events_name_who_did_what(
        procs: Processes, home: Path, cli: Cli, start_plugin: StartPlugin,
        tmp_path: Path) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    tls = self_signed(tmp_path)
    tokens = tmp_path / "tokens.yaml"
    held = {name: _mint(cli, tokens, name, role, tmp_path)
            for name, role in (("alice", "operator"), ("bob", "viewer"), ("root", "admin"))}
    manager, port = _start_manager(procs, home, tls, tokens)
    away = tmp_path / "elsewhere"
    alice, bob, root = (As(cli, port, tls["cert"], held[n], away)
                        for n in ("alice", "bob", "root"))

    assert alice.group("commit", str(_spec(tmp_path))).returncode == 0
    assert bob.group("describe", "web").returncode == 0
    refused = bob.group("set-size", "web", "2")
    assert refused.returncode == 1, refused.stderr
    assert ("token 'bob' (viewer) may not call Group.CommitGroup: it needs the operator "
            "role") in refused.stderr
    assert alice.group("set-size", "web", "2").returncode == 0
    assert bob.group("pause-update", "web").returncode == 1
    assert alice.group("pause-update", "web").returncode == 0
    status, body = post(port, tls["cert"], json.dumps({
        "jsonrpc": "2.0", "method": "Group.ResumeUpdate", "params": {"ID": "web"},
        "id": 7}).encode(), held["bob"].read_text().strip())
    assert status == 200 and json.loads(body)["error"] == {
        "code": -32003, "message": "token 'bob' (viewer) may not call Group.ResumeUpdate: "
                                   "it needs the operator role", "data": None}
    impostor = _call(port, tls["cert"], held["bob"], "Group.ResumeUpdate",
                     {"Infrakit-Actor": "root"})  # only a forwarding admin names another
    assert "token 'bob' (viewer) may not call" in impostor["error"]["message"]
    with RPCClient("", remote=Remote(f"https://127.0.0.1:{port}/", ssl.create_default_context(
            cafile=str(tls["cert"])), held["bob"].read_text().strip())) as rpc, \
            pytest.raises(CallFailed) as failed:
        GroupClient(rpc).resume_update("web")
    assert failed.value.code == -32003  # what the CLI's -o json reports as the Code
    local = cli("group", "resume-update", "web")  # on the UNIX socket: the local user
    assert local.returncode == 0, local.stderr

    history = json.loads(alice.group("events", "web", "-o", "json").stdout)
    said = [(e["Kind"], e["Verb"], e["Actor"]) for e in history if e["Verb"]]
    me = f"local:{_user()}"
    assert said == [("committed", "commit", "alice"), ("committed", "commit", "alice"),
                    ("update paused", "pause-update", "alice"),
                    ("update resumed", "resume-update", me)]
    assert {e["Actor"] for e in history if not e["Verb"]} == {""}  # the controller's own
    table = alice.group("events", "web").stdout
    assert "(commit by alice)" in table and f"(resume-update by {me})" in table

    destroy = alice.group("destroy", "web")
    assert destroy.returncode == 1
    assert "token 'alice' (operator) may not call Group.DestroyGroup: it needs the admin " \
           "role" in destroy.stderr
    assert root.group("destroy", "web").returncode == 0
    assert "destroyed at the request of root" in (home / "test-logs" /
                                                   "manager.log").read_text()
    assert manager.poll() is None


def _call(port: int, cert: Path, token_file: Path, method: str,
          headers: dict[str, str]) -> Any:
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": {"ID": "web"}, "id": 1})
    try:
        conn.request("POST", "/", body=body, headers={
            "Content-Type": "application/json", **headers,
            "Authorization": f"Bearer {token_file.read_text().strip()}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def test_sighup_reloads_the_tokens_without_a_restart(
        procs: Processes, home: Path, cli: Cli, tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    tokens = tmp_path / "tokens.yaml"
    bob = _mint(cli, tokens, "bob", "viewer", tmp_path)
    manager, port = _start_manager(procs, home, tls, tokens)
    away = tmp_path / "elsewhere"
    carol = _mint(cli, tokens, "carol", "operator", tmp_path)
    as_carol, as_bob = (As(cli, port, tls["cert"], f, away) for f in (carol, bob))
    assert as_carol.group("ls").returncode == 1  # not yet loaded
    log = home / "test-logs" / "manager.log"

    def reloaded(times: int) -> bool:
        return log.read_text().count("tokens reloaded from") >= times

    manager.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(1), 10, what="the manager to reload its tokens")
    assert as_carol.group("ls").returncode == 0
    removed = cli("manager", "token", "rm", "bob", "--file", str(tokens))
    assert removed.returncode == 0, removed.stderr
    manager.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(2), 10, what="the manager to reload its tokens")
    gone = as_bob.group("ls")
    assert gone.returncode == 1 and "HTTP 401: unauthorized" in gone.stderr
    tokens.chmod(0o644)  # a bad file: the tokens in force stay
    manager.send_signal(signal.SIGHUP)
    wait_until(lambda: "tokens not reloaded" in log.read_text(), 10,
               what="the manager to refuse the file")
    assert "chmod 600" in log.read_text()
    assert as_carol.group("ls").returncode == 0
    assert manager.poll() is None


def test_one_shared_token_is_still_admin(procs: Processes, home: Path, cli: Cli,
                                         start_plugin: StartPlugin, tmp_path: Path) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    tls = self_signed(tmp_path)  # its token file holds one bare token
    _, port = _start_manager(procs, home, tls, tls["token"])
    admin = As(cli, port, tls["cert"], tls["token"], tmp_path / "elsewhere")
    assert admin.group("commit", str(_spec(tmp_path))).returncode == 0
    history = json.loads(admin.group("events", "web", "-o", "json").stdout)
    assert [e["Actor"] for e in history if e["Verb"]] == ["admin"]
    assert admin.group("destroy", "web").returncode == 0


def test_a_loose_tokens_file_keeps_the_manager_from_starting(
        cli: Cli, tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    tokens = write_private(tmp_path / "tokens.yaml",
                           f"tokens:\n- {{name: alice, role: operator, token: {ALICE}}}\n",
                           0o644)
    done = cli("manager", "--listen", str(free_port()), "--tls-cert", str(tls["cert"]),
               "--tls-key", str(tls["key"]), "--token-file", str(tokens))
    assert done.returncode == 1 and f"chmod 600 {tokens}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_manager_with_named_tokens_calls_its_leader_with_its_peer_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infrakit.manager.run import Settings

    tls = self_signed(tmp_path)
    tokens = write_private(tmp_path / "tokens.yaml",
                           f"tokens:\n- {{name: managers, role: admin, token: {hashed(ROOT)}}}\n")
    monkeypatch.setenv("INFRAKIT_MANAGER_TOKEN_FILE", str(tokens))
    monkeypatch.setenv("INFRAKIT_TLS_CERT", str(tls["cert"]))
    with pytest.raises(PluginError) as listed:
        Settings.from_env().remote("https://127.0.0.1:1/")
    assert "holds a list of tokens, not the one token to call with" in str(listed.value)
    assert "by --peer-token-file" in str(listed.value)
    monkeypatch.setenv("INFRAKIT_MANAGER_PEER_TOKEN_FILE",
                       str(_token_file(tmp_path, "managers", ROOT)))
    remote = Settings.from_env().remote("https://127.0.0.1:1/")
    assert remote is not None and remote.token == ROOT


def test_the_dispatcher_checks_the_role_before_it_calls_the_plugin() -> None:
    import asyncio

    from infrakit.rpc.dispatch import Dispatcher

    class Groups:
        def __init__(self) -> None:
            self.destroyed: list[str] = []

        async def destroy_group(self, id: str) -> None:
            self.destroyed.append(id)

        async def free_group(self, id: str) -> None:
            raise Forbidden("free: not on a Tuesday")

    def body(method: str) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "method": method, "params": {"ID": "web"},
                           "id": 1}).encode()

    groups = Groups()
    dispatcher = Dispatcher({GROUP: groups})

    async def as_(who: Principal | None, method: str) -> Any:
        with acting_as(who):
            return json.loads(await dispatcher.handle(body(method)) or b"null")

    async def scenario() -> None:
        refused = await as_(Principal("op", Role.OPERATOR), "Group.DestroyGroup")
        assert refused["error"]["code"] == -32003 and groups.destroyed == []
        assert (await as_(Principal("root", Role.ADMIN), "Group.DestroyGroup"))["result"]
        assert (await as_(None, "Group.DestroyGroup"))["result"]  # in process: no caller
        assert groups.destroyed == ["web", "web"]
        own = await as_(Principal("root", Role.ADMIN), "Group.FreeGroup")
        assert own["error"] == {"code": -32003, "message": "free: not on a Tuesday",
                                "data": None}

    try:
        asyncio.run(scenario())
    finally:
        dispatcher.close()
