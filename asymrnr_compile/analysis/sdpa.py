"""What an attention call looks like in a graph: its targets and its normalised arguments.

The one place that says which FX targets are ``scaled_dot_product_attention`` (the analysis,
the cost model, the rewrite and the split at attention calls all ask :func:`is_sdpa`), and how to read its
arguments: diffusers passes ``query=, key=, value=`` as keywords, other code positionally;
:func:`sdpa_arguments` gives both as one dict with every parameter of
``F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
is_causal=False, scale=None, enable_gqa=False)``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch.fx.operator_schemas import normalize_function

logger = logging.getLogger("asymrnr_compile.analysis")

#: Targets of an SDPA call: in a Dynamo graph (``F.scaled_dot_product_attention`` is
#: ``torch._C._nn.scaled_dot_product_attention``) and in an aten-level graph (after ``make_fx``).
SDPA_TARGETS: tuple[Any, ...] = (
    F.scaled_dot_product_attention,
    torch.ops.aten.scaled_dot_product_attention.default,
)


def is_sdpa(node: torch.fx.Node) -> bool:
    """Whether ``node`` calls ``scaled_dot_product_attention`` (any of :data:`SDPA_TARGETS`)."""
    return node.op == "call_function" and any(node.target is t for t in SDPA_TARGETS)


#: Parameters of ``F.scaled_dot_product_attention`` in order, with their defaults.
SDPA_PARAMETERS: tuple[tuple[str, Any], ...] = (
    ("query", None),
    ("key", None),
    ("value", None),
    ("attn_mask", None),
    ("dropout_p", 0.0),
    ("is_causal", False),
    ("scale", None),
    ("enable_gqa", False),
)


def sdpa_arguments(node: torch.fx.Node) -> dict[str, Any]:
    """All SDPA parameters of ``node`` by name (defaults filled in).

    Uses ``torch.fx.operator_schemas.normalize_function`` and falls back to the documented
    parameter order when it cannot normalise (it returns None for some targets).
    """
    normalized = None
    try:
        pair = normalize_function(
            node.target,  # type: ignore[arg-type]
            tuple(node.args),
            dict(node.kwargs),
            normalize_to_only_use_kwargs=True,
        )
        normalized = dict(pair.kwargs) if pair is not None else None
    except Exception as exc:  # noqa: BLE001 - fall back to the documented order
        logger.debug("normalize_function failed on %s: %s", node.name, exc)
    if normalized is None:
        normalized = {name: node.args[k] for k, (name, _) in enumerate(SDPA_PARAMETERS)
                      if k < len(node.args)}
        normalized.update(node.kwargs)
    for name, default in SDPA_PARAMETERS:
        normalized.setdefault(name, default)
    return normalized
