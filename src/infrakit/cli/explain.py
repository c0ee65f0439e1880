"""``infrakit explain``: the group spec's fields, their types, defaults and meaning, as
``kubectl explain`` shows a resource's.

Everything printed is read from the typed spec itself (the structs' fields, their
``Meta(description=...)`` and the first paragraph of their docstrings), which is also what
checks a spec: the reference cannot drift from what is accepted. docs/spec.md is this
module's :func:`reference_page`.
"""

from __future__ import annotations

import re
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import click
import msgspec

WIDTH = 88
"""Columns the text is wrapped to, whatever the terminal: docs/spec.md is the same text."""


@dataclass
class Node:
    """One field of the spec (or its root), and the fields below it."""

    path: str
    type: str
    description: str
    default: str = ""
    fields: list[Node] = field(default_factory=list)
    struct: str = ""
    """The struct's own description, for a field that is an object."""


def _roots() -> dict[str, Node]:
    """The specs ``explain`` knows, by name: ``group``, with its ``Properties`` as the
    default group plugin reads them."""
    from infrakit.plugins.group.spec import GroupProperties
    from infrakit.spi.group import GroupSpec

    group = _node("group", GroupSpec, "object", "", overrides={"Properties": GroupProperties})
    return {"group": group}


def _node(path: str, struct: type[msgspec.Struct], type_name: str, description: str,
          default: str = "", overrides: dict[str, type[msgspec.Struct]] | None = None) -> Node:
    node = Node(path, type_name, description, default, struct=_first_paragraph(struct))
    for info in msgspec.structs.fields(struct):
        base, metadata = _unwrapped(info.type)
        about = " ".join(m.description for m in metadata
                         if isinstance(m, msgspec.Meta) and m.description)
        inner = (overrides or {}).get(info.encode_name) or _struct_in(base)
        where = f"{path}.{info.encode_name}"
        if inner is not None:
            node.fields.append(_node(where, inner, "object", about))
        else:
            node.fields.append(Node(where, _type_name(base, metadata), about,
                                    _default(info, metadata)))
    return node


def _first_paragraph(struct: type) -> str:
    """What a struct's docstring says to its users: the first paragraph."""
    return _plain((struct.__doc__ or "").split("\n\n")[0])


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``Properties`` as Properties, one line."""
    return " ".join(re.sub(r"``([^`]*)``", r"\1", text).split())


def _unwrapped(kind: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(kind) is typing.Annotated:
        return kind.__origin__, kind.__metadata__
    return kind, ()


def _options(kind: Any) -> tuple[Any, ...]:
    """The types a union is made of, without None; a plain type alone."""
    import types

    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(o for o in typing.get_args(kind) if o is not type(None))
    return (kind,)


def _struct_in(kind: Any) -> type[msgspec.Struct] | None:
    found = [o for o in _options(kind) if isinstance(o, type) and issubclass(o, msgspec.Struct)]
    return found[0] if len(found) == 1 else None


_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _type_name(kind: Any, metadata: tuple[Any, ...] = ()) -> str:
    """A field's type as the spec's author writes it: ``integer``, ``duration``,
    ``[]string``, ``"newest" or "oldest"``, ``any``."""
    from infrakit.spi.durations import is_duration

    if is_duration(metadata):
        return "duration"
    names = []
    for option in _options(_unwrapped(kind)[0]):
        if typing.get_origin(option) is Literal:
            names += [f'"{v}"' for v in typing.get_args(option)]
        elif typing.get_origin(option) is list:
            names.append("[]" + _type_name(typing.get_args(option)[0]))
        elif option is Any:
            names.append("any")
        else:
            names.append(_NAMES.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(names)


def _default(info: msgspec.structs.FieldInfo, metadata: tuple[Any, ...]) -> str:
    """The default as a spec would give it; empty when there is none worth saying."""
    from infrakit.spi.durations import format_duration, is_duration

    value = info.default
    if value is msgspec.NODEFAULT or value is None or value == "":
        return ""
    if is_duration(metadata):
        return format_duration(float(value))
    return f'"{value}"' if isinstance(value, str) else str(value)


def find(path: str) -> Node:
    """The node at ``path`` (``group.Properties.Allocation``; any letter case). Raises
    :class:`click.BadParameter` naming the first part that is not a field, with the field
    it most likely meant."""
    from infrakit.spi.strict import unknown_field

    roots = _roots()
    first, *rest = path.strip(".").split(".")
    node = roots.get(first.lower())
    if node is None:
        raise click.BadParameter(f"{first!r} is not a spec explain knows; it knows: "
                                 f"{', '.join(roots)}", param_hint="FIELD")
    for part in rest:
        by_name = {f.path.rpartition(".")[2]: f for f in node.fields}
        found = next((f for n, f in by_name.items() if n.lower() == part.lower()), None)
        if found is None:
            raise click.BadParameter(unknown_field(node.path, part, by_name), param_hint="FIELD")
        node = found
    return node


def _wrapped(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, WIDTH, initial_indent=pad, subsequent_indent=pad) or [pad]


def _field_line(node: Node) -> str:
    name = node.path.rpartition(".")[2]
    return f"{name}  <{node.type}>" + (f"  default: {node.default}" if node.default else "")


def explain(node: Node) -> str:
    """``node`` as ``infrakit explain`` prints it: its type and default, its meaning, and
    for an object each of its fields."""
    from infrakit.spi.durations import FORMS

    lines = [f"FIELD:    {node.path} <{node.type}>"]
    if node.default:
        lines.append(f"DEFAULT:  {node.default}")
    lines += ["", "DESCRIPTION:"]
    duration = f"A duration is {FORMS}." if node.type == "duration" else ""
    for text in filter(None, (node.description, node.struct, duration)):
        lines += [*_wrapped(text, 4), ""]
    lines.pop()
    if node.fields:
        lines += ["", "FIELDS:"]
        for sub in node.fields:
            lines += [f"  {_field_line(sub)}", *_wrapped(sub.description or "-", 6), ""]
        lines.pop()
    return "\n".join(lines)


def tree(node: Node, depth: int = 0) -> list[str]:
    """``node`` and every field below it, one a line, indented by depth."""
    lines = [f"{'  ' * depth}{_field_line(node) if depth else node.path}"]
    for sub in node.fields:
        lines += tree(sub, depth + 1)
    return lines


def _objects(node: Node) -> list[Node]:
    """``node`` and every object below it, in the order a reader meets them."""
    return [node] + [o for sub in node.fields if sub.fields for o in _objects(sub)]


EXAMPLE = """\
ID: web
Properties:
  Allocation:
    Size: 5
  Instance:
    Plugin: instance-process
    Properties:
      Command: python3 -m http.server --bind 127.0.0.1 $PORT_HTTP
      Ports: [http]
      StopGrace: 5s
  Flavor:
    Plugin: flavor-vanilla
    Properties:
      Health: {HTTP: "http://127.0.0.1:{{ .Properties.Ports.http }}/", Timeout: 500ms}
  HealthGrace: 2m
  StartupGrace: 10s
  MaxSurge: 2
"""
"""A spec that uses the durations and tunables, in docs/spec.md; tests/test_explain.py
commits it with ``--pretend``, so that it stays a spec the group accepts."""


def reference_page() -> str:
    """docs/spec.md: every object of the group spec as ``infrakit explain`` prints it."""
    root = _roots()["group"]
    parts = [
        "# The group spec\n",
        "What `infrakit group commit` and `infrakit manager commit` take, in JSON or YAML. "
        "This page is written by `scripts/spec_reference.py` from the same typed spec that "
        "checks every commit; `infrakit explain group.Properties.HealthGrace` prints any "
        "one part of it.\n",
        "A key the group does not know is refused, with its path and the field it most "
        "likely meant. Inside `Instance.Properties` and `Flavor.Properties` the keys are "
        "the plugin's own: that plugin checks them.\n",
        "```text", *tree(root), "```\n",
        "For example, five members of `instance-process` that answer on a port, replaced "
        "after two minutes unhealthy, updated two at a time:\n",
        "```yaml", EXAMPLE.rstrip("\n"), "```\n",
    ]
    for node in _objects(root):
        parts += [f"## {node.path}\n", "```text", explain(node), "```\n"]
    return "\n".join(parts)


@click.command("explain", short_help="Show the group spec's fields: types, defaults, meaning.")
@click.argument("path", metavar="[FIELD]", default="group")
@click.option("-r", "--recursive", is_flag=True, help="List every field below FIELD, "
              "with its type and default.")
def command(path: str, recursive: bool) -> None:
    """Show a field of the group spec: its type, default and meaning, and the fields in
    it, like `kubectl explain`. FIELD is a path: group (the default), group.Properties,
    group.Properties.Allocation, group.Properties.HealthGrace, ... in any letter case.
    Every page of it is in docs/spec.md too."""
    node = find(path)
    click.echo("\n".join(tree(node)) if recursive else explain(node))
