"""A group plugin's plan for a spec (``Group.PlanGroup``), shown as ``terraform plan``
shows one: the fields that change, marked ``~`` changed, ``+`` added and ``-`` removed
(in colour on a terminal), then what will happen to the members."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from infrakit.cli.output import printable

if TYPE_CHECKING:
    from infrakit.spi.group import FieldChange, GroupPlan

_MARKS = {"changed": ("~", "yellow"), "added": ("+", "green"), "removed": ("-", "red")}


def plan_text(plan: GroupPlan) -> str:
    """The plan as lines for a terminal (colours are dropped by ``click.echo`` elsewhere)."""
    gid = printable(plan.id)
    if not plan.changed:
        return f"group {gid}: no change"
    n = len(plan.fields)
    head = (f"group {gid}: new group" if plan.new_group
            else f"group {gid}: {n} field{'' if n == 1 else 's'} changed")
    lines = [head, *(_field(f) for f in plan.fields)]
    lines += ["", "plan:", *(f"  {printable(s)}" for s in plan.steps)]
    lines += [f"note: {printable(n)}" for n in plan.notes or ()]
    return "\n".join(lines)


def _field(change: FieldChange) -> str:
    from infrakit.plugins.group.wording import shown

    mark, colour = _MARKS[change.change]
    if change.change == "changed":
        value = f"{shown(change.old)} → {shown(change.new)}"
    else:
        value = shown(change.new if change.change == "added" else change.old)
    return click.style(f"  {mark} {printable(change.path)}: {printable(value)}", fg=colour)
