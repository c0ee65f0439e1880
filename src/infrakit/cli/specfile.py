"""Reading the JSON or YAML documents that commands take as ``FILE`` or ``-``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from infrakit.spi.types import MAX_BODY

if TYPE_CHECKING:
    from infrakit.cli.template import TemplateInput

T = TypeVar("T")


class SpecFileError(click.ClickException):
    """A document that cannot be read or is neither JSON nor YAML."""


MAX_EXPANDED = 4 * MAX_BODY
"""The most a YAML document may stand for once its aliases are expanded, as JSON (16
MiB): more than a plugin accepts in one call, far less than would exhaust memory."""


def read_text(source: str) -> str:
    """The text of ``source``: a path, or ``-`` for standard input."""
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecFileError(f"{source} is not UTF-8 text") from None


def read_document(source: str, template: TemplateInput | None = None) -> Any:
    """Parse ``source`` (a path, or ``-`` for standard input) as JSON, else as YAML; a
    template is rendered first (see :mod:`infrakit.cli.template`). A YAML
    document whose aliases expand it beyond :data:`MAX_EXPANDED`, or that contains itself,
    is refused, as is one nested too deeply to read."""
    from infrakit.cli.template import rendered

    text = read_text(source)
    where = "standard input" if source == "-" else source
    text, where = rendered(text, source, where, template)
    try:
        return _parse(text, where)
    except RecursionError:
        raise SpecFileError(f"{where}: nested too deeply to read") from None


def _parse(text: str, where: str) -> Any:
    """JSON, else (unless its name ends in ``.json``) YAML; when it is neither, the error
    of the one it was meant to be (by its name's suffix, else by its first character), at
    its line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        if Path(where).suffix.lower() == ".json":  # YAML would read a trailing comma
            raise SpecFileError(_syntax_error(where, text, json_error, json_error)) from None
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecFileError(_syntax_error(where, text, json_error, exc)) from None
        if not isinstance(data, (dict, list)):
            raise SpecFileError(f"{where}: not a JSON or YAML document (a mapping or a list)"
                                ) from None
        _check_expansion(data, where)
        return data


def _syntax_error(where: str, text: str, json_error: json.JSONDecodeError,
                  yaml_error: Exception) -> str:
    """Where and why the document cannot be read, as JSON if it looks like JSON."""
    suffix = Path(where).suffix.lower()
    as_json = suffix == ".json" or (suffix not in (".yml", ".yaml")
                                    and text.lstrip()[:1] in ("{", "["))
    if as_json:
        return (f"{where}, line {json_error.lineno}, column {json_error.colno}: not valid "
                f"JSON: {json_error.msg}")
    mark = getattr(yaml_error, "problem_mark", None)
    problem = getattr(yaml_error, "problem", None) or str(yaml_error).splitlines()[0]
    context = getattr(yaml_error, "context", None)
    context_mark = getattr(yaml_error, "context_mark", None)
    said = problem
    if context and context_mark and (mark is None or context_mark.line != mark.line
                                     or context_mark.column != mark.column):
        said += f" ({context} at line {context_mark.line + 1}, column " \
                f"{context_mark.column + 1})"
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{where}{at}: not valid YAML: {said}"


def _check_expansion(data: dict[Any, Any] | list[Any], where: str) -> None:
    """Refuse ``data`` if it contains itself, or if written out as JSON it would be larger
    than :data:`MAX_EXPANDED`. YAML's loader makes an alias the very object its anchor
    names, so nine lines can hold a list of nine lists of nine ... of 387 million strings
    in a few kilobytes of memory; writing it out (to send it) would take gigabytes. Each
    list and mapping is measured once, however many aliases name it, so measuring costs
    no more than the document itself."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # lists and mappings whose insides are being measured
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, measured_inside = stack.pop()
        key = id(node)
        if measured_inside:
            open_.discard(key)
            sizes[key] = size = _json_size(node, sizes)
            if size > MAX_EXPANDED:
                raise SpecFileError(f"{where}: its YAML aliases expand it to more than "
                                    f"{MAX_EXPANDED // 2**20} MiB; refused (a plugin "
                                    f"accepts at most {MAX_BODY // 2**20} MiB in one call)")
        elif key not in sizes:
            if key in open_:
                raise SpecFileError(f"{where}: a YAML alias refers to a node that contains it")
            open_.add(key)
            stack.append((node, True))
            stack += [(c, False) for c in _values(node) if isinstance(c, (dict, list))]


def _values(node: dict[Any, Any] | list[Any]) -> Any:
    return node.values() if isinstance(node, dict) else node


def _json_size(node: dict[Any, Any] | list[Any], sizes: dict[int, int]) -> int:
    """About how many bytes ``node`` takes as JSON, its lists and mappings as ``sizes``
    has them."""

    def size(value: Any) -> int:
        if isinstance(value, (dict, list)):
            return sizes[id(value)]
        return len(value) + 2 if isinstance(value, str) else len(str(value))

    total = 2 + max(len(node) - 1, 0)  # brackets and commas
    if isinstance(node, dict):
        return total + sum(size(k) + 1 + size(v) for k, v in node.items())
    return total + sum(size(v) for v in node)


def read_as(source: str, into: type[T], what: str, template: TemplateInput | None = None
            ) -> T:
    """Read ``source`` and convert it to ``into``; errors name the field and the reason
    (an unknown one with the field it most likely misspells)."""
    from infrakit.spi.errors import PluginError
    from infrakit.spi.strict import decode_strict

    data = read_document(source, template)
    try:
        decoded: T = decode_strict(data, into)
    except PluginError as exc:
        where = "standard input" if source == "-" else source
        raise SpecFileError(f"{where}: not a valid {what}: {exc}") from None
    return decoded


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """``k=v`` arguments into a dict; names the bad one."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not of the form key=value", param_hint=option)
        out[key] = value
    return out


_PATH = re.compile(r"((?:Properties|ID)(?:\.[^\s.:\[\]]+|\[[0-9]+\])*): ")


def located(source: str, message: str) -> str:
    """``message``, an error about the document in ``source`` that starts with the path of
    a field (``Properties.Alocation: unknown field; ...``, as plugins phrase them), led by
    the file and the line where that field is written; as it is when the line cannot be
    told (standard input, a path the file does not hold)."""
    found = _PATH.match(message)
    if source == "-" or found is None:
        return message
    try:
        import yaml

        node = yaml.compose(Path(source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return message
    line = None
    for part in re.findall(r"[^.\[\]]+|\[[0-9]+\]", found.group(1)):
        node, line = _step(node, part, line)
        if node is None:
            break
    return f"{source}, line {line}: {message}" if line else message


def _step(node: Any, part: str, line: int | None) -> tuple[Any, int | None]:
    """The node ``part`` names below ``node``, and the line of its key (or, for a key the
    node lacks, the node's own line, where the stray key sits)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return value, key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
        index = int(part[1:-1])
        if index < len(node.value):
            item = node.value[index]
            return item, item.start_mark.line + 1
    return None, line
