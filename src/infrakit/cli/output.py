"""Printing results as a table, a wide table, JSON or YAML (``--output``), and the
conventions every read verb follows:

- ``-o table`` (the default), ``-o wide`` (the table with the columns that do not fit a
  terminal, where the verb has more to show), ``-o json``, ``-o yaml``: every read verb
  takes all four, ``-q`` included (``-q -o json`` prints a JSON list of the IDs).
- Times are ages (``5s``, ``5m``, ``2h3m``, ``4d2h``) in tables, and ISO 8601 timestamps in
  JSON, YAML and the detailed views (``-v``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

FORMATS = ("table", "wide", "json", "yaml")
TABLES = ("table", "wide")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(default: str = "table") -> Callable[[F], F]:
    """The ``--output/-o`` option of every read command, and ``-y/--yaml``, the
    reference's way to ask for YAML."""
    choice = click.option(
        "--output", "-o", type=click.Choice(FORMATS), default=default, show_default=True,
        callback=_remember, help="How to print the result: table, wide (a table with "
        "more columns), json or yaml (and an error: as JSON or YAML it carries the plugin's "
        "JSON-RPC code).")
    yaml = click.option("-y", "--yaml", "output", flag_value="yaml", callback=_remember,
                        help="Print YAML (the same as -o yaml).")

    def both(fn: F) -> F:
        return choice(yaml(fn))

    return both


_chosen: dict[str, str] = {}


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Note the format asked for, so that an error is printed in it too (a command's
    default format is not asked for: ``group inspect`` prints YAML, its errors words)."""
    from click.core import ParameterSource

    if value and ctx.get_parameter_source(str(param.name)) in (ParameterSource.COMMANDLINE,
                                                                ParameterSource.ENVIRONMENT):
        _chosen["format"] = value
    return value


def chosen_format() -> str:
    """The ``--output`` the command was given (``table`` when it has none)."""
    return _chosen.get("format", "table")


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069]")
"""What a terminal acts on rather than shows: control characters (C0, DEL, C1: escape
sequences, carriage returns, new lines), and the characters that end a line or reorder
the text around them (line and paragraph separators, bidirectional controls)."""
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


NL = "\n"
"""For :func:`printable`'s ``keep``: a message of several lines (commit details)."""


def printable(text: str, keep: str = "") -> str:
    """``text`` as a terminal may show it: every character it would act on (an escape
    sequence, a carriage return, a new line) written out as Python writes it (``\\x1b``,
    ``\\r``, ``\\n``), except those in ``keep``. For what plugins and files supply (IDs,
    tags, reasons), wherever the CLI prints them for a person to read."""
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escaped(m.group()), text)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          "\u2066-\u2069]")
"""What :mod:`json` leaves as it is in strings that a terminal acts on (it escapes C0)."""


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def to_data(value: Any) -> Any:
    """Wire structs to plain JSON-shaped data, with their wire (PascalCase) names."""
    return msgspec.to_builtins(value)


def dump(value: Any, fmt: str) -> str:
    """``value`` as JSON or YAML text."""
    data = to_data(value)
    if fmt == "yaml":
        import yaml

        # it writes every character a terminal acts on as an escape, in double quotes
        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False)).rstrip("\n")
    import json  # here: a table, the default, needs none of it

    # these characters can only stand in strings, where \uXXXX means the same: the JSON
    # read back is exact
    return _JSON_UNSAFE.sub(_json_escaped, json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """A plain left-aligned table, with a header row unless ``header`` is false. What a
    terminal would act on in a cell is escaped (:func:`printable`): a cell is one line."""
    rows = [[printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers] if header else [0] * len(headers)
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *rows] if header else list(rows)
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def emit(value: Any, fmt: str, headers: Sequence[str],
         rows: Callable[[], Sequence[Sequence[str]]], quiet: bool = False) -> None:
    """Print ``value`` as ``fmt``; ``rows`` builds the table form (wide or not: the caller
    chose ``headers`` for ``fmt``) only when it is asked for (without its header when
    ``quiet``)."""
    if fmt not in TABLES:
        click.echo(dump(value, fmt))
        return
    text = table(headers, rows(), header=not quiet)
    if text:
        click.echo(text)


def emit_ids(ids: Sequence[str], fmt: str) -> None:
    """What ``-q`` prints: the IDs, one a line in a table, or a list in JSON or YAML."""
    if fmt not in TABLES:
        click.echo(dump(list(ids), fmt))
    elif ids:
        click.echo("\n".join(printable(i) for i in ids))


def age(seconds: float | None) -> str:
    """A duration as a table shows it, to two units at most: ``45s``, ``5m``, ``5m30s``,
    ``2h3m``, ``4d2h``; ``-`` when unknown. Negative (a clock that went back) counts as 0."""
    if seconds is None:
        return "-"
    total = max(int(seconds), 0)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                          ("m", 60, "s", 1)):
        if total >= size:
            big, rest = divmod(total, size)
            part = rest // small_size
            return f"{big}{unit}{part}{small}" if part and big < 10 else f"{big}{unit}"
    return f"{total}s"


def iso(t: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC timestamp
    (``2026-11-29T22:41:05.123Z``), as JSON, YAML and the detailed views show times."""
    if t is None:
        return None
    import datetime

    text = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="milliseconds")
    return text.replace("+00:00", "Z")


def readable(value: Any) -> Any:
    """An instance's properties as a person reads them: the times in them (seconds since
    the epoch under a time's name, :func:`infrakit.spi.facts.is_time`) as ISO 8601."""
    from infrakit.spi.facts import is_time

    if isinstance(value, dict):
        return {k: iso(v) if is_time(str(k), v) else readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value


def quiet_option(what: str = "Print rows without column headers.") -> Callable[[F], F]:
    """``-q/--quiet``, as the reference's CLI has it."""
    return click.option("-q", "--quiet", is_flag=True, help=what)


def format_tags(tags: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))
