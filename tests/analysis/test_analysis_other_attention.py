"""Attention over video tokens that is not ``scaled_dot_product_attention`` is found and reported.

Linear attention (ReLU feature maps and ``K^T V`` by ``torch.matmul``, as SanaVideo does), softmax
attention written by hand (``softmax(q @ k^T * scale) @ v``) and ``flex_attention`` over Conv3d-embedded
video tokens: :attr:`GraphAnalysis.other_attention` holds exactly one entry of the right kind and reason
for each, and the backend puts it into its report and warns with the reason. An ordinary SDPA model
has no such entry.
"""

from __future__ import annotations

import warnings

import analysis_toys as toys
import pytest
import torch
import torch.nn.functional as F
from helpers import capture_graph, eager_compiler
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

import asymrnr_compile.backend
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.analysis.find_sites import analyse_graph
from asymrnr_compile.analysis.other_attention import FLEX_REASON, LINEAR_REASON, MANUAL_REASON
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_compile.reasons import USE_SDPA_FIX, ReasonKind, fix_of, kind_of

DIM, HEADS, HEAD_DIM = toys.DIM, toys.HEADS, toys.HEAD_DIM


class _HeadsAttention(nn.Module):
    """q/k/v projections to ``(B, H, N, d)`` heads and an output projection; ``mix`` mixes the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.to_qkv = nn.Linear(DIM, 3 * DIM)
        self.to_out = nn.Linear(DIM, DIM)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        q, k, v = (t.view(b, -1, HEADS, HEAD_DIM).transpose(1, 2) for t in self.to_qkv(tokens).chunk(3, dim=-1))
        return self.to_out(self.mix(q, k, v).transpose(1, 2).flatten(2))

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LinearAttention(_HeadsAttention):
    """SanaVideo-style: ``relu(q) (relu(k)^T v)``, normalised by ``relu(q) sum(relu(k))``."""

    def mix(self, q, k, v):
        q, k = F.relu(q), F.relu(k)
        kv = torch.matmul(k.transpose(-1, -2), v)  # (B, H, d, d): contracts the tokens
        numerator = torch.matmul(q, kv)  # contracts d only
        denominator = (q * k.sum(dim=-2, keepdim=True)).sum(dim=-1, keepdim=True) + 1e-6
        return numerator / denominator


class ManualSoftmaxAttention(_HeadsAttention):
    def mix(self, q, k, v):
        weights = torch.softmax(q @ k.transpose(-1, -2) * HEAD_DIM**-0.5, dim=-1)
        return weights @ v


def _distance_bias(score, batch, head, q_index, k_index):
    return score - 0.1 * (q_index - k_index).abs()


class FlexAttention(_HeadsAttention):
    def mix(self, q, k, v):
        return flex_attention(q, k, v, score_mod=_distance_bias)


class SdpaAttention(_HeadsAttention):
    def mix(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class VideoModel(nn.Module):
    """Conv3d patch embedding, one attention block ``attn`` with a residual."""

    def __init__(self, attention: type[_HeadsAttention]) -> None:
        super().__init__()
        self.embed = toys.PatchEmbed3d()
        self.attn = attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        return tokens + self.attn(tokens)


CASES = {
    "linear": (LinearAttention, LINEAR_REASON),
    "manual": (ManualSoftmaxAttention, MANUAL_REASON),
    "flex_attention": (FlexAttention, FLEX_REASON),
}
#: Each case's reason kind and fix: linear attention is outside the method; attention by hand has a fix.
KINDS_AND_FIXES = {
    "linear": (ReasonKind.NOT_APPLICABLE, None),
    "manual": (ReasonKind.PROBLEM, USE_SDPA_FIX),
    "flex_attention": (ReasonKind.PROBLEM, None),
}


def _model(attention: type[_HeadsAttention]) -> VideoModel:
    torch.manual_seed(0)
    return VideoModel(attention).eval()


def _analysis(attention: type[_HeadsAttention]):
    torch.manual_seed(0)
    gm, _ = capture_graph(_model(attention), {"x": toys.video_input()})
    return gm, analyse_graph(gm)


def test_flex_attention_is_captured_as_one_dynamo_graph():
    """The flex case below needs Dynamo to trace ``flex_attention`` on this CPU build (it does in
    torch 2.13): the graph holds the higher-order op, not a graph break."""
    gm, _ = capture_graph(_model(FlexAttention), {"x": toys.video_input()})
    targets = [node.target for node in gm.graph.nodes if node.op == "call_function"]
    assert torch.ops.higher_order.flex_attention in targets
    assert F.scaled_dot_product_attention not in targets


@pytest.mark.parametrize("kind", list(CASES))
def test_other_attention_has_one_entry_with_its_kind_and_reason(kind):
    attention, reason = CASES[kind]
    gm, analysis = _analysis(attention)

    (entry,) = analysis.other_attention

    assert (entry.kind, entry.reason) == (kind, reason)
    assert (kind_of(entry.reason), fix_of(entry.reason)) == KINDS_AND_FIXES[kind]
    assert entry.name == "attn"  # the module path of the op
    node = next(n for n in gm.graph.nodes if n.name == entry.node)
    assert node.op == "call_function"
    assert entry.to_dict() == {"name": "attn", "node": entry.node, "kind": kind, "reason": reason}
    assert analysis.sites == []  # no scaled_dot_product_attention


def test_linear_attention_flags_the_token_contracting_matmul_not_the_query_one():
    gm, analysis = _analysis(LinearAttention)
    matmuls = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.matmul]
    assert len(matmuls) == 2
    (entry,) = analysis.other_attention
    assert entry.node == matmuls[0].name  # k^T v, not q (k^T v)


def test_manual_attention_flags_the_matmul_with_the_values_after_the_softmax():
    gm, analysis = _analysis(ManualSoftmaxAttention)
    (entry,) = analysis.other_attention
    node = next(n for n in gm.graph.nodes if n.name == entry.node)
    (softmax,) = [n for n in gm.graph.nodes if "softmax" in str(n.target)]
    assert softmax in node.all_input_nodes  # weights @ v, not q @ k^T


@pytest.mark.parametrize("kind", list(CASES))
def test_backend_reports_and_warns_about_other_attention(kind, monkeypatch):
    attention, reason = CASES[kind]
    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    model, x = _model(attention), toys.video_input()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
    torch._dynamo.reset()
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            output = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(x)
            expected = model(x)
        report = backend.report().to_dict()
    finally:
        torch._dynamo.reset()

    (graph,) = report["graphs"]
    assert graph["other_attention"] == [{"name": "attn", "node": graph["other_attention"][0]["node"],
                                         "kind": kind, "reason": reason}]
    assert graph["sites"] == [] and graph["fallback_reason"]  # compiled unchanged
    ours = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    assert [m for m in ours if reason in m] == [f"asymrnr: attn: {reason}."]
    torch.testing.assert_close(output, expected)


def test_sdpa_attention_has_no_other_attention_entry(monkeypatch):
    gm, analysis = _analysis(SdpaAttention)
    assert analysis.other_attention == []
    (site,) = analysis.sites
    assert (site.kind, site.video_tokens, site.grid) == ("self", toys.N_VIDEO, toys.GRID)

    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(_model(SdpaAttention), backend=backend, fullgraph=True, dynamic=False)(toys.video_input())
        report = backend.report().to_dict()
    finally:
        torch._dynamo.reset()
    assert report["graphs"][0]["other_attention"] == []


class EinsumSoftmaxAttention(_HeadsAttention):
    def mix(self, q, k, v):
        weights = torch.einsum("bhnd,bhmd->bhnm", q, k).mul(HEAD_DIM**-0.5).softmax(dim=-1)
        return torch.einsum("bhnm,bhmd->bhnd", weights, v)


class EinsumLinearAttention(_HeadsAttention):
    def mix(self, q, k, v):
        q, k = F.relu(q), F.relu(k)
        kv = torch.einsum("bhnd,bhne->bhde", k, v)  # contracts the tokens
        return torch.einsum("bhnd,bhde->bhne", q, kv) / (k.sum(dim=-2, keepdim=True) * q).sum(-1, keepdim=True)


@pytest.mark.parametrize(("attention", "kind", "reason"), [
    (EinsumSoftmaxAttention, "manual", MANUAL_REASON),
    (EinsumLinearAttention, "linear", LINEAR_REASON),
])
def test_attention_written_with_einsum_is_found_at_the_token_contracting_einsum(attention, kind, reason):
    gm, analysis = _analysis(attention)
    (entry,) = analysis.other_attention
    assert (entry.kind, entry.reason) == (kind, reason)
    assert (kind_of(entry.reason), fix_of(entry.reason)) == KINDS_AND_FIXES[kind]
    node = next(n for n in gm.graph.nodes if n.name == entry.node)
    equation = node.args[0]
    assert equation in ("bhnm,bhmd->bhnd", "bhnd,bhne->bhde")  # the product over the tokens
