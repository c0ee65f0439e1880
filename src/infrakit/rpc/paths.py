"""Where plugins live: the plugin directory, socket paths and plugin names."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

#: Linux's ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class PluginPathError(ValueError):
    """A plugin name or directory that cannot be used, with the reason."""


class UntrustedPath(PluginPathError):
    """A directory or file that another user controls: nothing is read from it, sent to
    it or written through it."""


def infrakit_home() -> Path:
    """``$INFRAKIT_HOME``, else ``~/.infrakit``."""
    home = os.environ.get("INFRAKIT_HOME")
    return Path(home) if home else Path.home() / ".infrakit"


def plugin_dir() -> Path:
    """``$INFRAKIT_PLUGINS_DIR``, else ``$INFRAKIT_HOME/plugins``, else ``~/.infrakit/plugins``."""
    explicit = os.environ.get("INFRAKIT_PLUGINS_DIR")
    return Path(explicit) if explicit else infrakit_home() / "plugins"


def split_name(full: str) -> tuple[str, str]:
    """Split ``name/type`` into the plugin name and its type (``""`` when untyped)."""
    name, _, type_name = full.partition("/")
    check_name(name)
    if type_name and not _NAME.fullmatch(type_name):
        raise PluginPathError(
            f"plugin type {type_name!r} is not valid: use letters, digits, '.', '_' and '-'"
        )
    return name, type_name


def check_name(name: str) -> str:
    """Refuse a plugin name that could escape the plugin directory or is not a file name."""
    if not _NAME.fullmatch(name):
        raise PluginPathError(
            f"plugin name {name!r} is not valid: it must start with a letter or digit and hold "
            "only letters, digits, '.', '_' and '-' (at most 100 characters)"
        )
    return name


def socket_path(name: str, directory: Path | None = None) -> Path:
    """The socket of plugin ``name``; refuses a path too long for ``AF_UNIX``."""
    path = (directory or plugin_dir()) / check_name(name)
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise PluginPathError(
            f"socket path {str(path)!r} is {size} bytes long, but a UNIX socket path may be at "
            f"most {MAX_SOCKET_PATH}: set INFRAKIT_PLUGINS_DIR to a shorter directory"
        )
    return path


def pid_path(sock: Path) -> Path:
    """The ``<name>.pid`` file beside a plugin's socket."""
    return sock.with_name(sock.name + ".pid")


def _owner_and_mode(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"


def check_private_dir(directory: Path, what: str, trust_root: bool = False) -> None:
    """Refuse ``directory`` unless it is a directory owned by this user (or by root, with
    ``trust_root``) that neither group nor others may write to: whoever can write there can
    plant sockets, links and files in it. ``what`` names it in the error ("plugin
    directory"), which also gives its owner and mode."""
    st = os.stat(directory)  # FileNotFoundError when there is none: the caller's to say
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(f"{what} {str(directory)!r} is not a directory")
    if st.st_uid != me and not (trust_root and st.st_uid == 0):
        raise UntrustedPath(
            f"{what} {str(directory)!r} ({_owner_and_mode(st)}) is owned by uid {st.st_uid}, "
            f"not by you (uid {me}): refusing to use it")
    if st.st_mode & 0o022:
        raise UntrustedPath(
            f"{what} {str(directory)!r} ({_owner_and_mode(st)}) is writable by group or "
            f"others: run chmod 700 on it")


def check_plugin_socket(sock: Path) -> None:
    """Refuse to talk to ``sock`` unless its directory passes :func:`check_private_dir` and
    the socket is this user's (or root's): a planted socket would get every call, secrets in
    specs included, and could answer anything."""
    try:
        check_private_dir(sock.parent, "plugin directory", trust_root=True)
        st = os.stat(sock)
    except FileNotFoundError:
        return  # nothing to talk to: the caller says so
    if st.st_uid not in (os.geteuid(), 0):
        raise UntrustedPath(
            f"plugin socket {str(sock)!r} ({_owner_and_mode(st)}) is owned by uid "
            f"{st.st_uid}, not by you (uid {os.geteuid()}): refusing to use it")


def make_private_dir(directory: Path, what: str) -> None:
    """Create ``directory``, and each missing parent, 0700; or refuse the one there if
    :func:`check_private_dir` does."""
    missing = []
    at = directory
    while not os.path.lexists(at) and at != at.parent:
        missing.append(at)
        at = at.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # made meanwhile: checked below
        os.chmod(path, 0o700)  # whatever the umask took away
    check_private_dir(directory, what)


def make_secret_dir(directory: Path, what: str) -> str | None:
    """:func:`make_private_dir`, and one that group or others may read or enter (logs that
    hold specs, secrets among them) is closed to them: returns what was done, if anything,
    for the caller to tell the user."""
    make_private_dir(directory, what)
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if not mode & 0o077:
        return None
    os.chmod(directory, mode & 0o700)
    return f"{what} {str(directory)!r} was open to others (mode {mode:o}): made it mode " \
           f"{mode & 0o700:o}"

