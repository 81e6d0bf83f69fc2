"""The package's import layering, checked on the source (every ``import`` and ``from ... import``,
also inside functions and ``TYPE_CHECKING`` blocks).

The compiler, bottom to top: ``vocabulary`` (names every layer shares) and ``_validate``;
``ops`` (pure tensors); ``analysis`` (reads graphs, never plans or rewrites); ``config`` and
``plan``; ``passes`` (edit graphs); ``runtime``; ``backend``; ``regional``, ``pipelines`` and
``profiling`` on top. The lab is a sibling package, ``asymrnr_lab`` (in ``lab/``, its own
distribution): it uses the compiler; the compiler never imports it, and ships none of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asymrnr_compile"
BASE = {"vocabulary", "reasons", "_validate"}
ALLOWED: dict[str, set[str]] = {
    "vocabulary": set(),
    "reasons": set(),
    "_validate": set(),
    "ops": {"_validate"},
    "analysis": BASE | {"ops"},
    "config": BASE | {"ops", "plan"},  # plan: the Schedule a config may name (loaded lazily)
    "plan": BASE | {"ops", "analysis", "config"},
    "passes": BASE | {"ops", "analysis", "plan"},
    "runtime": BASE | {"ops", "analysis", "config", "plan", "passes"},
    "backend": BASE | {"ops", "analysis", "config", "plan", "passes", "runtime"},
    "regional": BASE | {"ops", "analysis", "config", "plan", "passes", "runtime", "backend"},
    "pipelines": BASE | {"ops", "analysis", "config", "plan", "passes", "runtime", "backend", "regional"},
    "profiling": BASE | {"ops", "analysis", "config", "plan", "passes", "runtime"},
}
LAB_PACKAGE = "asymrnr_lab"


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` gives ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def package_imports(path: Path) -> set[str]:
    """The first-level subpackages or modules of ``asymrnr_compile`` that ``path`` imports, and
    ``"asymrnr_lab"`` if it imports anything of the lab."""
    found = set()
    for name in imported_modules(path):
        if name.startswith("asymrnr_compile."):
            found.add(name.split(".")[1])
        elif name == LAB_PACKAGE or name.startswith(LAB_PACKAGE + "."):
            found.add(LAB_PACKAGE)
    return found


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


COMPILER_FILES = sorted(path for path in PACKAGE.rglob("*.py") if _layer(path) in ALLOWED)


def test_every_compiler_layer_is_listed():
    layers = {_layer(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}
    assert layers - set(ALLOWED) == set(), "a new top-level module: add it to ALLOWED (the lab goes in lab/)"


def test_the_compiler_package_ships_no_weights_or_data():
    shipped = [path for path in PACKAGE.rglob("*") if path.is_file() and "__pycache__" not in path.parts
               and path.suffix != ".py"]
    assert shipped == [], f"non-code files in the compiler package (the lab's go in lab/): {shipped}"


@pytest.mark.parametrize("path", COMPILER_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_compiler_modules_import_only_the_layers_below(path):
    layer = _layer(path)
    imported = package_imports(path) - {layer}
    assert LAB_PACKAGE not in imported, f"{path.relative_to(PACKAGE)} imports the lab"
    assert imported <= ALLOWED[layer], (
        f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(imported - ALLOWED[layer])}; "
        f"{layer} may import {sorted(ALLOWED[layer])}")


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n"
                      "    from asymrnr_compile.plan import schedule\n"
                      "    import asymrnr_compile.ops.match\n"
                      "    import asymrnr_lab.cli.demo\n")
    assert package_imports(source) == {"plan", "ops", LAB_PACKAGE}
