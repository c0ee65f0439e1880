"""Spec files as Jinja2 templates: the options that ask for one, the decision to render,
and ``infrakit template render``.

A spec file whose name ends in ``.j2`` (or any, with ``--template``) is rendered before it
is read as JSON or YAML, so that one file can describe many similar groups, as the
reference InfraKit's configs could. It is rendered in Jinja2's sandbox, which refuses to
reach Python's internals from a template, with strict undefined names: a name nobody gave
is an error, never an empty string in a spec. A template sees

- the variables of ``--vars FILE`` (a JSON or YAML mapping) and of ``--var NAME=VALUE``
  (which wins);
- the files it includes, imports or extends, named relative to the file that names them,
  read only from the directory of the file being rendered and below it;
- the environment only through ``env("NAME")`` (an error when unset) or
  ``env("NAME", "default")``: what reaches a spec from the caller's shell is written in
  the spec.

Every error names the template file and its line. Jinja2 is imported only to render
(:mod:`infrakit.cli.jinja`), so the commands that do not start without it.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import click

from infrakit.cli.specfile import SpecFileError, read_document, read_text

F = TypeVar("F", bound=Callable[..., Any])

SUFFIX = ".j2"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = frozenset({"env"})


@dataclass(frozen=True)
class TemplateInput:
    """How the user asked for a spec file to be rendered: always (``--template``) or only
    when its name ends in ``.j2``, and with which variables."""

    always: bool = False
    variables: dict[str, Any] = field(default_factory=dict)


def is_template(source: str, template: TemplateInput | None) -> bool:
    """Whether ``source`` is rendered before it is read."""
    return (template is not None and template.always) or source.endswith(SUFFIX)


def rendered(text: str, source: str, where: str, template: TemplateInput | None
             ) -> tuple[str, str]:
    """``text`` of ``source`` (called ``where`` in messages) rendered when it is a
    template, and what to call it then; as it is when it is not one."""
    template = template or TemplateInput()
    if not is_template(source, template):
        if template.variables:
            raise SpecFileError(f"{where}: template variables were given, but it is not a "
                                f"template (its name does not end in {SUFFIX}): add "
                                "--template to render it")
        return text, where
    from infrakit.cli.jinja import RenderError, render

    try:
        return render(text, source, template.variables), f"{where} (as rendered)"
    except RenderError as exc:
        raise SpecFileError(str(exc)) from None


def template_input(always: bool, pairs: tuple[str, ...], vars_file: str | None
                   ) -> TemplateInput:
    """The options of :func:`template_options` as a :class:`TemplateInput`; bad ones are
    refused naming the option and the reason."""
    variables: dict[str, Any] = {}
    if vars_file is not None:
        loaded = read_document(vars_file)
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"{vars_file} holds a list, not a mapping of names to "
                                     "values", param_hint="--vars")
        for name in loaded:
            _check_name(name, "--vars")
        variables.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not of the form NAME=VALUE",
                                     param_hint="--var")
        _check_name(name, "--var")
        variables[name] = _scalar(value)
    return TemplateInput(always, variables)


def _check_name(name: object, option: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise click.BadParameter(f"{name!r} is not a name a template can use (letters, digits "
                                 "and _, not first a digit)", param_hint=option)
    if name in _RESERVED:
        raise click.BadParameter(f"{name!r} is the function env(), not a variable",
                                 param_hint=option)


def _scalar(value: str) -> Any:
    """A ``--var`` value: a whole number or ``true``/``false`` as such, so that a template
    can count with it and test it, as the reference's ``--var`` could; any other text as
    it is."""
    if re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    return {"true": True, "false": False}.get(value, value)


_VAR_HELP = ("A template variable (repeatable; wins over --vars). A whole number or "
             "true/false is one, anything else text.")
_VARS_HELP = "Template variables: a JSON or YAML mapping of names to values."


def template_options(command: F) -> F:
    """Add ``--template``, ``--var`` and ``--vars`` to a command that reads a spec file;
    it is given them as one ``template`` argument, a :class:`TemplateInput`."""

    @functools.wraps(command)
    def run(*args: Any, always: bool, pairs: tuple[str, ...], vars_file: str | None,
            **kwargs: Any) -> Any:
        return command(*args, template=template_input(always, pairs, vars_file), **kwargs)

    run = click.option("--vars", "vars_file", metavar="FILE", help=_VARS_HELP)(run)
    run = click.option("--var", "pairs", multiple=True, metavar="NAME=VALUE",
                       help=_VAR_HELP)(run)
    run = click.option("--template", "always", is_flag=True,
                       help=f"Render FILE as a Jinja2 template (a name ending in {SUFFIX} "
                            "always is): see `infrakit template --help`.")(run)
    return cast(F, run)


@click.group("template")
def command() -> None:
    """Spec files as Jinja2 templates.

    `group commit` and `manager commit` render a FILE whose name ends in .j2, or any FILE
    given --template, then read the result as JSON or YAML. Rendering runs in Jinja2's
    sandbox, and a name the template uses that nobody gave is an error. A template sees:

    \b
      {{ name }}                  --var name=VALUE, or name in a --vars FILE
      {% include "part.yml" %}    a file beside it or below it (never above it)
      {{ env("HOME") }}           an environment variable (an error if it is unset)
      {{ env("TAG", "latest") }}  ... or else a default

    Errors name the file and the line.
    """


@command.command("render")
@click.argument("file", metavar="FILE|-")
@click.option("--var", "pairs", multiple=True, metavar="NAME=VALUE", help=_VAR_HELP)
@click.option("--vars", "vars_file", metavar="FILE", help=_VARS_HELP)
def render_command(file: str, pairs: tuple[str, ...], vars_file: str | None) -> None:
    """Print FILE rendered, as a commit would read it, whatever its name ends in."""
    template = template_input(True, pairs, vars_file)
    text, _ = rendered(read_text(file), file, file, template)
    sys.stdout.write(text)
