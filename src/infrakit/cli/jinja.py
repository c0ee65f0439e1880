"""Rendering a spec template with Jinja2, in its sandbox.

Only :mod:`infrakit.cli.template` imports this module, and only when a file is to be
rendered: Jinja2 takes longer to import than the rest of a command that does not need it.
See that module for what a template sees.
"""

from __future__ import annotations

import os
import posixpath
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from infrakit.spi.types import MAX_BODY

MAX_RENDERED = 4 * MAX_BODY
"""The most text a template may render to (16 MiB): a loop gone wrong stops there, long
before it would exhaust memory."""
STDIN = "standard input"
_UNDEFINED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined")
_MISSING = object()


class RenderError(Exception):
    """A template that cannot be rendered; the message names the file and line."""


def render(text: str, source: str, variables: dict[str, Any]) -> str:
    """``text``, read from ``source`` (a path, or ``-`` for standard input), rendered with
    ``variables``; files it includes are read from ``source``'s directory (for standard
    input, the current one) and below."""
    name = STDIN if source == "-" else os.path.basename(source)
    shown_dir = "" if source == "-" else os.path.dirname(source)
    loader = _Loader(Path(shown_dir or "."), shown_dir, name, text)
    environment = _Environment(loader=loader, undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True, trim_blocks=True,
                               lstrip_blocks=True, autoescape=False)
    environment.globals["env"] = _env
    parts: list[str] = []
    size = 0
    try:
        for part in environment.get_template(name).generate(variables):
            size += len(part)
            if size > MAX_RENDERED:
                raise jinja2.TemplateError(
                    f"renders to more than {MAX_RENDERED // 2**20} MiB; refused")
            parts.append(part)
    except jinja2.TemplateSyntaxError as exc:
        shown = loader.shown.get(exc.filename or "", STDIN if source == "-" else source)
        raise RenderError(f"{shown}, line {exc.lineno}: {exc.message}") from None
    except (jinja2.TemplateError, RecursionError) as exc:
        raise RenderError(_message(exc, loader, STDIN if source == "-" else source)) from None
    return "".join(parts)


def _message(exc: BaseException, loader: _Loader, where: str) -> str:
    """An error met while rendering, with the file and line it was met at: the frames of
    a template's compiled code carry the template's file name and line numbers."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename in loader.shown:
            where = f"{loader.shown[frame.filename]}, line {frame.lineno}"
            break
    if isinstance(exc, RecursionError):
        return f"{where}: includes itself, directly or through another file"
    message = str(exc) or type(exc).__name__
    undefined = _UNDEFINED.fullmatch(message)
    if undefined:
        message += (f" (give it with --var {undefined[1]}=VALUE or in a --vars file, or a "
                    "default in the template: {{ " f"{undefined[1]} | default(...) " "}})")
    return f"{where}: {message}"


class _Environment(jinja2.sandbox.SandboxedEnvironment):
    def join_path(self, template: str, parent: str) -> str:
        """A name is relative to the file that names it, as the reference's ``include``
        was; one that starts with ``/`` is relative to the top directory."""
        if template.startswith("/"):
            return template
        return posixpath.normpath(posixpath.join(posixpath.dirname(parent), template))


def _env(name: str, default: Any = _MISSING) -> Any:
    """``env("NAME")``: the variable's value, an error naming it when it is unset;
    ``env("NAME", "default")``: the default then."""
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is _MISSING:
        raise jinja2.TemplateRuntimeError(
            f"the environment variable {name} is not set (set it, or give a default: "
            f'env("{name}", "default"))')
    return default


class _Loader(jinja2.FileSystemLoader):
    """The files of one directory and below it, and the file being rendered, already read
    (it may be standard input). ``shown`` maps the file names Jinja2 gives the compiled
    templates to the names the user knows the files by."""

    def __init__(self, root: Path, shown_dir: str, name: str, text: str) -> None:
        super().__init__(str(root), followlinks=False)
        self.root = root.resolve()
        self.shown_dir = shown_dir
        self.name = name
        self.text = text
        self.shown: dict[str, str] = {}

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        if template == self.name:
            filename = template if template == STDIN else str(self.root / template)
            self.shown[filename] = os.path.join(self.shown_dir, template)
            return self.text, filename, lambda: True
        parts = [p for p in template.split("/") if p not in ("", ".")]
        shown = os.path.join(self.shown_dir, *parts)
        if ".." in parts or not (self.root / "/".join(parts)).resolve().is_relative_to(
                self.root):
            raise jinja2.TemplateError(
                f"{template!r} is outside {self.shown_dir or '.'}/: a template reads only "
                "files in its own directory and below it")
        try:
            source, filename, uptodate = super().get_source(environment, template)
        except jinja2.TemplateNotFound:
            raise jinja2.TemplateError(f"{shown}: no such file") from None
        except UnicodeDecodeError:
            raise jinja2.TemplateError(f"{shown} is not UTF-8 text") from None
        self.shown[filename] = shown
        return source, filename, uptodate
