"""Claiming, binding and releasing a plugin's socket and pid file.

The pid file is also a lock: the server holds an exclusive ``flock`` on it for its whole
life. The kernel drops the lock when the process dies, even by ``kill -9``, so a socket
whose pid file is unlocked is stale and safe to remove, and one whose lock is held belongs
to a live server, even a stopped one that cannot answer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from infrakit.rpc.paths import PluginPathError, make_private_dir, pid_path, socket_path
from infrakit.spi.errors import PluginError


def bind_tcp(host: str, port: int, option: str) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port``; one that cannot be had is
    refused naming ``option``, the setting that asked for it, and the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PluginError(f"{option}: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class PluginRunningError(RuntimeError):
    """Another live server holds the name."""


def ensure_plugin_dir(directory: Path) -> None:
    """Create the plugin directory 0700, or refuse one that another user owns or that
    others may write to."""
    make_private_dir(directory, "plugin directory")


def read_pid(sock: Path) -> int | None:
    """The pid written beside a socket, if any (never read through a link)."""
    try:
        fd = os.open(pid_path(sock), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32).decode(errors="replace").strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def not_a_link(path: Path, what: str) -> PluginPathError:
    """The error for a file of ours that someone replaced by a symbolic link: it is not
    written through, since the link may lead anywhere."""
    try:
        target = f" (to {os.readlink(path)!r})"
    except OSError:
        target = ""
    return PluginPathError(f"{what} {str(path)!r} is a symbolic link{target}: refusing to "
                           "write through it; remove it")


def is_locked(sock: Path) -> bool:
    """Whether a live process holds the lock on ``sock``'s pid file."""
    try:
        fd = os.open(pid_path(sock), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def answers(sock: Path, timeout: float = 0.5) -> bool:
    """Whether anything accepts a connection on ``sock``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(os.fspath(sock))
        except OSError:
            return False
    return True


def is_live(sock: Path) -> bool:
    """Whether a live server holds ``sock``: ours hold the pid-file lock; others (such as
    the reference's plugins) are live if they accept a connection."""
    return is_locked(sock) or answers(sock)


class SocketClaim:
    """The exclusive right to serve under one name: the locked pid file and the socket."""

    def __init__(self, name: str, directory: Path) -> None:
        self.path = socket_path(name, directory)
        ensure_plugin_dir(directory)
        self.pid_file = pid_path(self.path)
        self._fd = self._lock()
        self._sock_ino: int | None = None
        try:
            self._clear_stale()
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(self._fd)
        except BaseException:
            self.release()
            raise

    def _lock(self) -> int:
        """Lock the pid file, retrying if it was replaced between open and lock."""
        while True:
            try:
                fd = os.open(self.pid_file,
                             os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise not_a_link(self.pid_file, "pid file") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = read_pid(self.path)
                raise PluginRunningError(
                    f"plugin {self.path.name!r} is already running"
                    f" (pid {pid if pid is not None else 'unknown'}) at {self.path}"
                ) from None
            try:
                same = os.stat(self.pid_file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _clear_stale(self) -> None:
        """Remove a socket left by a dead server; refuse one that something still serves."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise PluginPathError(f"{self.path} exists and is not a socket; remove it first")
        if answers(self.path):
            raise PluginRunningError(
                f"plugin {self.path.name!r} is already running: something answers on {self.path}"
            )
        os.unlink(self.path)

    def bind(self) -> socket.socket:
        """Bind and listen on the socket, readable and writable by the owner only."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._sock_ino = os.lstat(self.path).st_ino
        return sock

    def unlink_socket(self) -> None:
        """Remove the socket file if it is still the one this claim bound."""
        if self._sock_ino is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.path).st_ino == self._sock_ino:
                os.unlink(self.path)
        self._sock_ino = None

    def release(self) -> None:
        """Remove the socket and the pid file, then drop the lock."""
        self.unlink_socket()
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
        os.close(self._fd)
        self._fd = -1
