"""The package's import layering, checked on the source (every ``import`` and ``from ... import``,
also inside functions and ``TYPE_CHECKING`` blocks).

The compiler, bottom to top: ``vocabulary`` (names every layer shares) and ``_validate``;
``ops`` (pure tensors); ``analysis`` (reads graphs, never plans or rewrites); ``config`` and
``plan``; ``passes`` (edit graphs); ``runtime``; ``backend``; ``regional``, ``pipelines`` and
``profiling`` on top. The lab (``models``, ``sampling``, ``synthetic``, ``cli``) may use the
compiler; the compiler never imports the lab.
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
LAB = {"models", "sampling", "synthetic", "cli"}


def package_imports(path: Path) -> set[str]:
    """The first-level subpackages or modules of ``asymrnr_compile`` that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("asymrnr_compile.")}
    return found


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


COMPILER_FILES = sorted(path for path in PACKAGE.rglob("*.py") if _layer(path) in ALLOWED)


def test_every_compiler_layer_is_listed_and_the_lab_is_apart():
    layers = {_layer(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert layers - set(ALLOWED) - LAB == set(), "a new top-level module: add it to ALLOWED or LAB"
    assert not set(ALLOWED) & LAB


@pytest.mark.parametrize("path", COMPILER_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_compiler_modules_import_only_the_layers_below(path):
    layer = _layer(path)
    imported = package_imports(path) - {layer}
    assert not imported & LAB, f"{path.relative_to(PACKAGE)} imports the lab: {sorted(imported & LAB)}"
    assert imported <= ALLOWED[layer], (
        f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(imported - ALLOWED[layer])}; "
        f"{layer} may import {sorted(ALLOWED[layer])}")


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n"
                      "    from asymrnr_compile.synthetic import model\n"
                      "    import asymrnr_compile.cli.demo\n")
    assert package_imports(source) == {"synthetic", "cli"}
