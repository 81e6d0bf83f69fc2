"""FLOP cost model of a captured graph, full and with token reduction, in sympy.

Counts the multiply-adds of the matrix ops of a Dynamo graph from the shapes in
``node.meta["example_value"]`` (linear, convolutions, matmuls, attention), at 2 FLOPs per
multiply-add, the convention of ``torch.utils.flop_counter``. Element-wise ops are not counted:
on the models we target they are a small share and memory-bound.

Per attention site the reduced cost is a symbolic expression (:class:`SiteCostModel`; symbols
of :data:`SYMBOLS`) in the kept video tokens ``K_q``, ``K_kv``, ``K_h`` (paper Sec. 3.2):

- attention: ``2 B H (T_q + K_q') (T_k + K_kv') (d + d_v)`` with ``T_q``/``T_k`` the non-video
  (text) tokens on the query/key axis, ``K_q' = K_h`` and ``K_kv' = K_h`` where h is on, else
  ``K_q`` / ``K_kv``. A cross-attention site's key axis is not video: ``T_k = L_k``, ``K_kv = 0``.
- the rest of the block that h shrinks: ``P_h (L_h - N + K_h) / L_h`` (projections between the
  hidden states and the output projection, ``P_h`` their full-length FLOPs, ``L_h`` their
  token count);
- the matching of each reduced feature, ``2 B_f H_f (N - N_dst) N_dst c_f``, amortised over the
  cache window ``W`` (paper Sec. 3.4), switched on by the indicators ``m_q``, ``m_kv``, ``m_h``.

Every formula has one home, :mod:`asymrnr_compile.ops.flops` (pure arithmetic that the matcher
uses too: ``ops`` may not import ``analysis``); the sympy expressions here are those functions
called with symbols, and the scaling model (:mod:`.parallel_cost`) is built from them the same
way. :func:`ideal_speedup` is the one full-over-reduced ratio of the package.

The whole graph costs ``F_full - sum_sites (site_full - site_reduced)``
(:class:`GraphCostModel`), for one plan (kept tokens per site and feature) or for a schedule
(per-step kept tokens, summed over the steps). The ideal speedup is full over reduced
(docs/measuring.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import nodes_between
from asymrnr_compile.analysis.sdpa import is_sdpa, sdpa_arguments
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.ops.flops import (
    attention_flops,
    matching_flops,
    matmul_flops,
    projected_matching_flops,
    projection_saves_flops,
)

_LINEAR_TARGETS = {torch._C._nn.linear, torch.nn.functional.linear}
_MATMUL_TARGETS = {torch.matmul, torch.bmm, torch.mm, torch.Tensor.matmul, torch.Tensor.bmm, torch.Tensor.mm,
                   torch.baddbmm, torch.addmm}
_CONV_TARGETS = {torch.conv1d, torch.conv2d, torch.conv3d, torch.nn.functional.conv1d,
                 torch.nn.functional.conv2d, torch.nn.functional.conv3d}

# Symbols of the per-site expressions (all positive integers except the 0/1 indicators m_*).
B, H, D, DV, TQ, TK, N, NDST, KQ, KKV, KH, W, PH, LH = sympy.symbols(
    "B H d d_v T_q T_k N N_dst K_q K_kv K_h W P_h L_h", positive=True, integer=True)
MQ, MKV, MH = sympy.symbols("m_q m_kv m_h", nonnegative=True, integer=True)
BH, CH = sympy.symbols("B_h C_h", positive=True, integer=True)  # batch and channels of the hidden states
SYMBOLS: dict[str, sympy.Symbol] = {s.name: s for s in (B, H, D, DV, TQ, TK, N, NDST, KQ, KKV, KH, W, PH, LH,
                                                         MQ, MKV, MH, BH, CH)}

ATTENTION_EXPR = attention_flops(B * H, TQ + KQ, TK + KKV, D, DV)
"""Attention FLOPs, QK^T and PV, with ``K_q``/``K_kv`` video tokens kept on each axis."""
MATCHED_ELEMENTS = MQ * B * H * D + MKV * B * H * DV + MH * BH * CH
"""Leading size times channels of the matched tensors, summed over the reduced features: q and kv
per head ``(B H, N, d)`` / ``(B H, N, d_v)``, h on the hidden states ``(B_h, N, C_h)``."""
MATCHING_EXPR = matching_flops(leading=1, num_src=N - NDST, num_dst=NDST, channels=MATCHED_ELEMENTS) / W
"""Matching FLOPs per call (src x dst similarity of each reduced feature) over the cache window.
The features share ``N`` and ``N_dst`` and :func:`matching_flops` is linear in leading size x
channels, so the sum of their matchings is one matching of :data:`MATCHED_ELEMENTS` channels
over a leading size of 1 (this form keeps the lambdified arithmetic, and so every float, as it
was: a sum of three matchings would reorder the float additions of :class:`SiteCostModel`)."""
HIDDEN_PATH_EXPR = PH * (LH - N + KH) / LH
"""FLOPs of the projections around attention that h reduction shrinks."""


def _value(node: Any) -> torch.Tensor | None:
    if not isinstance(node, torch.fx.Node):
        return None
    value = node.meta.get("example_value", node.meta.get("val"))
    return value if isinstance(value, torch.Tensor) else None


def _static_numel(shape: torch.Size) -> int | None:
    try:
        return math.prod(int(s) for s in shape)
    except (TypeError, ValueError, RuntimeError):
        return None


def _static_ints(*sizes: Any) -> tuple[int, ...] | None:
    """The sizes as ints, or None if one is symbolic (``int()`` would guard, or fail when unbacked)."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    return tuple(int(s) for s in sizes) if all(is_concrete_int(s) for s in sizes) else None


def ideal_speedup(full: float, reduced: float) -> float:
    """Full over reduced FLOPs: the ideal speedup (docs/measuring.md); 1.0 where nothing is
    counted (``reduced`` 0)."""
    return full / reduced if reduced else 1.0


def node_flops(node: torch.fx.Node) -> int:
    """FLOPs of one graph node (0 for ops that are not matrix products or unknown shapes)."""
    if node.op != "call_function":
        return 0
    out = _value(node)
    args = node.args
    if node.target in _LINEAR_TARGETS and args:
        weight = _value(args[1] if len(args) > 1 else node.kwargs.get("weight"))
        numel = _static_numel(out.shape) if out is not None else None
        if weight is None or numel is None:
            return 0
        return matmul_flops(numel, int(weight.shape[-1]))
    if node.target in _CONV_TARGETS and len(args) > 1:
        weight = _value(args[1])
        numel = _static_numel(out.shape) if out is not None else None
        if weight is None or numel is None:
            return 0
        return matmul_flops(numel, math.prod(int(s) for s in weight.shape[1:]))
    if node.target in _MATMUL_TARGETS and out is not None:
        tensors = [_value(a) for a in args if _value(a) is not None]
        numel = _static_numel(out.shape)
        if len(tensors) < 2 or numel is None:
            return 0
        inner = int(tensors[-2].shape[-1]) if tensors[-2].dim() > 0 else 1
        return matmul_flops(numel, inner)
    if is_sdpa(node):
        sdpa = sdpa_arguments(node)
        query, key, value = (_value(sdpa[name]) for name in ("query", "key", "value"))
        if query is None or key is None or value is None:
            return 0
        leading = _static_numel(query.shape[:-2])
        try:
            q_tokens, kv_tokens = int(query.shape[-2]), int(key.shape[-2])
        except (TypeError, ValueError, RuntimeError):
            return 0
        if leading is None:
            return 0
        return attention_flops(leading, q_tokens, kv_tokens, int(query.shape[-1]), int(value.shape[-1]))
    return 0


def graph_flops(gm: torch.fx.GraphModule) -> int:
    """FLOPs of one call of the graph (matrix ops only)."""
    return sum(node_flops(node) for node in gm.graph.nodes)


@dataclass(frozen=True)
class CostEstimate:
    """Full and reduced FLOPs of one graph call.

    Attributes:
        full_flops: the unreduced graph.
        reduced_flops: with the reduction, matching amortised over the cache window
            (``matching_flops / matching_window`` of it).
        attention_flops: the attention part of ``full_flops``.
        matching_flops: the matchings of one call that computes them (every reduced feature).
            Default 0 (no matching counted).
        matching_window: the calls that share one matching (``cache_steps``). Default 1.
    """

    full_flops: int
    reduced_flops: float
    attention_flops: int
    matching_flops: float = 0.0
    matching_window: float = 1

    @property
    def reduced_flops_without_matching(self) -> float:
        """One reduced call that reuses its matchings."""
        return self.reduced_flops - self.matching_flops / self.matching_window

    @property
    def ideal_speedup(self) -> float:
        return ideal_speedup(self.full_flops, self.reduced_flops)

    def to_dict(self) -> dict[str, float]:
        return {"full_gflops": self.full_flops / 1e9, "reduced_gflops": self.reduced_flops / 1e9,
                "attention_share": self.attention_flops / self.full_flops if self.full_flops else 0.0,
                "ideal_speedup": self.ideal_speedup, "matching_gflops": self.matching_flops / 1e9,
                "matching_window": self.matching_window}


def _hidden_states_path_flops(site: AttentionSite) -> int:
    """FLOPs of the projections that h reduction shrinks (attention itself excluded)."""
    if site.hidden_states is None or site.output_projection is None:
        return 0
    nodes = nodes_between(site.hidden_states, [site.query, site.key, site.value])
    nodes |= nodes_between(site.node, [site.output_projection])
    return sum(node_flops(node) for node in nodes if node is not site.node)


@dataclass
class SiteCostModel:
    """Symbolic cost of one attention site (see the module docstring).

    Attributes:
        site_index: the site's ``index``.
        num_tokens: ``N``, its video tokens.
        values: numbers for every symbol except ``K_q``, ``K_kv``, ``K_h``, ``N_dst``, ``W`` and
            the indicators ``m_*``.
        cross: a cross-attention site (keys are not video: only q and h shrink attention).
        expr: the site's FLOPs as a sympy expression of :data:`SYMBOLS`.
    """

    site_index: int
    num_tokens: int
    values: dict[sympy.Symbol, int]
    cross: bool = False
    expr: sympy.Expr = field(init=False)
    _fn: Callable[..., float] = field(init=False, repr=False)

    FREE = (KQ, KKV, KH, NDST, W, MQ, MKV, MH)

    def __post_init__(self) -> None:
        self.expr = ATTENTION_EXPR + HIDDEN_PATH_EXPR + MATCHING_EXPR
        numeric = self.expr.subs(self.values)
        self._fn = sympy.lambdify(self.FREE, numeric, modules="math")

    @classmethod
    def from_site(cls, site: AttentionSite) -> SiteCostModel | None:
        """The model of ``site``, or None when its lengths are symbolic or unknown."""
        query, key, value = _value(site.query), _value(site.key), _value(site.value)
        if query is None or key is None or value is None or site.video_tokens is None:
            return None
        sizes = _static_ints(query.shape[-1], value.shape[-1], query.shape[-2], key.shape[-2])
        leading = _static_numel(query.shape[:-2])
        if sizes is None or leading is None:  # data-dependent lengths (Mochi's text)
            return None
        head_dim, value_dim, q_tokens, kv_tokens = sizes
        n = site.video_tokens
        cross = site.kind == "cross"
        hidden = _value(site.hidden_states)
        hidden_tokens = int(hidden.shape[-2]) if hidden is not None and hidden.dim() >= 2 else q_tokens
        values = {
            B: leading, H: 1, D: head_dim, DV: value_dim,
            TQ: q_tokens - n, TK: kv_tokens if cross else kv_tokens - n,
            N: n, PH: _hidden_states_path_flops(site), LH: max(hidden_tokens, 1),
            BH: (_static_numel(hidden.shape[:-2]) or 1) if hidden is not None else 1,
            CH: int(hidden.shape[-1]) if hidden is not None else head_dim,
        }
        return cls(site.index, n, values, cross)

    def flops(self, q: int | None = None, kv: int | None = None, h: int | None = None,
              num_dst: Mapping[str, int] | None = None, cache_steps: float = math.inf,
              match_dims: int | None = None, on_hidden_states: bool = False) -> float:
        """FLOPs with ``q``/``kv``/``h`` video tokens kept (None: not reduced).

        ``num_dst`` gives ``N_dst`` per reduced feature (for the matching term);
        ``cache_steps=inf`` (default) leaves the matching out. ``match_dims``: the matching runs
        on a random projection onto that many dimensions (``AsymRnRConfig.match_dims``):
        :meth:`projected_matching_flops` replaces the matching term; ``on_hidden_states``: q and
        kv are matched on the site's hidden states (``match_on="hidden_states"``).
        """
        n = self.num_tokens
        cross = self.cross
        h_on = h is not None and h < n
        kq = h if h_on else (q if q is not None else n)
        kkv = 0 if cross else (h if h_on else (kv if kv is not None else n))
        kh = h if h_on else n
        num_dst = num_dst or {}
        on = {f: (k is not None and k < n) for f, k in (("q", q), ("kv", kv), ("h", h))}
        if h_on:
            on["q"] = on["kv"] = False
        dst = max((num_dst.get(f, 0) for f in on if on[f]), default=0)
        window = cache_steps if cache_steps and math.isfinite(cache_steps) else 0
        if not window:
            on = dict.fromkeys(on, False)
            window = 1
        if match_dims is None:
            return float(self._fn(kq, kkv, kh, dst, window, int(on["q"]), int(on["kv"]), int(on["h"])))
        matching = sum(self.projected_matching_flops(f, dst, match_dims, on_hidden_states)
                       for f in on if on[f]) / window
        return float(self._fn(kq, kkv, kh, dst, window, 0, 0, 0)) + matching

    def projected_matching_flops(self, feature: str, num_dst: int, match_dims: int,
                                 on_hidden_states: bool = False) -> float:
        """One matching of ``feature`` on a ``match_dims``-dim random projection: the projection
        of the ``N`` video tokens, ``2 P N c k``, and the score matmul, ``2 P (N - N_dst) N_dst
        k``, with ``P`` and ``c`` the matched tensor's leading size and channels (per head
        ``B H`` and ``d``; the hidden states' ``B_h`` and ``C_h`` for h, and for q and kv with
        ``on_hidden_states``); the exact matching's ``2 P (N - N_dst) N_dst c`` where the
        projection would not save FLOPs (:func:`~asymrnr_compile.ops.match.projection_saves_flops`:
        the matcher then runs the exact matching)."""
        v = self.values
        if feature == "h" or on_hidden_states:
            leading, channels = v[BH], v[CH]
        else:
            leading, channels = v[B] * v[H], v[D] if feature == "q" else v[DV]
        n = self.num_tokens
        if not projection_saves_flops(n, num_dst, channels, match_dims):
            return float(matching_flops(leading, n - num_dst, num_dst, channels))
        return float(projected_matching_flops(leading, n, num_dst, channels, match_dims))

    @property
    def full_flops(self) -> float:
        return self.flops()


class GraphCostModel:
    """Cost of one captured graph: measured full FLOPs minus, per site, what a plan saves.

    Args:
        gm: the Dynamo graph.
        sites: its attention sites (those with symbolic lengths are left out).
    """

    def __init__(self, gm: torch.fx.GraphModule, sites: Sequence[AttentionSite]) -> None:
        self.full_flops = graph_flops(gm)
        self.attention_flops = sum(node_flops(n) for n in gm.graph.nodes
                                   if is_sdpa(n))
        self.sites: dict[int, SiteCostModel] = {}
        for site in sites:
            model = SiteCostModel.from_site(site)
            if model is not None:
                self.sites[site.index] = model

    def reduced_flops(self, kept: Mapping[int, Mapping[str, tuple[int, int]]], cache_steps: float = math.inf,
                      match_dims: int | None = None, hidden_matched: Collection[int] = ()) -> float:
        """FLOPs of one call with, per site index, ``{feature: (num_dst, num_keep)}``; matching on
        a ``match_dims``-dim projection when given (q and kv on the hidden states at the sites
        in ``hidden_matched``)."""
        saved = 0.0
        for site_index, features in kept.items():
            model = self.sites.get(site_index)
            if model is None or not features:
                continue
            keep = {f: k for f, (_, k) in features.items()}
            dst = {f: d for f, (d, _) in features.items()}
            saved += model.full_flops - model.flops(keep.get("q"), keep.get("kv"), keep.get("h"), dst, cache_steps,
                                                    match_dims, site_index in hidden_matched)
        return self.full_flops - saved

    def estimate(self, kept: Mapping[int, Mapping[str, tuple[int, int]]], cache_steps: float,
                 match_dims: int | None = None, hidden_matched: Collection[int] = ()) -> CostEstimate:
        reduced = self.reduced_flops(kept, cache_steps, match_dims, hidden_matched)
        if not (cache_steps and math.isfinite(cache_steps)):
            return CostEstimate(self.full_flops, reduced, self.attention_flops)
        matching = self.reduced_flops(kept, 1, match_dims, hidden_matched) - self.reduced_flops(
            kept, math.inf, match_dims, hidden_matched)
        return CostEstimate(self.full_flops, reduced, self.attention_flops, matching, cache_steps)

    def schedule_flops(self, steps: Sequence[Mapping[int, Mapping[str, tuple[int, int]]]],
                       cache_steps: float, match_dims: int | None = None,
                       hidden_matched: Collection[int] = ()) -> tuple[float, float]:
        """(full, reduced) FLOPs summed over a run, one ``kept`` mapping per step."""
        reduced = sum(self.reduced_flops(kept, cache_steps, match_dims, hidden_matched) for kept in steps)
        return float(self.full_flops * len(steps)), reduced

    def schedule_estimate(self, steps: Sequence[Mapping[int, Mapping[str, tuple[int, int]]]],
                          cache_steps: float, match_dims: int | None = None,
                          hidden_matched: Collection[int] = ()) -> CostEstimate:
        """One call's cost averaged over a run of at least one step (what a runtime under a
        schedule reports): the reduced FLOPs of :meth:`schedule_flops` scaled by one call's share
        of the run's full FLOPs."""
        full, reduced = self.schedule_flops(steps, cache_steps, match_dims, hidden_matched)
        return CostEstimate(self.full_flops, reduced * self.full_flops / full, self.attention_flops)

    def predicted_speedup(self, steps: Sequence[Mapping[int, Mapping[str, tuple[int, int]]]],
                          cache_steps: float) -> float:
        """Full over reduced FLOPs of a run (the ideal speedup, docs/measuring.md)."""
        full, reduced = self.schedule_flops(steps, cache_steps)
        return ideal_speedup(full, reduced)


def estimate_cost(gm: torch.fx.GraphModule, kept: Mapping[AttentionSite, Mapping[str, tuple[int, int]]],
                  cache_steps: int, match_dims: int | None = None,
                  hidden_matched: Collection[int] = ()) -> CostEstimate:
    """Cost of ``gm`` with, per site, ``{feature: (num_dst, num_keep)}`` for ``"q"``, ``"kv"``, ``"h"``.

    q shortens the attention's query axis, kv its key axis, h both axes and every projection
    between the hidden states and the output projection (by the kept fraction of its tokens).
    The matching of every reduced feature is counted once per ``cache_steps`` calls (on a
    ``match_dims``-dim projection when given; q and kv on the hidden states at the site indices
    ``hidden_matched``).
    """
    model = GraphCostModel(gm, list(kept))
    return model.estimate({site.index: features for site, features in kept.items()}, cache_steps, match_dims,
                          hidden_matched)
