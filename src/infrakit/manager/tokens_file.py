"""Minting and revoking the named tokens of a listener's tokens file
(``infrakit manager token``); the format, and how a listener reads it, are
:mod:`infrakit.rpc.tokens`'.

A new token is 256 random bits, shown once to whoever mints it; the file keeps only its
SHA-256. The file is rewritten whole, atomically, with mode 600: a reader (a manager
reloading on SIGHUP) sees the old list or the new one, never half of one.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from infrakit.atomicfile import write_atomic
from infrakit.rpc.tokens import SINGLE_NAME, decoded, hashed, is_single, parse, private_text
from infrakit.spi.access import Role
from infrakit.spi.errors import PluginError

OPTION = "--file"


def mint() -> str:
    """A new token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def entries(path: Path) -> list[dict[str, str]]:
    """The tokens of ``path`` as the file writes them, checked as a listener checks them;
    none when the file does not exist yet. A file of one bare token becomes its one entry,
    ``admin``, hashed."""
    if not path.exists():
        return []
    text = private_text(path, OPTION)
    parse(text, path)  # refuses what a listener would refuse
    if is_single(text):
        return [{"name": SINGLE_NAME, "role": Role.ADMIN.word, "token": hashed(text.strip())}]
    return [{"name": e.name, "role": e.role, "token": e.token}
            for e in decoded(text, path).tokens]


def add(path: Path, name: str, role: Role) -> str:
    """Mint a token for ``name`` with ``role``, keep its hash in ``path``; returns the
    token, which nothing keeps."""
    listed = entries(path)
    if any(e["name"] == name for e in listed):
        raise PluginError(f"NAME: {path} already has a token named {name!r}; remove it first "
                          f"('infrakit manager token rm {name} --file {path}') or pick another "
                          "name")
    token = mint()
    _write(path, [*listed, {"name": name, "role": role.word, "token": hashed(token)}])
    return token


def remove(path: Path, name: str) -> None:
    """Revoke ``name``'s token (once the listener reloads)."""
    listed = entries(path)
    kept = [e for e in listed if e["name"] != name]
    if len(kept) == len(listed):
        names = ", ".join(e["name"] for e in listed) or "none"
        raise PluginError(f"NAME: {path} has no token named {name!r} (it has: {names})")
    _write(path, kept)


def _write(path: Path, listed: list[dict[str, str]]) -> None:
    import yaml

    text = ("# Tokens of an infrakit listener: `infrakit manager token add|rm|ls`.\n"
            "# Send the manager SIGHUP to load changes.\n"
            + yaml.safe_dump({"tokens": listed}, sort_keys=False, default_flow_style=False))
    parse(text, path)  # never write what a listener would refuse
    write_atomic(path, text.encode(), 0o600)
