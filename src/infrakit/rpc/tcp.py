"""Serving a plugin over TCP as well as its UNIX socket, for callers on other machines.

A UNIX socket is guarded by its file mode; a TCP port by nothing, so a TCP listener exists
only with TLS (a certificate and its key) and a bearer token that every request must
carry: one of the named tokens of :mod:`infrakit.rpc.tokens`, whose role says what its
holder may call. It binds 127.0.0.1 unless told otherwise. Tokens are read from a file
that only its owner may read, never from the command line (where ``ps`` shows them to
everyone).
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from infrakit.rpc.client import Remote
from infrakit.rpc.lifecycle import bind_tcp
from infrakit.rpc.tokens import MIN_LENGTH, Tokens, is_single, private_text
from infrakit.spi.errors import PluginError

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class TcpListener:
    host: str
    port: int
    cert: Path
    key: Path
    tokens: Tokens
    """Who may call, and in which role; reloaded on SIGHUP."""

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise PluginError(f"--tls-cert/--tls-key: cannot load {self.cert} and {self.key}: "
                              f"{exc}") from None
        return context

    def bind(self) -> socket.socket:
        return bind_tcp(self.host, self.port, "--listen")

    def url(self, advertise: str | None = None) -> str:
        """Where other machines reach this listener: ``advertise``, else the address it
        binds, else (bound to every address) this machine's name."""
        host = advertise or (self.host if self.host not in ("0.0.0.0", "::") else
                             socket.gethostname())
        return f"https://{f'[{host}]' if ':' in host else host}:{self.port}/"


def parse_listen(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise PluginError(f"--listen: {value!r} is not [HOST:]PORT with a port in 1..65535")
    return host or DEFAULT_HOST, int(port)


def read_token(path: Path) -> str:
    """The one bearer token in ``path`` (a caller's own token), a file of this user's that
    only they may read or write."""
    text = private_text(path, "--token-file")
    if not is_single(text):
        raise PluginError(f"--token-file: {path} holds a list of tokens, not the one token "
                          "to call with: give a file holding your token alone")
    text = text.strip()
    if len(text) < MIN_LENGTH:
        raise PluginError(f"--token-file: the token in {path} is shorter than {MIN_LENGTH} "
                          "characters")
    return text


def client_context(ca: Path | None) -> ssl.SSLContext:
    """Trusts the certificates in ``ca`` (the managers' own certificate, or their CA), or
    without one the system's CAs."""
    try:
        return ssl.create_default_context(cafile=None if ca is None else os.fspath(ca))
    except (OSError, ssl.SSLError) as exc:
        raise PluginError(f"--tls-ca: cannot load {ca}: {exc}") from None


def remote(url: str, token_file: str, ca: str = "") -> Remote:
    """How to call the listener at ``url``: with the token in ``token_file``, trusting
    ``ca`` (else the system's CAs)."""
    if not url.startswith("https://"):
        raise PluginError(f"--url: {url!r} must start with https://")
    if not token_file:
        raise PluginError("--token-file: required with --url")
    return Remote(url, client_context(Path(ca) if ca else None), read_token(Path(token_file)))
