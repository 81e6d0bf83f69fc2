"""Scaling model of one sampling step under sequence (context) parallelism, with and without
token reduction, in sympy.

Per step and per rank, for ``P`` ranks, it gives the attention FLOPs, the other matrix FLOPs
(projections, MLP), the matching FLOPs and the bytes the collectives carry, for

- **Ulysses** (diffusers ``ulysses_degree=P``): each rank holds ``L/P`` tokens; per attention
  layer an all-to-all of q, k and v (each rank then holds all ``L`` tokens of ``H/P`` heads)
  and one of the attention output back; the output is all-gathered once per step. asymrnr
  reduces **after** the exchange (the design implemented, exact per head): attention and the
  matching shrink, the exchanged bytes do not. A shard-local variant (reduce each rank's q, k, v
  before the exchange) is modelled too: it also shrinks the all-to-alls.
- **Ring** (diffusers ``ring_degree=P``; needs attention kernels that return the log-sum-exp,
  i.e. GPUs): each rank keeps its ``L/P`` queries and receives the other ranks' K/V chunks in
  ``P - 1`` rounds. No rank ever holds the whole sequence, so any reduction is shard-local: each
  rank keeps ``K_q/P`` queries and ``K_kv/P`` keys and values, and the K/V rounds shrink with
  them.

Conventions: FLOPs at 2 per multiply-add, every count one of the formulas of
:mod:`asymrnr_compile.ops.flops` (those :mod:`.cost` uses) called with sympy symbols; ``payload``
bytes are the input tensor bytes of the collective calls a rank makes (what a wrapper around
``all_to_all_single`` counts); ``wire`` bytes are what leaves the rank: ``(P-1)/P`` of an
all-to-all's or an all-gather's payload, all of a ring round's. Text tokens (``T``, joint
attention) are split and exchanged like video tokens, and never reduced. Element-wise ops are
not counted.

The predicted time of a step is ``flops / flop_rate + wire / link_bandwidth`` (no overlap of
communication and compute: pessimistic for the parallel runs) with the rates of a
:class:`Hardware` (assumed figures, not measurements; nothing here measures speed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sympy

from asymrnr_compile.ops.flops import attention_flops, linear_flops, matching_flops

Scheme = Literal["ulysses", "ring"]
Placement = Literal["after_exchange", "shard_local"]

# Symbols: batch, heads, head dim, hidden size, MLP width, layers, video and text tokens, kept
# video tokens (q and kv), destination tokens and cache window of the matching, ranks, bytes per
# element, output channels of the final projection, text tokens of a separate cross-attention.
B, H, D, C, CFF, LAYERS, N, T, KQ, KKV, NDST, W, P, E, COUT, TX = sympy.symbols(
    "B H d C C_ff layers N T K_q K_kv N_dst W P e C_out T_x", positive=True)
#: 1 when the separate cross-attention also goes through the Ulysses exchange (its text split
#: across ranks too: LTX-Video's plan), 0 when it runs on the rank's shard (Wan's plan).
XCH = sympy.Symbol("x_cross", nonnegative=True, integer=True)
PARALLEL_SYMBOLS: dict[str, sympy.Symbol] = {
    s.name: s for s in (B, H, D, C, CFF, LAYERS, N, T, KQ, KKV, NDST, W, P, E, COUT, TX, XCH)}

#: All-to-alls per attention layer under Ulysses: q, k, v, and the output back.
ULYSSES_EXCHANGES = 4
#: Projections of a self-attention layer (q, k, v, out) and of a separate cross-attention
#: (q and out on the video; k and v on the text), each ``C x C``.
SELF_ATTENTION_PROJECTIONS = 4
CROSS_VIDEO_PROJECTIONS = CROSS_TEXT_PROJECTIONS = 2
#: The features the scaling model reduces and matches: q (on the queries) and kv (on the values).
MATCHED_FEATURES = ("q", "kv")


@dataclass(frozen=True)
class ModelShape:
    """The shape of one model at one resolution.

    Attributes:
        name: label for reports.
        video_tokens: ``N`` after patching.
        text_tokens: ``T``, in the attention sequence of joint attention (0 for pure
            self-attention models).
        cross_text_tokens: text tokens of a separate cross-attention per layer (Wan; 0 if none).
        heads, head_dim: ``H``, ``d`` (hidden size ``C = H d``).
        mlp_width: ``C_ff``.
        layers: attention layers (blocks).
        out_channels: channels of the final projection (patch volume x latent channels), the
            tensor all-gathered at the end of a step.
        batch: ``B`` per step (2: classifier-free guidance, batched or in two calls).
        cross_in_exchange: the cross-attention goes through the Ulysses exchange too (its text
            split across ranks: LTX-Video's plan) rather than running on the rank's shard (Wan's).
    """

    name: str
    video_tokens: int
    text_tokens: int
    cross_text_tokens: int
    heads: int
    head_dim: int
    mlp_width: int
    layers: int
    out_channels: int
    batch: int = 2
    cross_in_exchange: bool = False


@dataclass(frozen=True)
class Hardware:
    """Assumed rates for the time prediction (defaults: an H100 SXM at 50% of its dense bf16
    peak, and 300 GB/s of NVLink bandwidth per GPU for all-to-all traffic; assumptions)."""

    flop_rate: float = 0.5 * 989e12
    link_bandwidth: float = 300e9
    bytes_per_element: int = 2  # bf16


@dataclass(frozen=True)
class Reduction:
    """Kept fractions of the video tokens and the matching's cost parameters
    (defaults: q 0.5, kv 0.3, dst stride 2 x 2 x 2, cache window 5)."""

    q_ratio: float = 0.5
    kv_ratio: float = 0.3
    dst_fraction: float = 1 / 8
    cache_steps: int = 5


@dataclass(frozen=True)
class StepCost:
    """Per step and rank: FLOPs by kind, collective payload and wire bytes, predicted seconds."""

    attention_flops: float
    other_flops: float
    matching_flops: float
    payload_bytes: float
    wire_bytes: float
    seconds: float

    @property
    def flops(self) -> float:
        return self.attention_flops + self.other_flops + self.matching_flops


def attention_flops_expr(scheme: Scheme) -> sympy.Expr:
    """Attention FLOPs per rank and step (all layers): QK^T and PV over the kept tokens."""
    if scheme == "ulysses":  # all tokens of H/P heads
        per_layer = attention_flops(B * (H / P), T + KQ, T + KKV, D)
    else:  # L/P queries against all keys, all heads
        per_layer = attention_flops(B * H, (T + KQ) / P, T + KKV, D)
    cross = attention_flops(B * H, N / P, TX, D)  # the rank's video queries against all text keys
    return LAYERS * (per_layer + cross)


def other_flops_expr() -> sympy.Expr:
    """Projections and MLP per rank and step: token-wise, so ``1/P`` of the tokens each."""
    rows = B * (N + T) / P
    self_attention = SELF_ATTENTION_PROJECTIONS * linear_flops(rows, C, C)
    mlp = linear_flops(rows, C, CFF) + linear_flops(rows, CFF, C)
    cross_projections = (CROSS_VIDEO_PROJECTIONS * linear_flops(B * N / P, C, C)
                         + CROSS_TEXT_PROJECTIONS * linear_flops(B * TX, C, C))
    cross = sympy.Piecewise((cross_projections, TX > 0), (0, True))
    final = linear_flops(B * N / P, C, COUT)
    return LAYERS * (self_attention + mlp + cross) + final


def matching_flops_expr(scheme: Scheme) -> sympy.Expr:
    """Matching FLOPs per rank and step, amortised over the cache window (q on queries, kv on
    values): per head over the whole sequence after a Ulysses exchange, per shard for ring."""
    if scheme == "ulysses":  # all N tokens of H/P heads
        one = matching_flops(B * (H / P), N - NDST, NDST, D)
    else:  # the rank's shard: N/P tokens, N_dst/P of them dst, all heads
        one = matching_flops(B * H, (N - NDST) / P, NDST / P, D)
    per_layer = len(MATCHED_FEATURES) * one
    return LAYERS * per_layer / W


def payload_bytes_expr(scheme: Scheme, placement: Placement = "after_exchange") -> sympy.Expr:
    """Input bytes of the collectives a rank calls per step."""
    local = B * ((T + N) / P) * H * D * E  # one of q, k, v, out on one rank
    gather = B * (N / P) * COUT * E  # the output, once per step
    if scheme == "ulysses":
        if placement == "after_exchange":
            per_layer = ULYSSES_EXCHANGES * local
        else:
            q_part = B * ((T + KQ) / P) * H * D * E
            kv_part = B * ((T + KKV) / P) * H * D * E
            per_layer = 2 * q_part + 2 * kv_part  # q and out; k and v
        cross = XCH * B * H * D * E * (2 * N + 2 * TX) / P  # q and out over the video, k and v over the text
        return LAYERS * (per_layer + cross) + gather
    kv_chunk = 2 * B * ((T + KKV) / P) * H * D * E  # K and V of one shard
    return LAYERS * (P - 1) * kv_chunk + gather


def wire_bytes_expr(scheme: Scheme, placement: Placement = "after_exchange") -> sympy.Expr:
    """Bytes leaving a rank per step: ``(P-1)/P`` of the all-to-all and all-gather payloads,
    all of the ring rounds'."""
    payload = payload_bytes_expr(scheme, placement)
    if scheme == "ulysses":
        return payload * (P - 1) / P
    gather = B * (N / P) * COUT * E
    return (payload - gather) + gather * (P - 1) / P


def _values(model: ModelShape, ranks: int, reduction: Reduction | None,
            hardware: Hardware) -> dict[sympy.Symbol, float]:
    n = model.video_tokens
    kq = n if reduction is None else max(int(n * (1 - reduction.q_ratio)), int(n * reduction.dst_fraction))
    kkv = n if reduction is None else max(int(n * (1 - reduction.kv_ratio)), int(n * reduction.dst_fraction))
    return {B: model.batch, H: model.heads, D: model.head_dim, C: model.heads * model.head_dim,
            CFF: model.mlp_width, LAYERS: model.layers, N: n, T: model.text_tokens, KQ: kq, KKV: kkv,
            NDST: 0 if reduction is None else int(n * reduction.dst_fraction),
            W: 1 if reduction is None else reduction.cache_steps, P: ranks, E: hardware.bytes_per_element,
            COUT: model.out_channels, TX: model.cross_text_tokens, XCH: int(model.cross_in_exchange)}


def step_cost(model: ModelShape, ranks: int, scheme: Scheme = "ulysses", reduction: Reduction | None = None,
              placement: Placement = "after_exchange", hardware: Hardware | None = None) -> StepCost:
    """Per-rank cost of one step of ``model`` on ``ranks`` ranks (1: a single device, no
    collectives), unreduced when ``reduction`` is None.

    Raises:
        ValueError: ``ranks`` below 1, an unknown ``scheme`` or ``placement``, or a
            ``placement`` other than ``"shard_local"`` for ring with a reduction.
    """
    if not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be an integer >= 1, got {ranks!r}")
    if scheme not in ("ulysses", "ring"):
        raise ValueError(f"scheme must be 'ulysses' or 'ring', got {scheme!r}")
    if placement not in ("after_exchange", "shard_local"):
        raise ValueError(f"placement must be 'after_exchange' or 'shard_local', got {placement!r}")
    if scheme == "ring" and reduction is not None and placement != "shard_local":
        raise ValueError("placement must be 'shard_local' for ring: no rank holds the whole sequence")
    hardware = hardware or Hardware()
    values = _values(model, ranks, reduction, hardware)
    attention = float(attention_flops_expr(scheme).subs(values))
    other = float(other_flops_expr().subs(values))
    matching = 0.0 if reduction is None else float(matching_flops_expr(scheme).subs(values))
    if ranks == 1:
        payload = wire = 0.0
    else:
        payload = float(payload_bytes_expr(scheme, placement).subs(values))
        wire = float(wire_bytes_expr(scheme, placement).subs(values))
    seconds = (attention + other + matching) / hardware.flop_rate + wire / hardware.link_bandwidth
    return StepCost(attention, other, matching, payload, wire, seconds)


#: Published shapes (diffusers configs) at their default resolutions.
MODELS: dict[str, ModelShape] = {
    # 49 frames 480 x 720 -> latent 13 x 60 x 90, patch 2 -> 13 x 30 x 45; 226 text tokens first
    "CogVideoX-2B": ModelShape("CogVideoX-2B", 13 * 30 * 45, 226, 0, 30, 64, 4 * 1920, 30, 2 * 2 * 16),
    # 129 frames 720 x 1280 -> latent 33 x 90 x 160, patch 1 x 2 x 2 -> 33 x 45 x 80; 256 text
    # tokens; 20 dual-stream + 40 single-stream blocks
    "HunyuanVideo": ModelShape("HunyuanVideo", 33 * 45 * 80, 256, 0, 24, 128, 4 * 3072, 60, 2 * 2 * 16),
    # 81 frames 720 x 1280 -> latent 21 x 90 x 160, patch 1 x 2 x 2 -> 21 x 45 x 80; 512 text
    # tokens in a separate cross-attention
    "Wan2.1-14B": ModelShape("Wan2.1-14B", 21 * 45 * 80, 0, 512, 40, 128, 13824, 40, 2 * 2 * 16),
}


__all__ = [
    "MODELS",
    "PARALLEL_SYMBOLS",
    "Hardware",
    "ModelShape",
    "Reduction",
    "StepCost",
    "XCH",
    "attention_flops_expr",
    "matching_flops_expr",
    "other_flops_expr",
    "payload_bytes_expr",
    "step_cost",
    "wire_bytes_expr",
]
