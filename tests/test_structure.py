"""The layers of DESIGN.md, checked on the source: which package may import which, and how
long a function or a class may grow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "infrakit"

#: Package (or module) -> the infrakit packages it may import besides itself.
MAY_IMPORT = {
    "spi": set(),
    "rpc": {"spi"},
    "plugins.group": {"spi"},
    "plugins.flavor.combo": {"spi"},
    # the console: pages over the group plugin's verbs; from the CLI only how text is
    # made printable, so that a terminal and a page show a value alike
    "console": {"spi", "rpc", "plugins.group", "cli.output"},
}
#: Packages nothing under ``plugins`` may import: they are built on the plugins.
ABOVE_PLUGINS = ("manager", "cli", "store", "console")


def _modules() -> dict[str, ast.Module]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts): ast.parse(p.read_text())
            for p in SRC.rglob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    """The infrakit modules ``tree`` imports, without the ``infrakit.`` prefix."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {n.removeprefix("infrakit.") for n in found if n.startswith("infrakit.")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_layer_imports_only_the_layers_before_it(package: str) -> None:
    allowed = (package, "settings", *MAY_IMPORT[package])  # settings: stdlib only, for all
    wrong = {f"{mod} imports {imp}" for mod, tree in _modules().items() if _within(mod, package)
             for imp in _imports(tree) if not any(_within(imp, a) for a in allowed)}
    assert not wrong, sorted(wrong)


def test_no_arrow_runs_back_up_from_the_plugins() -> None:
    wrong = {f"{mod} imports {imp}" for mod, tree in _modules().items()
             if _within(mod, "plugins") for imp in _imports(tree)
             if any(_within(imp, above) for above in ABOVE_PLUGINS)}
    assert not wrong, sorted(wrong)


def test_no_function_over_60_lines_and_no_class_over_250() -> None:
    long = []
    for mod, tree in _modules().items():
        for node in ast.walk(tree):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 \
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else 0
            limit = 250 if isinstance(node, ast.ClassDef) else 60
            if size > limit:
                long.append(f"{mod}.{getattr(node, 'name', '?')}: {size} lines")
    assert not long, long
