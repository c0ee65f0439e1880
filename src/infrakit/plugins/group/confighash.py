"""The ``infrakit.config_sha`` tag: the hash of a group's Instance and Flavor blocks,
computed exactly as the reference InfraKit computes it, so that members it created are
adopted without a rolling update.

The reference serialises each block with Go's ``json.MarshalIndent(v, "  ", "  ")`` after
a round trip through ``interface{}``: object keys sorted at every level, two-space indent,
every line after the first prefixed with two more spaces, ``<``, ``>`` and ``&`` escaped,
other characters raw UTF-8, and numbers printed as Go prints a float64. It hashes the
Instance block's text, then the Flavor block's, with SHA-1, and encodes the digest as
lower-case base32 without padding.
"""

from __future__ import annotations

import base64
import hashlib
import math
from decimal import Decimal
from typing import Any

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HTML = frozenset("<>&\u2028\u2029")


def go_number(value: int | float) -> str:
    """A JSON number as Go's encoding/json prints a float64 (``1.0`` -> ``1``)."""
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{value!r} is not a JSON number")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    if 1e-6 <= abs(f) < 1e21:
        text = format(Decimal(repr(f)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exponent = repr(f).partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _string(text: str) -> str:
    """A JSON string as Go writes it: short escapes only for quote, backslash, newline,
    return and tab; other control characters and ``<>&`` (HTML-safe) as ``\\u00XX``."""
    out = ['"']
    for c in text:
        short = _SHORT.get(c)
        if short is not None:
            out.append(short)
        elif c < " " or c in _HTML:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def go_indent_json(value: Any, prefix: str = "  ", indent: str = "  ", depth: int = 0) -> str:
    """``json.MarshalIndent(value, prefix, indent)`` of a decoded JSON value, keys sorted."""
    pad = prefix + indent * (depth + 1)
    close = prefix + indent * depth
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{_string(str(k))}: {go_indent_json(value[k], prefix, indent, depth + 1)}"
                 for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + close + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [pad + go_indent_json(v, prefix, indent, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + close + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return go_number(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def config_hash(instance_block: Any, flavor_block: Any) -> str:
    """The ``infrakit.config_sha`` of a group's ``Instance`` and ``Flavor`` blocks, each given
    as decoded JSON (``{"Plugin": ..., "Properties": ...}``)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(go_indent_json(instance_block).encode())
    digest.update(go_indent_json(flavor_block).encode())
    return base64.b32encode(digest.digest()).decode().lower().rstrip("=")
