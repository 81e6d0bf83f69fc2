"""The record the analysis pass produces for one attention operation.

An :class:`AttentionSite` describes one ``scaled_dot_product_attention`` call of a Dynamo FX graph:
which of its tokens are video tokens, where the text tokens are, the video grid, and the nodes a
rewrite needs. It is produced by :func:`asymrnr_compile.analysis.find_attention_sites` and never
mutates the graph.

Conventions (fixed, relied on by the rewrite pass):

- At the SDPA node, query/key/value are ``(..., L, d)``: the token axis is always ``-2``.
  ``token_dim`` records where the token axis was on the projections *before* the head split,
  for reports; the rewrite works on the SDPA inputs.
- For a ``"joint"`` site the query and key sequences are the same ``[text, video]`` (text
  ``"first"``) or ``[video, text]`` (text ``"last"``) concatenation; the video span of the token
  axis is :attr:`AttentionSite.video_start` to ``video_start + video_tokens``.
- For a ``"self"`` site every token is a video token (``video_start == 0``).
- For a ``"cross"`` site the queries are video tokens and the keys are another context (text):
  only ``"q"`` can be reduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import node_value
from asymrnr_compile.reasons import Reason
from asymrnr_compile.vocabulary import Feature

SiteKind = Literal["self", "joint", "cross", "unknown"]
TextPosition = Literal["first", "last", "both"]


@dataclass(eq=False)
class AttentionSite:
    """One attention operation of a captured graph and its token layout.

    Attributes:
        name: stable, readable identifier, e.g. ``"blocks.3.attn"`` (from ``nn_module_stack``);
            unique within one graph (a suffix ``#k`` distinguishes several SDPA calls of one
            module, e.g. Mochi's per-batch-element loop).
        index: position among the SDPA calls of the graph, in graph order (0-based).
        node: the SDPA ``call_function`` node.
        query, key, value: the nodes passed as SDPA query/key/value (after QK-norm and RoPE).
        attn_mask: the node passed as ``attn_mask``, or None.
        is_causal, scale, dropout_p: the remaining SDPA arguments (constants), normalised.
        kind: ``"self"``, ``"joint"``, ``"cross"`` or ``"unknown"``.
        query_tokens, key_tokens: length of the token axis (-2) of query and key; None when
            symbolic.
        token_dim: token axis of the hidden states before the head split (usually 1 for
            ``(B, L, C)``), or None when unknown.
        text_position: ``"first"`` / ``"last"`` / ``"both"`` (other tokens on both sides of the
            video span) for joint sites, else None.
        text_tokens: number of non-video tokens in a joint site: text, audio, history frames kept
            whole (None when symbolic or not joint).
        tokens_before: number of tokens before the video span on the query axis (the span's
            start; 0 for self and cross sites), None when unknown.
        video_tokens: number of video tokens on the query axis (None when unknown).
        grid: video token grid ``(F, H, W)`` with ``F * H * W == video_tokens``, or None when it
            cannot be recovered (reduction then falls back to a 1-D split).
        block: module path of the transformer block holding the site (e.g. ``"blocks.3"``),
            or None.
        block_index: integer position of that block among the model's blocks when its path
            ends in an integer (``"transformer_blocks.12"`` -> 12), else None.
        hidden_states: for h-reduction, the ``(B, L, C)`` node entering the q/k/v projections
            (None when not found). Recorded whenever found; ``"h" in features`` says whether
            h-reduction is safe there.
        output_projection: for h-reduction, the node holding the output projection's result
            (None when not found).
        reducible: whether any feature of this site can be reduced.
        reason: why the site is not reducible (or why a feature is unavailable, e.g.
            ``"h unavailable: ..."`` on a reducible site), a :class:`~asymrnr_compile.reasons.Reason`:
            its text with its kind (no video tokens, not applicable, a problem) and fix;
            :meth:`to_dict` gives the text alone.
        features: which of ``"q"``, ``"kv"``, ``"h"`` can be reduced at this site.
        hidden_states_video_start: start of the video span on ``hidden_states``' token axis
            (``token_dim``); it differs from :attr:`video_start` when text joins the sequence
            after the projections (HunyuanVideo's dual-stream blocks: the video stream alone
            enters its projections). None when unknown.
        output_video_start: start of the video span on the token axis of
            ``output_projection`` (same axis as ``token_dim``); None when unknown.
    """

    name: str
    index: int
    node: torch.fx.Node
    query: torch.fx.Node
    key: torch.fx.Node
    value: torch.fx.Node
    attn_mask: torch.fx.Node | None = None
    is_causal: bool = False
    scale: float | None = None
    dropout_p: float = 0.0
    kind: SiteKind = "unknown"
    query_tokens: int | None = None
    key_tokens: int | None = None
    token_dim: int | None = None
    text_position: TextPosition | None = None
    text_tokens: int | None = None
    video_tokens: int | None = None
    grid: tuple[int, int, int] | None = None
    block: str | None = None
    block_index: int | None = None
    hidden_states: torch.fx.Node | None = None
    output_projection: torch.fx.Node | None = None
    reducible: bool = False
    reason: Reason | None = None
    features: tuple[Feature, ...] = field(default_factory=tuple)
    hidden_states_video_start: int | None = None
    output_video_start: int | None = None
    tokens_before: int | None = None

    @property
    def video_start(self) -> int:
        """Start of the video span on the query token axis (0 unless other tokens come first)."""
        if self.kind == "joint" and self.text_position in ("first", "both"):
            before = self.tokens_before
            if before is None and self.text_position == "first":
                before = self.text_tokens  # a record built by hand: all its other tokens come first
            if before is None:
                raise ValueError(f"site {self.name}: tokens come before the video but their number is symbolic")
            return before
        return 0

    def matches_on_hidden_states(self, match_on: str) -> bool:
        """Whether q and kv are matched on :attr:`hidden_states` under ``match_on`` (the config's
        or plan's): asked for, and no :meth:`hidden_matching_problem` here."""
        return match_on == "hidden_states" and self.hidden_matching_problem() is None

    def hidden_matching_problem(self) -> str | None:
        """Why q and kv cannot be matched on :attr:`hidden_states` here (None: they can).

        Hidden-state matching (``AsymRnRConfig.match_on = "hidden_states"``) matches the video
        span of ``hidden_states (B, L, C)`` once per batch element and applies the indices to
        every head of the ``(B, H, L', d)`` attention inputs, so it needs that node, its video
        span, the token axis at ``-2`` and the same batch size as the attention inputs.
        """
        if self.hidden_states is None:
            return "no common input of the q/k/v projections found"
        if self.hidden_states_video_start is None or self.video_tokens is None:
            return "the video span of the hidden states is unknown"
        hidden, query = node_value(self.hidden_states), node_value(self.query)
        if not isinstance(hidden, torch.Tensor) or not isinstance(query, torch.Tensor):
            return "the hidden states or the queries have no example value"
        if hidden.dim() != 3 or query.dim() != 4:
            return (f"hidden states {tuple(hidden.shape)} are not (B, L, C) or queries "
                    f"{tuple(query.shape)} not (B, H, L, d)")
        if self.token_dim is not None and self.token_dim % hidden.dim() != 1:
            return f"the token axis of the hidden states is {self.token_dim}, not 1"
        if hidden.shape[0] != query.shape[0]:
            return f"hidden states batch {hidden.shape[0]} != attention batch {query.shape[0]}"
        if hidden.shape[1] < self.hidden_states_video_start + self.video_tokens:
            return (f"hidden states hold {hidden.shape[1]} tokens, fewer than the video span "
                    f"{self.hidden_states_video_start} + {self.video_tokens}")
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no graph nodes)."""
        return {
            "name": self.name,
            "index": self.index,
            "kind": self.kind,
            "query_tokens": self.query_tokens,
            "key_tokens": self.key_tokens,
            "text_position": self.text_position,
            "text_tokens": self.text_tokens,
            "tokens_before": self.tokens_before,
            "video_tokens": self.video_tokens,
            "grid": list(self.grid) if self.grid is not None else None,
            "block": self.block,
            "block_index": self.block_index,
            "reducible": self.reducible,
            "reason": None if self.reason is None else str(self.reason),  # plain data: reports become JSON
            "features": list(self.features),
            "has_mask": self.attn_mask is not None,
            "is_causal": self.is_causal,
            "scale": self.scale,
            "dropout_p": self.dropout_p,
            "token_dim": self.token_dim,
            "hidden_states_video_start": self.hidden_states_video_start,
            "output_video_start": self.output_video_start,
            "nodes": {
                "sdpa": self.node.name,
                "query": self.query.name,
                "key": self.key.name,
                "value": self.value.name,
                "attn_mask": _node_name(self.attn_mask),
                "hidden_states": _node_name(self.hidden_states),
                "output_projection": _node_name(self.output_projection),
            },
        }


def _node_name(node: torch.fx.Node | None) -> str | None:
    return node.name if node is not None else None

