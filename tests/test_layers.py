"""The package's layers: a module imports from its own layer and from the layers its row names, never
from a layer above it. Every import counts, wherever it is written: at the top of a module, inside a
function, or under ``if TYPE_CHECKING:``.

| layer | modules | may import |
|---|---|---|
| version | `kmm_dtk/__init__.py` (only `__version__`) | nothing |
| core | `kmm_dtk/core/` | nothing |
| observability | `kmm_dtk/observability/` | nothing |
| registry | `kmm_dtk/registry/` | version, core |
| kube | `kmm_dtk/kube/` | core, observability |
| operator | `kmm_dtk/operator/` | every row above |
| cli | `kmm_dtk/cli.py`, `release_cli.py`, `registry_flags.py`, `dump.py`, `__main__.py`, `cmd/` | every row above |

The imports are read from the source with ``ast``; nothing is imported. README's Layout section
holds the same table.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kmm_dtk"


@dataclass(frozen=True)
class Layer:
    name: str
    packages: tuple[str, ...]  # these packages and everything under them
    modules: tuple[str, ...]  # these modules exactly
    described: str  # the table's "modules" cell
    may_import: tuple[str, ...]


LAYERS = (
    Layer("version", (), ("kmm_dtk",), "`kmm_dtk/__init__.py` (only `__version__`)", ()),
    Layer("core", ("kmm_dtk.core",), (), "`kmm_dtk/core/`", ()),
    Layer("observability", ("kmm_dtk.observability",), (), "`kmm_dtk/observability/`", ()),
    Layer("registry", ("kmm_dtk.registry",), (), "`kmm_dtk/registry/`", ("version", "core")),
    Layer("kube", ("kmm_dtk.kube",), (), "`kmm_dtk/kube/`", ("core", "observability")),
    Layer("operator", ("kmm_dtk.operator",), (), "`kmm_dtk/operator/`",
          ("version", "core", "observability", "registry", "kube")),
    Layer("cli", ("kmm_dtk.cmd",), ("kmm_dtk.cli", "kmm_dtk.release_cli", "kmm_dtk.registry_flags", "kmm_dtk.dump",
                                     "kmm_dtk.__main__"),
          "`kmm_dtk/cli.py`, `release_cli.py`, `registry_flags.py`, `dump.py`, `__main__.py`, `cmd/`",
          ("version", "core", "observability", "registry", "kube", "operator")),
)
BY_NAME = {layer.name: layer for layer in LAYERS}


def table() -> str:
    rows = ["| layer | modules | may import |", "|---|---|---|"]
    for index, layer in enumerate(LAYERS):
        above = tuple(earlier.name for earlier in LAYERS[:index])
        allowed = "every row above" if index > 1 and layer.may_import == above else ", ".join(layer.may_import)
        rows.append(f"| {layer.name} | {layer.described} | {allowed or 'nothing'} |")
    return "\n".join(rows)


def layer_of(module: str) -> Layer | None:
    for layer in LAYERS:
        if module in layer.modules or any(module == p or module.startswith(p + ".") for p in layer.packages):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    line: int
    statement: str  # as written
    target: str  # the module of the package it reaches


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import of a ``kmm_dtk`` module in ``source``, wherever it stands (``ast.walk`` enters
    functions, classes and ``if`` blocks alike). ``from P import name`` reaches the submodule
    ``P.name`` when there is one, else ``P`` itself."""
    found = []
    own_package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            for alias in node.names:
                submodule = f"{source_module}.{alias.name}"
                targets.append(submodule if submodule in known else source_module)
        for target in dict.fromkeys(targets):
            if target == "kmm_dtk" or target.startswith("kmm_dtk."):
                found.append(Import(node.lineno, ast.unparse(node), target))
    return found


def violations(path: str, source: str, module: str, is_package: bool, known: set[str]) -> list[str]:
    """One line per import that leaves the module's layer for one its row does not name."""
    own = layer_of(module)
    if own is None:
        return [f"{path}: {module} is in no layer: add it to the table in {Path(__file__).name} and README"]
    problems = []
    for imp in imports_of(source, module, is_package, known):
        target = layer_of(imp.target)
        if target is None:
            problems.append(f"{path}:{imp.line}: `{imp.statement}` reaches {imp.target}, which is in no layer")
        elif target is not own and target.name not in own.may_import:
            problems.append(
                f"{path}:{imp.line}: `{imp.statement}` imports {imp.target} ({target.name} layer), but the "
                f"{own.name} layer may import {', '.join(own.may_import) or 'nothing'} of the package")
    return problems


def test_no_layer_imports_upward() -> None:
    modules = package_modules()
    assert len(modules) > 40, "the package was not found"
    problems = []
    for module, path in modules.items():
        problems += violations(path.relative_to(ROOT).as_posix(), path.read_text(), module,
                               path.name == "__init__.py", set(modules))
    assert problems == [], "imports against the layering:\n" + "\n".join(problems)


def test_the_rules_are_the_tables_of_this_docstring_and_readme() -> None:
    assert table() in (__doc__ or ""), "the docstring's table and LAYERS disagree"
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in table().splitlines() if row not in readme.splitlines()]
    assert missing == [], f"README's Layout table lacks: {missing}"


def test_may_import_names_only_layers_below() -> None:
    """Each layer's row names only layers of rows above it: the table is an order, so no cycles."""
    seen: set[str] = set()
    for layer in LAYERS:
        assert set(layer.may_import) <= seen, f"{layer.name} may import a layer listed after it"
        seen.add(layer.name)


KNOWN = {"kmm_dtk", "kmm_dtk.core", "kmm_dtk.core.plan", "kmm_dtk.kube", "kmm_dtk.kube.client",
         "kmm_dtk.observability", "kmm_dtk.observability.metrics", "kmm_dtk.operator", "kmm_dtk.operator.app"}


@pytest.mark.parametrize("source, line, target", [
    ("import kmm_dtk.kube.client\n", 1, "kmm_dtk.kube.client"),
    ("from kmm_dtk.kube.client import KubeClient\n", 1, "kmm_dtk.kube.client"),
    ("from kmm_dtk.kube import client\n", 1, "kmm_dtk.kube.client"),
    ("def f() -> None:\n    from kmm_dtk.operator.app import build_operator\n", 2, "kmm_dtk.operator.app"),
    ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from kmm_dtk.kube.client import KubeClient\n",
     4, "kmm_dtk.kube.client"),
    ("class C:\n    def m(self) -> None:\n        import kmm_dtk.observability.metrics as m\n", 3,
     "kmm_dtk.observability.metrics"),
    ("from ..kube import client\n", 1, "kmm_dtk.kube.client"),
    ("from kmm_dtk import __version__\n", 1, "kmm_dtk"),
])
def test_an_upward_import_is_named_with_its_file_line_and_rule(source: str, line: int, target: str) -> None:
    problems = violations("kmm_dtk/core/plan.py", source, "kmm_dtk.core.plan", False, KNOWN)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"kmm_dtk/core/plan.py:{line}: `")
    assert f"imports {target} (" in problems[0]
    assert problems[0].endswith("but the core layer may import nothing of the package")


def test_imports_allowed_by_the_table_pass() -> None:
    source = ("import json\nfrom kmm_dtk.observability.metrics import ControllerMetrics\n"
              "from . import client\nfrom .client import KubeClient\n")
    assert violations("kmm_dtk/kube/client.py", source, "kmm_dtk.kube.client", False, KNOWN) == []
    assert violations("kmm_dtk/operator/app.py", "from kmm_dtk.core.plan import plan_module\n",
                      "kmm_dtk.operator.app", False, KNOWN) == []


def test_a_module_outside_every_layer_is_reported() -> None:
    problems = violations("kmm_dtk/newthing.py", "", "kmm_dtk.newthing", False, KNOWN)
    assert problems == ["kmm_dtk/newthing.py: kmm_dtk.newthing is in no layer: add it to the table in "
                        "test_layers.py and README"]
