"""Capture the Dynamo graph a backend would receive, without compiling it."""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo
import torch.fx


def capture(model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.fx.GraphModule:
    """The (single) FX graph Dynamo hands a backend for ``model(*args, **kwargs)``."""
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=record, fullgraph=True)
    with torch.no_grad():
        compiled(*args, **kwargs)
    assert len(graphs) == 1, f"expected one graph, got {len(graphs)}"
    return graphs[0]


def summary(sites: list[Any]) -> list[tuple[Any, ...]]:
    """``(name, kind, text_position, text_tokens, video_tokens, grid, reducible, block_index)``
    per site: the facts the tests pin down."""
    return [
        (
            s.name,
            s.kind,
            s.text_position,
            s.text_tokens,
            s.video_tokens,
            s.grid,
            s.reducible,
            s.block_index,
        )
        for s in sites
    ]
