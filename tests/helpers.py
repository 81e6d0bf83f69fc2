"""Shared test helpers: capture Dynamo graphs, compare outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch._dynamo


def capture_graph(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.fx.GraphModule, list[Any]]:
    """The single Dynamo graph of ``model(**inputs)`` and its example inputs (fullgraph)."""
    captured: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]):
        captured.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
    torch._dynamo.reset()
    assert len(captured) == 1, f"expected one graph, got {len(captured)}"
    return captured[0]


def max_relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|."""
    scale = reference.abs().max().clamp_min(1e-12)
    return float((value.float() - reference.float()).abs().max() / scale)


def eager_compiler(gm: torch.fx.GraphModule, mode: str | None = None):
    """Stands in for :func:`asymrnr_compile.runtime.compile_subgraphs.inductor_compiler` (monkeypatch
    ``asymrnr_compile.backend.inductor_compiler``): every graph the backend would hand Inductor
    (variants, subgraphs) runs as it is. The same analysis, plans, seeds, state and rewrites, in
    seconds instead of a minute of compiling."""

    def compile_graph(graph: torch.fx.GraphModule, example_inputs: Any):
        return graph.forward

    return compile_graph


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as module ``benchmarks_<name>``; the
    benchmarks folder goes on ``sys.path`` for the helpers the scripts share (results_md)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
