"""The tokens a TCP listener accepts, each with a name and a role, read from a file that
only its owner may read.

The file is YAML (or JSON)::

    tokens:
      - name: alice
        role: operator
        token: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      - name: ci
        role: viewer
        token: a-plain-token-of-16-characters-or-more

A token is stored as ``sha256:<hex>`` of itself (what ``infrakit manager token add``
writes) or in plain. Why a plain SHA-256 and not a salted slow hash (bcrypt, scrypt): a
slow hash protects passwords, which are guessable, by making each guess costly; a token
minted here is 256 random bits, which no number of guesses finds, so a slow hash would only
make every request slower. A stolen file of hashes still does not let anyone call the
listener.

A file holding one bare token, as ``--token-file`` did before roles, is that token as
``admin``.

:meth:`Tokens.who` compares the SHA-256 of what a caller shows with every entry's, each
with :func:`hmac.compare_digest`, and always all of them: how long a lookup takes says
nothing of how much of a token was right, nor of which entry matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from infrakit.spi.access import Principal, Role
from infrakit.spi.errors import PluginError
from infrakit.spi.strict import decode_strict

log = logging.getLogger("infrakit.rpc.tokens")

HASHED = re.compile(r"sha256:[0-9a-f]{64}")
"""How a hashed token is written in the file."""
MIN_LENGTH = 16
"""Characters a token stored in plain must have at least."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
"""What a token's name may be: it is shown in events and messages as it is."""
SINGLE_NAME = "admin"
"""The name of the one token of a file that holds a bare token."""


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    """One token of the file, as written."""

    name: str
    role: str
    token: str


class TokensFile(msgspec.Struct, forbid_unknown_fields=True):
    """The file, as written."""

    tokens: list[Entry]


def digest(token: str | bytes) -> bytes:
    """The SHA-256 a token is known by."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def hashed(token: str) -> str:
    """``token`` as the file stores it hashed: ``sha256:<hex>``."""
    return "sha256:" + digest(token).hex()


@dataclass(frozen=True)
class _Known:
    principal: Principal
    digest: bytes


class Tokens:
    """The tokens of a listener, by their digests; reloaded from their file on demand."""

    def __init__(self, known: list[_Known], path: Path | None = None) -> None:
        self._known = known
        self.path = path
        """The file they were read from; None for a token given in memory."""

    @classmethod
    def load(cls, path: Path | str) -> Tokens:
        """The tokens in ``path``; a :class:`PluginError` naming the fault otherwise."""
        path = Path(path)
        return cls(parse(private_text(path, "--token-file"), path), path)

    @classmethod
    def single(cls, token: str) -> Tokens:
        """One token, as ``admin``: the listener of a single shared token."""
        return cls([_Known(Principal(SINGLE_NAME, Role.ADMIN), digest(token))])

    @property
    def principals(self) -> list[Principal]:
        """Who the tokens belong to, as the log names them."""
        return [k.principal for k in self._known]

    def who(self, token: str | bytes) -> Principal | None:
        """The holder of ``token``, or None: in a time that depends only on how many
        tokens there are (see the module's docstring)."""
        given = digest(token)
        found = None
        for known in self._known:  # no early return: every entry is compared
            if hmac.compare_digest(given, known.digest):
                found = known.principal
        return found

    def bearer(self, header: bytes) -> Principal | None:
        """The holder of the token in an ``Authorization: Bearer <token>`` header's value,
        or None."""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        return self.who(token.strip())

    def reload(self) -> None:
        """Read the file again; a file that is now wrong leaves the tokens as they were,
        and the log says why."""
        if self.path is None:
            return
        try:
            known = parse(private_text(self.path, "--token-file"), self.path)
        except PluginError as exc:
            log.error("tokens not reloaded, the previous ones stay in force: %s", exc)
            return
        self._known = known  # one assignment: a lookup sees the old list or the new one
        log.info("tokens reloaded from %s: %s", self.path,
                 ", ".join(str(p) for p in self.principals) or "none")


def private_text(path: Path, option: str) -> str:
    """The text of ``path``, a file of this user's that only they may read or write."""
    try:
        info = os.stat(path)
        text = path.read_text()
    except OSError as exc:
        raise PluginError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PluginError(f"{option}: {path} is not UTF-8 text") from None
    if info.st_uid != os.geteuid():
        raise PluginError(f"{option}: {path} is owned by uid {info.st_uid}, not by you "
                          f"(uid {os.geteuid()})")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PluginError(f"{option}: {path} is open to others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 {path}")
    return text


def is_single(text: str) -> bool:
    """Whether a token file's text is one bare token (the file of a single shared token,
    or a caller's own token), not a list of tokens."""
    stripped = text.strip()  # a list has a blank or a brace; a token has neither
    return bool(stripped) and not stripped.startswith("{") and \
        not any(c.isspace() for c in stripped)


def parse(text: str, path: Path) -> list[_Known]:
    """The tokens of a file's ``text``, every one checked; a :class:`PluginError` naming
    the first fault (by its path in the file) otherwise."""
    if is_single(text):
        token = text.strip()
        if len(token) < MIN_LENGTH:
            raise PluginError(f"--token-file: the token in {path} is shorter than "
                              f"{MIN_LENGTH} characters")
        return [_Known(Principal(SINGLE_NAME, Role.ADMIN), digest(token))]
    return _entries(decoded(text, path), path)


def decoded(text: str, path: Path) -> TokensFile:
    """A list of tokens, as written (each entry's fields checked by :func:`parse`)."""
    import yaml

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PluginError(f"--token-file: {path} is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PluginError(f"--token-file: {path} holds neither one token nor a mapping "
                          "with 'tokens: [{name: ..., role: ..., token: ...}]'")
    try:
        parsed: TokensFile = decode_strict(data, TokensFile)
    except PluginError as exc:
        raise PluginError(f"--token-file: {path}: {exc}") from None
    return parsed


def _entries(parsed: TokensFile, path: Path) -> list[_Known]:
    known: list[_Known] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for n, entry in enumerate(parsed.tokens):
        at = f"--token-file: {path}: tokens[{n}]"
        if not NAME.fullmatch(entry.name):
            raise PluginError(f"{at}.name: {entry.name!r} is not a name: use letters, digits "
                              "and . _ @ + - (up to 64), starting with a letter or digit")
        if entry.name in names:
            raise PluginError(f"{at}.name: {entry.name!r} is named twice")
        try:
            role = Role.named(entry.role)
        except ValueError as exc:
            raise PluginError(f"{at}.role: {exc}") from None
        known_digest = _stored_digest(entry.token, f"{at}.token")
        if known_digest in digests:
            raise PluginError(f"{at}.token: the same token as {digests[known_digest]!r}'s; "
                              "give each its own")
        names.add(entry.name)
        digests[known_digest] = entry.name
        known.append(_Known(Principal(entry.name, role), known_digest))
    return known


def _stored_digest(token: str, where: str) -> bytes:
    if token.startswith("sha256:"):
        if not HASHED.fullmatch(token):
            raise PluginError(f"{where}: a hashed token is 'sha256:' and 64 lowercase hex "
                              "digits")
        return bytes.fromhex(token[len("sha256:"):])
    if len(token) < MIN_LENGTH:
        raise PluginError(f"{where}: shorter than {MIN_LENGTH} characters; mint one with "
                          "'infrakit manager token add'")
    return digest(token)

