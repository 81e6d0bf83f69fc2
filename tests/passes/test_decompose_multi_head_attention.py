"""The nn.MultiheadAttention decomposition: same outputs, counters proving it fired, sites the
analysis can reduce, and the unsupported calls left alone with their reason."""

from __future__ import annotations

import operator

import pytest
import torch
import torch._dynamo
import torch.fx
from helpers import capture_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.sdpa import is_sdpa
from asymrnr_compile.passes.decompose_multi_head_attention import (
    DecomposeResult,
    decompose_multi_head_attention,
    is_multi_head_attention,
)

C, TEXT, TEXT_DIM = 3, 5, 12


class VideoMHA(nn.Module):
    """Conv3d patch embedding (kernel = stride = (1, 2, 2)) into ``blocks`` nn.MultiheadAttention
    self-attention blocks over the video tokens, alternately batch-first and sequence-first
    (starting with ``batch_first``)."""

    def __init__(self, dim: int, heads: int, *, batch_first: bool = True, blocks: int = 1,
                 bias: bool = True, **mha_kwargs) -> None:
        super().__init__()
        self.embed = nn.Conv3d(C, dim, (1, 2, 2), stride=(1, 2, 2))
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, batch_first=(batch_first == (k % 2 == 0)), bias=bias, **mha_kwargs)
            for k in range(blocks)
        )

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, need_weights: bool = False,
                is_causal: bool = False) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        for attn in self.attn:
            h = tokens if attn.batch_first else tokens.transpose(0, 1)
            out = attn(h, h, h, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                       need_weights=need_weights, is_causal=is_causal)[0]
            tokens = tokens + (out if attn.batch_first else out.transpose(0, 1))
        return tokens


class VideoToText(nn.Module):
    """Video queries attending to text keys/values (cross-attention); ``kdim`` text width."""

    def __init__(self, dim: int, heads: int, kdim: int | None) -> None:
        super().__init__()
        self.embed = nn.Conv3d(C, dim, (1, 2, 2), stride=(1, 2, 2))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kdim, vdim=kdim)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.attn(tokens, text, text, need_weights=False)[0]


def _video(batch: int, grid: tuple[int, int, int]) -> torch.Tensor:
    f, h, w = grid
    return torch.randn(batch, C, f, 2 * h, 2 * w, generator=torch.Generator().manual_seed(0))


def _capture(model: nn.Module, **inputs) -> tuple[torch.fx.GraphModule, list]:
    torch.manual_seed(0)
    for p in model.parameters():  # non-zero biases everywhere, so that a dropped bias shows
        nn.init.normal_(p, std=0.3)
    return capture_graph(model, inputs)


def _run(gm: torch.fx.GraphModule, example_inputs: list) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(gm(*example_inputs))


def _count(gm: torch.fx.GraphModule, predicate) -> int:
    return sum(1 for node in gm.graph.nodes if predicate(node))


def _assert_same_outputs(gm: torch.fx.GraphModule, result: DecomposeResult, example_inputs: list) -> None:
    expected, got = _run(gm, example_inputs), _run(result.gm, example_inputs)
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def _assert_decomposed(gm: torch.fx.GraphModule, result: DecomposeResult, calls: int) -> None:
    assert _count(gm, is_multi_head_attention) == calls  # the input graph is untouched
    assert result.decomposed == calls and result.left_alone == []
    assert _count(result.gm, is_multi_head_attention) == 0
    assert _count(result.gm, is_sdpa) == calls


def _assert_left_alone(gm: torch.fx.GraphModule, result: DecomposeResult, reason: str) -> None:
    assert result.decomposed == 0
    assert len(result.left_alone) == 1 and reason in result.left_alone[0], result.left_alone
    assert _count(result.gm, is_multi_head_attention) == 1 and _count(result.gm, is_sdpa) == 0
    assert len(result.gm.graph.nodes) == len(gm.graph.nodes)  # nothing half-inserted


# ---------------------------------------------------------------------------------------------
# self-attention over video tokens, over shapes


@settings(max_examples=8)
@given(
    batch=st.integers(1, 2),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 4)),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4, 8]),
    batch_first=st.booleans(),
    padded=st.booleans(),
)
def test_self_attention_is_decomposed_into_a_reducible_site(batch, grid, heads, head_dim, batch_first, padded):
    tokens = grid[0] * grid[1] * grid[2]
    inputs = {"x": _video(batch, grid)}
    if padded:  # the last tokens of the last batch element are padding (True = ignored)
        mask = torch.zeros(batch, tokens, dtype=torch.bool)
        mask[-1, -max(1, tokens // 3):] = True
        inputs["key_padding_mask"] = mask
    gm, example_inputs = _capture(VideoMHA(heads * head_dim, heads, batch_first=batch_first), **inputs)
    code = gm.code

    result = decompose_multi_head_attention(gm)

    assert gm.code == code
    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)
    (site,) = find_attention_sites(result.gm)
    assert site.name == "attn.0"
    assert (site.kind, site.query_tokens, site.key_tokens, site.video_tokens, site.grid) == (
        "self", tokens, tokens, tokens, grid)
    assert site.reducible and {"q", "kv"} <= set(site.features), site.reason
    assert (site.attn_mask is not None) == padded


def test_blocks_of_both_layouts_give_one_site_each_and_h_where_unmasked():
    gm, example_inputs = _capture(VideoMHA(16, 2, blocks=3), x=_video(2, (2, 4, 4)))

    result = decompose_multi_head_attention(gm)

    _assert_decomposed(gm, result, 3)
    _assert_same_outputs(gm, result, example_inputs)
    assert gm.meta and result.gm.meta == gm.meta
    sites = find_attention_sites(result.gm)
    assert [(s.name, s.kind, s.video_tokens, s.grid, s.features) for s in sites] == [
        (f"attn.{k}", "self", 32, (2, 4, 4), ("q", "kv", "h")) for k in range(3)]
    assert all(s.token_dim == 1 for s in sites)


def test_new_nodes_carry_the_shapes_they_compute():
    gm, example_inputs = _capture(VideoMHA(16, 4, batch_first=False), x=_video(2, (2, 2, 3)))
    result = decompose_multi_head_attention(gm)
    actual: dict[str, tuple] = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                actual[n.name] = (tuple(out.shape), out.dtype)
            return out

    with torch.no_grad():
        Record(result.gm).run(*example_inputs)
    original = {node.name for node in gm.graph.nodes}
    new = [node for node in result.gm.graph.nodes if node.name not in original]
    assert len(new) > 10
    for node in new:
        value = node.meta["example_value"]
        if isinstance(value, torch.Tensor):
            assert (tuple(value.shape), value.dtype) == actual[node.name], node.name
        assert list(node.meta["nn_module_stack"].values())[-1][1] is nn.MultiheadAttention, node.name


def test_no_bias():
    gm, example_inputs = _capture(VideoMHA(16, 2, bias=False), x=_video(1, (2, 2, 2)))
    result = decompose_multi_head_attention(gm)
    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)


# ---------------------------------------------------------------------------------------------
# masks


@pytest.mark.parametrize("kind", ["bool_2d", "float_2d", "bool_3d", "float_3d_with_padding", "float_padding"])
def test_masks_become_sdpa_masks(kind):
    batch, heads, grid = 2, 2, (2, 2, 2)
    n = 8
    generator = torch.Generator().manual_seed(1)
    inputs: dict[str, torch.Tensor] = {"x": _video(batch, grid)}
    if kind.startswith("bool"):
        blocked = torch.rand(n, n, generator=generator) < 0.3
        blocked.fill_diagonal_(False)  # every query keeps a key
        inputs["attn_mask"] = blocked if kind == "bool_2d" else blocked.expand(batch * heads, n, n).clone()
    elif kind == "float_2d":
        inputs["attn_mask"] = torch.randn(n, n, generator=generator)
    elif kind == "float_3d_with_padding":
        inputs["attn_mask"] = torch.randn(batch * heads, n, n, generator=generator)
    if "padding" in kind:
        padding = torch.zeros(batch, n)
        padding[1, -3:] = float("-inf")
        inputs["key_padding_mask"] = padding
    gm, example_inputs = _capture(VideoMHA(8, heads), **inputs)

    result = decompose_multi_head_attention(gm)

    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)
    (site,) = find_attention_sites(result.gm)
    assert site.kind == "self" and site.attn_mask is not None and site.reducible


def test_bool_masks_given_to_the_function_directly():
    """``nn.MultiheadAttention`` makes its masks float before the call; a direct call of
    ``F.multi_head_attention_forward`` can pass booleans (True = masked out)."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv3d(C, 8, (1, 2, 2), stride=(1, 2, 2))
            self.attn = nn.MultiheadAttention(8, 2)

        def forward(self, x, key_padding_mask, attn_mask):
            h = self.embed(x).flatten(2).permute(2, 0, 1)  # (N, B, D)
            a = self.attn
            return torch.nn.functional.multi_head_attention_forward(
                h, h, h, 8, 2, a.in_proj_weight, a.in_proj_bias, None, None, False, 0.0,
                a.out_proj.weight, a.out_proj.bias, training=False, key_padding_mask=key_padding_mask,
                need_weights=False, attn_mask=attn_mask)[0]

    padding = torch.zeros(2, 8, dtype=torch.bool)
    padding[0, -2:] = True
    blocked = torch.zeros(8, 8, dtype=torch.bool)
    blocked[:, 1] = True
    gm, example_inputs = _capture(Functional(), x=_video(2, (2, 2, 2)), key_padding_mask=padding, attn_mask=blocked)

    result = decompose_multi_head_attention(gm)

    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)
    assert _count(result.gm, lambda n: n.target == "masked_fill") == 2  # both made additive -inf masks
    (site,) = find_attention_sites(result.gm)
    assert site.kind == "self" and site.reducible


def test_causal_hint_becomes_sdpa_is_causal_and_the_analysis_refuses_it():
    n = 8
    causal = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
    gm, example_inputs = _capture(VideoMHA(8, 2), x=_video(1, (2, 2, 2)), attn_mask=causal, is_causal=True)

    result = decompose_multi_head_attention(gm)

    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)
    (site,) = find_attention_sites(result.gm)
    assert site.is_causal and not site.reducible and site.reason == "causal mask"


# ---------------------------------------------------------------------------------------------
# cross-attention: packed (kdim == embed_dim) and separate projection weights


@pytest.mark.parametrize("kdim", [None, TEXT_DIM])
def test_cross_attention_to_text(kdim):
    text = torch.randn(2, TEXT, kdim or 8, generator=torch.Generator().manual_seed(2))
    gm, example_inputs = _capture(VideoToText(8, 2, kdim), x=_video(2, (2, 2, 2)), text=text)

    result = decompose_multi_head_attention(gm)

    _assert_decomposed(gm, result, 1)
    _assert_same_outputs(gm, result, example_inputs)
    (site,) = find_attention_sites(result.gm)
    assert (site.kind, site.query_tokens, site.key_tokens, site.features) == ("cross", 8, TEXT, ("q",))


# ---------------------------------------------------------------------------------------------
# left alone


@pytest.mark.parametrize(
    ("make", "inputs", "reason"),
    [
        (lambda: VideoMHA(8, 2), {"need_weights": True},
         "need_weights=True: the attention weights are an output, tokens cannot be reduced"),
        (lambda: VideoMHA(8, 2, add_bias_kv=True), {}, "bias_k/bias_v"),
        (lambda: VideoMHA(8, 2, add_zero_attn=True), {}, "add_zero_attn=True"),
        (lambda: VideoMHA(8, 2, dropout=0.1).train(), {}, "training with dropout_p=0.1"),
    ],
    ids=["need_weights", "bias_kv", "add_zero_attn", "dropout"],
)
def test_unsupported_calls_are_left_alone_with_their_reason(make, inputs, reason):
    torch.manual_seed(0)
    model = make()
    gm, example_inputs = _capture(model, x=_video(2, (2, 2, 2)), **inputs)

    result = decompose_multi_head_attention(gm)

    _assert_left_alone(gm, result, reason)
    assert result.left_alone[0].startswith("attn.0: ")
    assert find_attention_sites(result.gm) == []
    if not model.training:
        _assert_same_outputs(gm, result, example_inputs)


def test_symbolic_shapes_are_left_alone():
    graphs: list[torch.fx.GraphModule] = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = VideoMHA(8, 2).eval()
    x = _video(2, (2, 2, 2))
    torch._dynamo.mark_dynamic(x, 0)
    with torch.no_grad():
        torch.compile(model, backend=record, fullgraph=True)(x)
    torch._dynamo.reset()
    (gm,) = graphs

    result = decompose_multi_head_attention(gm)

    _assert_left_alone(gm, result, "is symbolic; compile with dynamic=False")


def test_unbatched_input_is_left_alone():
    class Unbatched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.attn(tokens, tokens, tokens, need_weights=False)[0]

    gm, example_inputs = _capture(Unbatched(), tokens=torch.randn(6, 8))

    result = decompose_multi_head_attention(gm)

    _assert_left_alone(gm, result, "unbatched input")
    _assert_same_outputs(gm, result, example_inputs)


def test_a_graph_without_mha_is_copied_unchanged():
    gm, _ = _capture(nn.Sequential(nn.Conv3d(C, 8, 1), nn.ReLU()), input=_video(1, (1, 2, 2)))
    result = decompose_multi_head_attention(gm)
    assert result.gm is not gm and result.gm.code == gm.code
    assert (result.decomposed, result.left_alone) == (0, [])
    assert not any(n.target is operator.getitem for n in result.gm.graph.nodes)


# ---------------------------------------------------------------------------------------------
# end to end through the backend (Inductor: slow)


@pytest.mark.slow
def test_decomposed_sites_are_reduced_by_the_backend():
    """Through ``AsymRnRBackend``: both sites reduce q (32 -> 16 tokens) and kv (32 -> 22).
    Every token duplicates the others of its (2, 2, 2) chunk, so with proportional attention the
    reduction is exact and the output must equal the eager one."""
    from asymrnr_compile import AsymRnRBackend, AsymRnRConfig

    model = VideoMHA(16, 2, blocks=2).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    chunks = torch.randn(2, C, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    x = chunks.repeat_interleave(2, dim=2).repeat_interleave(4, dim=3).repeat_interleave(4, dim=4)  # grid (2, 4, 4)
    records: list = []
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16, proportional_attention=True)
    backend = AsymRnRBackend(config, on_matching=records.append)
    results: list[DecomposeResult] = []

    def decompose_then_reduce(gm, example_inputs):
        results.append(decompose_multi_head_attention(gm))
        return backend(results[-1].gm, example_inputs)

    torch._dynamo.reset()
    with torch.no_grad():
        expected = model(x)
        got = torch.compile(model, backend=decompose_then_reduce, dynamic=False)(x)
    torch._dynamo.reset()

    assert [r.decomposed for r in results] == [2]
    (graph,) = backend.report().to_dict()["graphs"]
    assert graph["fallback_reason"] is None
    assert sorted((r.site.name, r.feature, r.indices.keep.shape[-1]) for r in records) == [
        ("attn.0", "kv", 22), ("attn.0", "q", 16), ("attn.1", "kv", 22), ("attn.1", "q", 16)]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
