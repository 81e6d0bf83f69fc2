"""Readable, unique names of attention sites and the transformer block each belongs to.

Names come from ``node.meta["nn_module_stack"]`` (the module that called SDPA, e.g.
``"transformer_blocks.3.attn1"``). The block is the module path up to its first integer part
(``"transformer_blocks.3"``, index 3): the element of the model's block list. Several SDPA
calls of one module (Mochi calls SDPA once per batch element) get suffixes ``#0``, ``#1``, ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch.fx

from asymrnr_compile.analysis.fx_nodes import module_path

#: Separator of the per-module call counter in site names.
CALL_SUFFIX = "#"


def site_names(nodes: Sequence[torch.fx.Node]) -> list[str]:
    """One unique name per SDPA node, in the given order."""
    bases = [module_path(node) or node.name for node in nodes]
    totals = Counter(bases)
    seen: Counter[str] = Counter()
    names = []
    for base in bases:
        if totals[base] > 1:
            names.append(f"{base}{CALL_SUFFIX}{seen[base]}")
            seen[base] += 1
        else:
            names.append(base)
    # a module path could collide with another site's suffixed name: make names unique anyway
    counts = Counter(names)
    return [n if counts[n] == 1 else f"{n}{CALL_SUFFIX}{k}" for k, n in enumerate(names)]


def block_of(node: torch.fx.Node) -> tuple[str | None, int | None]:
    """``(block path, block index)`` of the module that produced ``node``, or ``(None, None)``."""
    path = module_path(node)
    return block_of_path(path) if path else (None, None)


def block_of_path(path: str) -> tuple[str | None, int | None]:
    """``(block path, block index)`` of the module at ``path``: the path up to and including its
    first integer part, and that integer (``"blocks.3.attn"`` -> ``("blocks.3", 3)``); ``(None,
    None)`` when it has none."""
    parts = path.split(".")
    for k, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: k + 1]), int(part)
    return None, None
