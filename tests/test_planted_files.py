"""Files and directories someone else planted or can change: a plugin directory another
user owns or may write to, symbolic links where a plugin writes its pid, a state file or a
log, and logs others may read. Nothing is sent to, written through or left readable by
them.

Foreign ownership is staged with ``os.chown`` to the uid of ``nobody`` (65534), which
needs root; those cases are skipped otherwise, and their mode-based twins run anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.lock_leader import LockLeadership
from infrakit.rpc.client import AsyncRPCClient, PluginUnreachable, RPCClient
from infrakit.rpc.discovery import list_plugins, locate
from infrakit.rpc.lookup import SocketPlugins
from infrakit.rpc.paths import PluginPathError
from infrakit.spi.errors import PluginError
from infrakit.spi.handshake import ImplementsResult
from tests.conftest import Cli

NOBODY = 65534

_ANSWER = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 48\r\n\r\n'
           b'{"jsonrpc":"2.0","id":1,"result":"fake answer"}\n')


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("staging another user's files takes root (os.chown)")


class Listener:
    """A socket that records every byte sent to it and answers each connection with a
    fake JSON-RPC result, as a planted plugin would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(os.fspath(path))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received += conn.recv(65536)
                    conn.sendall(_ANSWER)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _foreign(directory: Path, how: str) -> None:
    """Make ``directory`` (and what is in it) another user's, or writable by others."""
    if how == "owner":
        for path in (directory, *directory.iterdir()):
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        os.chmod(directory, 0o755)
    else:
        os.chmod(directory, 0o777)


@pytest.fixture(params=["owner", "mode"])
def planted(request: pytest.FixtureRequest, home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A plugin directory, set in ``INFRAKIT_PLUGINS_DIR``, that belongs to someone else
    (``owner``) or that others may write to (``mode``), with a planted ``group`` socket."""
    if request.param == "owner":
        _root_only()
    directory = home / "theirs"
    directory.mkdir(mode=0o700)
    listener = Listener(directory / "group")
    other = Listener(directory / "instance-x")  # reached as `infrakit instance-x VERB`
    _foreign(directory, request.param)
    monkeypatch.setenv("INFRAKIT_PLUGINS_DIR", str(directory))
    try:
        yield listener
        assert other.received == b""
    finally:
        listener.close()
        other.close()


def _names_the_directory(message: str, directory: Path) -> None:
    st = directory.stat()
    assert str(directory) in message, message
    assert f"uid {st.st_uid}" in message, message
    assert f"mode {stat.S_IMODE(st.st_mode):o}" in message, message


def test_the_cli_sends_nothing_to_a_plugin_in_a_directory_it_cannot_trust(
        planted: Listener, cli: Cli, home: Path) -> None:
    spec = home / "g.json"
    spec.write_text('{"ID": "g", "Properties": {"Instance": {"Plugin": "instance-file", '
                    '"Properties": {"Password": "hunter2"}}, "Flavor": {"Plugin": '
                    '"flavor-vanilla"}, "Allocation": {"Size": 1}}}')
    for args in (["group", "commit", str(spec)], ["group", "ls"], ["plugin", "ls"],
                 ["instance", "--name", "group", "describe"], ["group", "describe", "g"],
                 ["plugin", "stop", "group"], ["instance-x", "describe"]):
        done = cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "fake answer" not in done.stdout + done.stderr
        _names_the_directory(done.stderr, planted.path.parent)
    assert planted.received == b""


def test_every_client_refuses_a_plugin_directory_it_cannot_trust(planted: Listener) -> None:
    directory = planted.path.parent
    with pytest.raises(PluginUnreachable) as sync, RPCClient(planted.path, 5) as rpc:
        rpc.call_raw("Handshake.Implements", {}, ImplementsResult)
    _names_the_directory(str(sync.value), directory)

    async def call_async() -> None:
        async with AsyncRPCClient(planted.path, 5) as rpc:
            await rpc.call_raw("Handshake.Implements", {}, ImplementsResult)

    with pytest.raises(PluginUnreachable) as unreachable:
        asyncio.run(call_async())
    _names_the_directory(str(unreachable.value), directory)

    for find in (lambda: list_plugins(), lambda: locate("group")):
        with pytest.raises(PluginPathError) as refused:
            find()
        _names_the_directory(str(refused.value), directory)

    async def look_up() -> None:
        lookup = SocketPlugins(timeout=5)
        try:
            await lookup.instance("group").describe_instances({}, False)
        finally:
            await lookup.close()

    with pytest.raises(PluginError) as looked_up:
        asyncio.run(look_up())
    _names_the_directory(str(looked_up.value), directory)
    assert planted.received == b""


def test_a_client_refuses_a_socket_someone_else_owns(home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory of ours, with a socket in it that another user made."""
    _root_only()
    directory = home / "plugins"
    directory.mkdir(mode=0o700)
    listener = Listener(directory / "group")
    try:
        os.chown(listener.path, NOBODY, NOBODY)
        with pytest.raises(PluginUnreachable) as refused, RPCClient(listener.path, 5) as rpc:
            rpc.call_raw("Handshake.Implements", {}, ImplementsResult)
        assert str(listener.path) in str(refused.value) and "uid 65534" in str(refused.value)
        assert listener.received == b""
    finally:
        listener.close()


@pytest.mark.parametrize("planted_name", ["evil.pid", ".evil.supervisor.pid"])
def test_a_pid_file_that_is_a_link_is_not_written_through(cli: Cli, home: Path,
                                                          planted_name: str) -> None:
    """A plugin's pid file, and its supervisor's, planted as links to another file: that
    file is neither truncated nor written, and the start says which link is in the way."""
    victim = home / "victim"
    victim.write_text("precious\n")
    plugins = home / "plugins"
    plugins.mkdir(mode=0o700)
    (plugins / planted_name).symlink_to(victim)
    done = cli("plugin", "start", "flavor-vanilla:evil", "--wait", "10")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert str(plugins / planted_name) in done.stderr and "link" in done.stderr, done.stderr
    assert victim.read_text() == "precious\n"
    assert (plugins / planted_name).is_symlink()


def test_the_leader_lock_file_is_not_opened_through_a_link(home: Path) -> None:
    directory = home / "manager"
    directory.mkdir(mode=0o700)
    victim = home / "victim"
    (directory / "leader.lock").symlink_to(victim)
    with pytest.raises(PluginError, match="symbolic link"):
        LockLeadership(directory).acquire(LeaderInfo.me("sqlite:test"), threading.Event())
    assert not victim.exists()  # not created through the link


def _file_plugin(directory: Path) -> object:
    from infrakit.plugins.instance.file import FileInstancePlugin

    return FileInstancePlugin(directory)


def _process_plugin(directory: Path) -> object:
    from infrakit.plugins.instance.process import ProcessInstancePlugin

    return ProcessInstancePlugin(directory)


def _sqlite_store(directory: Path) -> object:
    from infrakit.store.sqlite import SQLiteStore

    return SQLiteStore(directory / "groups.db")


def _lock_leadership(directory: Path) -> object:
    return LockLeadership(directory).acquire(LeaderInfo.me("sqlite:test"), threading.Event())


STATE_USERS = {"instance-file": _file_plugin, "instance-process": _process_plugin,
               "group store": _sqlite_store, "manager": _lock_leadership}


@pytest.mark.parametrize("user", sorted(STATE_USERS))
@pytest.mark.parametrize("how", ["owner", "mode"])
def test_a_state_directory_someone_else_controls_is_refused(home: Path, user: str,
                                                            how: str) -> None:
    """Whoever can write in a plugin's state directory can plant links where the plugin
    writes, or records it would take for its own."""
    if how == "owner":
        _root_only()
    directory = home / "state" / "s"
    directory.mkdir(parents=True, mode=0o700)
    _foreign(directory, how)
    with pytest.raises((PluginError, PluginPathError)) as refused:
        STATE_USERS[user](directory)
    _names_the_directory(str(refused.value), directory)


@pytest.mark.parametrize("user", ["instance-file", "instance-process"])
def test_a_planted_write_test_link_is_not_written_through(home: Path, user: str) -> None:
    directory = home / "state" / "s"
    directory.mkdir(parents=True, mode=0o700)
    victim = home / "victim"
    victim.write_text("precious\n")
    (directory / ".write-test").symlink_to(victim)
    STATE_USERS[user](directory)
    assert victim.read_text() == "precious\n"


def test_state_directories_are_made_for_their_owner_alone(home: Path) -> None:
    fresh = home / "new" / "instance-file" / "s"
    _file_plugin(fresh)
    for path in (fresh, fresh.parent, fresh.parent.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_logs_are_for_their_owner_alone(cli: Cli, home: Path) -> None:
    """At --log 5 a plugin logs every request, secrets in specs included: the home, its
    logs/ and every log are closed to others, those made before included."""
    logs = home / "logs"
    logs.mkdir()
    earlier = logs / "instance-file.log"
    earlier.write_text("an earlier run\n")
    for path, mode in ((home, 0o755), (logs, 0o755), (earlier, 0o644)):
        os.chmod(path, mode)
    spec = home / "spec.json"
    spec.write_text('{"Properties": {"Env": {"DB_PASSWORD": "hunter3"}}}')
    try:
        done = cli("--log", "5", "plugin", "start", "instance-file", "flavor-vanilla")
        assert done.returncode == 0, done.stderr
        assert "INFRAKIT_HOME" in done.stderr and "log directory" in done.stderr  # said so
        done = cli("instance", "--name", "instance-file", "provision", str(spec))
        assert done.returncode == 0, done.stderr
    finally:
        cli("plugin", "stop", "instance-file", "flavor-vanilla")
    assert "hunter3" in earlier.read_text()  # what makes the modes matter
    assert (_mode(home), _mode(logs)) == (0o700, 0o700)
    assert {p.name: _mode(p) for p in logs.iterdir()} == {
        "instance-file.log": 0o600, "flavor-vanilla.log": 0o600}


def test_a_fresh_home_and_its_logs_are_made_for_their_owner_alone(cli: Cli, home: Path) -> None:
    fresh = home / "fresh" / "home"
    env = {"INFRAKIT_HOME": str(fresh)}
    try:
        done = cli("plugin", "start", "flavor-vanilla", env=env)
        assert done.returncode == 0, done.stderr
    finally:
        cli("plugin", "stop", "flavor-vanilla", env=env)
    assert _mode(fresh) == _mode(fresh / "logs") == _mode(fresh / "plugins") == 0o700
    assert _mode(fresh / "logs" / "flavor-vanilla.log") == 0o600


def test_a_log_that_is_a_link_is_not_written_through(cli: Cli, home: Path) -> None:
    victim = home / "victim"
    victim.write_text("precious\n")
    logs = home / "logs"
    logs.mkdir(mode=0o700)
    (logs / "flavor-vanilla.log").symlink_to(victim)
    done = cli("plugin", "start", "flavor-vanilla")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert str(logs / "flavor-vanilla.log") in done.stderr and "link" in done.stderr
    assert victim.read_text() == "precious\n"
    assert not (home / "plugins" / "flavor-vanilla").exists()  # nothing was started


def test_a_token_file_another_user_owns_is_refused(home: Path) -> None:
    """The TCP listener's token, and a client's: whoever owns the file knows the token,
    or can change it."""
    from infrakit.rpc.tcp import read_token

    _root_only()
    token = home / "token"
    token.write_text("t" * 32)
    os.chmod(token, 0o600)
    os.chown(token, NOBODY, NOBODY)
    with pytest.raises(PluginError) as refused:
        read_token(token)
    assert str(token) in str(refused.value) and "uid 65534" in str(refused.value)
