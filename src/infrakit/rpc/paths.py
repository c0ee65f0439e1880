"""Where plugins live: the plugin directory, socket paths and plugin names."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Linux's ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class PluginPathError(ValueError):
    """A plugin name or directory that cannot be used, with the reason."""


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
