"""What a health probe aims at: its template filled from a member's description, where a
filled value is data and never changes the shape of what the template wrote.

Whoever can set a member's tags (an EC2 tag, a container label, ``infrakit instance
label``) chooses the values; the template's author chooses everything else. So:

- **Command**: a value never becomes shell text. The template runs as ``/bin/sh -c
  SCRIPT infrakit-probe VALUE...``, each ``{{ .Field }}`` in SCRIPT replaced by a reference
  to its positional parameter, written for the quoting it stands in: ``"${1}"`` unquoted,
  ``${1}`` between double quotes, ``'"${1}"'`` between single quotes (the quote closed and
  opened again), so ``test -n '{{ .Tags.role }}'`` and ``test -n {{ .Tags.role }}`` both
  test the whole value as one word. The shell expands a parameter without reading it as
  code; a value in ``$(( ))`` is evaluated, so there it must be an integer. A template
  that hands a value to ``eval``, ``sh -c`` or bash's ``[[ ... -eq ... ]]`` or ``(( ))``
  runs it: that is the template's doing.
- **TCP**: the filled ``host:port`` must be a host name or address (``[v6]`` in brackets)
  and a port number; a value holding ``:``, ``/``, ``@`` or a space cannot move the host
  or the port the template fixed.
- **HTTP**: the scheme must be ``http`` or ``https``; values filled into the path, the
  query or the fragment are percent-encoded (``/``, ``?``, ``#``, ``&`` and ``=`` too: a
  placeholder fills one path segment or one query value), values in the host and port are
  checked as for TCP. A template that is a placeholder from its start (``{{ .Tags.url }}``)
  lets the value choose the whole URL, still only ``http`` or ``https`` and a plain host.

A target that cannot be filled (:class:`Unfilled`) or that a value made wrong
(:class:`BadTarget`) answers "unknown": the member is not judged on it.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import msgspec

from infrakit.spi.types import Description

FIELD = re.compile(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_MARK = re.compile("\ue000([0-9]+)\ue001")


class Unfilled(LookupError):
    """The template names a field the member does not have."""


class BadTarget(ValueError):
    """A filled value makes a target the probe cannot aim at."""


def _fields(instance: Description) -> dict[str, Any]:
    return {"ID": instance.id, "LogicalID": instance.logical_id, "Tags": instance.tags or {},
            "Properties": None if instance.properties is msgspec.UNSET
            else instance.properties}


def value_of(path: str, instance: Description | dict[str, Any]) -> str:
    """The value ``.path`` names in ``instance``, as text."""
    node: Any = _fields(instance) if isinstance(instance, Description) else instance
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            raise Unfilled("{{ ." + path + " }}")
        node = node[part]
    return str(node)


def fill(template: str, instance: Description,
         encode: Callable[[str], str] = lambda v: v) -> str:
    """``template`` with every ``{{ .Path }}`` replaced by its value, passed through
    ``encode``. Unencoded, only to show what a probe aims at."""
    root = _fields(instance)
    return FIELD.sub(lambda m: encode(value_of(m.group(1), root)), template)


# --- Command ------------------------------------------------------------------------------

_REFERENCE = {"u": '"${{{}}}"', "d": "${{{}}}", "s": "'\"${{{}}}\"'", "a": "${{{}}}"}
"""How a positional parameter is written where a placeholder stood: unquoted (also in
``$( )`` and backquotes), in double quotes, in single quotes, in ``$(( ))``."""


def _step(text: str, i: int, stack: list[list[Any]]) -> int:
    """Read the shell syntax at ``text[i]``: how many characters it takes, the quoting
    it opens or closes pushed on or popped from ``stack`` (entries ``[kind, depth]``:
    ``u`` unquoted, ``p`` in ``$( )``, ``b`` in backquotes, ``s`` and ``d`` in single and
    double quotes, ``a`` in ``$(( ))``)."""
    top = stack[-1]
    kind, char = top[0], text[i]
    if kind == "s":
        if char == "'":
            stack.pop()
        return 1
    if char == "\\":
        return 2
    if text.startswith("$((", i):
        stack.append(["a", 0])
        return 3
    if text.startswith("$(", i):
        stack.append(["p", 0])
        return 2
    if kind == "a":
        if char == ")" and top[1] == 0 and text.startswith("))", i):
            stack.pop()
            return 2
        top[1] += {"(": 1, ")": -1}.get(char, 0)
    elif kind == "d":
        if char == '"':
            stack.pop()
        elif char == "`":
            stack.append(["b", 0])
    elif char in "'\"":
        stack.append(["s" if char == "'" else "d", 0])
    elif char == "`" and kind == "b":
        stack.pop()
    elif char == "`":
        stack.append(["b", 0])
    elif char == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
        end = text.find("\n", i)
        return len(text) - i if end < 0 else end - i
    elif kind == "p" and char in "()":
        if char == ")" and top[1] == 0:
            stack.pop()
        else:
            top[1] += 1 if char == "(" else -1
    return 1


def shell_script(template: str) -> tuple[str, list[tuple[str, bool]]]:
    """``template`` as a script for ``sh -c``, each placeholder replaced by a reference to
    a positional parameter; and for each parameter, in order, the field it holds and
    whether it stands in arithmetic (where only an integer may go)."""
    out: list[str] = []
    params: list[tuple[str, bool]] = []
    stack: list[list[Any]] = [["u", 0]]
    i = 0
    while i < len(template):
        found = FIELD.match(template, i)
        if found is None:
            step = _step(template, i, stack) if stack else 1
            out.append(template[i:i + step])
            i += step
            continue
        kind = stack[-1][0] if stack else "u"
        params.append((found.group(1), kind == "a"))
        out.append(_REFERENCE["u" if kind in "pb" else kind].format(len(params)))
        i = found.end()
    return "".join(out), params


def shell_arguments(params: list[tuple[str, bool]], instance: Description) -> list[str]:
    """The values of the positional parameters of :func:`shell_script`'s script."""
    root = _fields(instance)
    values = []
    for path, arithmetic in params:
        value = value_of(path, root)
        if "\0" in value:
            raise BadTarget(f".{path} holds a NUL byte")
        if arithmetic and not _INTEGER.fullmatch(value):
            raise BadTarget(f".{path} is {value!r}, not an integer, and stands in $(( ))")
        values.append(value)
    return values


# --- TCP and HTTP --------------------------------------------------------------------------

def host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; without the port where there is a default), checked:
    a host name or an address (or nothing), and a port number."""
    host, port = text, None
    if ":" in text and not text.endswith("]"):
        host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise BadTarget(f"{host!r} is not a host name or address") from None
    elif host and not _HOSTNAME.fullmatch(host):
        raise BadTarget(f"{host!r} is not a host name or address")
    if port is None and default_port is not None:
        return host, default_port
    if not (port and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise BadTarget(f"port {port or ''!r} is not a port number")
    return host, int(port)


def tcp_target(template: str, instance: Description) -> tuple[str, int]:
    """Where a TCP probe connects: ``host:port``, or ``:port`` or ``port`` for
    ``127.0.0.1``."""
    text = fill(template, instance)
    host, port = host_port(text if ":" in text else f":{text}")
    return host or "127.0.0.1", port


def _where(scheme: str, hostport: str) -> None:
    """Refuse a URL that is not ``http``/``https`` to a host name or address."""
    if scheme not in ("http", "https"):
        raise BadTarget(f"{scheme + ':' if scheme else 'no scheme'} is not http or https")
    host, _ = host_port(hostport, 443 if scheme == "https" else 80)
    if not host:
        raise BadTarget("the URL has no host")


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise BadTarget(str(exc)) from None


def http_target(template: str, instance: Description) -> str:
    """The URL an HTTP probe gets: each value encoded for the part of the URL it fills."""
    pieces = FIELD.split(template)
    marked = "".join(p if n % 2 == 0 else f"\ue000{n // 2}\ue001" for n, p in enumerate(pieces))
    parts = _split(marked)
    if not parts.scheme and not parts.netloc:  # a value chooses the whole URL
        url = fill(template, instance)
        whole = _split(url)
        _where(whole.scheme, whole.netloc.rpartition("@")[2])
        return url
    root = _fields(instance)
    values = [value_of(path, root) for path in pieces[1::2]]

    def put(part: str, encode: Callable[[str], str] = lambda v: v) -> str:
        return _MARK.sub(lambda m: encode(values[int(m.group(1))]), part)

    def escaped(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    user, at, where = parts.netloc.rpartition("@")
    scheme, hostport = put(parts.scheme), put(where)
    _where(scheme, hostport)
    netloc = put(user, escaped) + at + hostport
    url = urllib.parse.urlunsplit((scheme, netloc, put(parts.path, escaped),
                                   put(parts.query, escaped), put(parts.fragment, escaped)))
    again = _split(url)
    if (again.scheme, again.netloc) != (scheme, netloc):
        raise BadTarget(f"{url!r} does not parse back to its host")
    return url


def check_url_template(template: str) -> str | None:
    """What is wrong with an HTTP probe's template before anything is filled, if anything."""
    marked = FIELD.sub("\ue0000\ue001", template)
    try:
        parts = urllib.parse.urlsplit(marked)
    except ValueError as exc:
        return str(exc)
    if not parts.scheme and not parts.netloc and not marked.startswith("\ue000"):
        return "must begin with http:// or https://"
    if parts.scheme and "\ue000" not in parts.scheme and parts.scheme not in ("http", "https"):
        return f"{parts.scheme!r} is not http or https"
    return None
