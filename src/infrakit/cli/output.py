"""Printing results as a table, JSON or YAML (``--output``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

FORMATS = ("table", "json", "yaml")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(default: str = "table") -> Callable[[F], F]:
    """The ``--output/-o`` option of every read command, and ``-y/--yaml``, the
    reference's way to ask for YAML."""
    choice = click.option(
        "--output", "-o", type=click.Choice(FORMATS), default=default, show_default=True,
        help="How to print the result.")
    yaml = click.option("-y", "--yaml", "output", flag_value="yaml",
                        help="Print YAML (the same as -o yaml).")

    def both(fn: F) -> F:
        return choice(yaml(fn))

    return both


def to_data(value: Any) -> Any:
    """Wire structs to plain JSON-shaped data, with their wire (PascalCase) names."""
    return msgspec.to_builtins(value)


def dump(value: Any, fmt: str) -> str:
    """``value`` as JSON or YAML text."""
    data = to_data(value)
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False)).rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """A plain left-aligned table, with a header row unless ``header`` is false."""
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
    """Print ``value`` as ``fmt``; ``rows`` builds the table form only when it is asked for
    (without its header when ``quiet``)."""
    if fmt != "table":
        click.echo(dump(value, fmt))
        return
    text = table(headers, rows(), header=not quiet)
    if text:
        click.echo(text)


def quiet_option(what: str = "Print rows without column headers.") -> Callable[[F], F]:
    """``-q/--quiet``, as the reference's CLI has it."""
    return click.option("-q", "--quiet", is_flag=True, help=what)


def format_tags(tags: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))
