"""Reading the JSON or YAML documents that commands take as ``FILE`` or ``-``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

T = TypeVar("T")


class SpecFileError(click.ClickException):
    """A document that cannot be read or is neither JSON nor YAML."""


def read_document(source: str) -> Any:
    """Parse ``source`` (a path, or ``-`` for standard input) as JSON, else as YAML."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecFileError(f"{source} is not UTF-8 text") from None
    where = "standard input" if source == "-" else source
    try:
        return json.loads(text)
    except ValueError as json_error:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecFileError(
                f"{where} is neither JSON ({json_error}) nor YAML "
                f"({str(exc).splitlines()[0]})"
            ) from None
        if not isinstance(data, (dict, list)):
            raise SpecFileError(
                f"{where} is neither JSON ({json_error}) nor a YAML mapping or list"
            ) from None
        return data


def read_as(source: str, into: type[T], what: str) -> T:
    """Read ``source`` and convert it to ``into``; errors name the field and the reason."""
    data = read_document(source)
    try:
        return msgspec.convert(data, into)
    except msgspec.ValidationError as exc:
        raise SpecFileError(f"{source}: not a valid {what}: {exc}") from None


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """``k=v`` arguments into a dict; names the bad one."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not of the form key=value", param_hint=option)
        out[key] = value
    return out
