"""Several video segments on one attention token axis: history frames next to the frames being denoised.

Framepack's attention runs over ``[history (clean latents), current video, text]`` and Helios' over
``[history, current video]``; each part has its own patch embedding, so the token axis holds two
video segments with grids. The analysis must reduce the largest one with a grid and keep the others
whole, like text (``text_position`` ``"both"`` or ``"first"``, ``tokens_before`` the history length);
two equally large segments are ambiguous and left alone. End to end, the backend rewrite must cut
only the middle span: the history and text rows of the attention's query and key pass unchanged.
"""

from __future__ import annotations

import analysis_toys as toys
import torch
import torch.nn.functional as F
from helpers import capture_graph, eager_compiler
from reduction_checks import assert_reduced
from torch import nn
from torch.overrides import TorchFunctionMode

import asymrnr_compile.backend
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.analysis import find_attention_sites

DIM, TEXT, B = toys.DIM, toys.TEXT, toys.B
GRID, N_VIDEO = toys.GRID, toys.N_VIDEO  # (4, 4, 4), 64 tokens
#: A history latent of 2 frames, 4 x 4: a (2, 2, 2) grid of 8 tokens under the (1, 2, 2) patches.
HISTORY_SHAPE = (B, toys.C, 2, 4, 4)
HISTORY_GRID = (2, 2, 2)
N_HISTORY = 8


class HistoryVideoText(nn.Module):
    """``[history, video, text]`` (Framepack) or, without text, ``[history, video]`` (Helios) on the
    token axis of one self-attention; the timestep conditions every token."""

    def __init__(self) -> None:
        super().__init__()
        self.history_embed = toys.PatchEmbed3d()
        self.video_embed = toys.PatchEmbed3d()
        self.text_proj = nn.Linear(DIM, DIM)
        self.time_embed = nn.Linear(1, DIM)
        self.attn = toys.Attention()

    def forward(self, x: torch.Tensor, history: torch.Tensor, timestep: torch.Tensor,
                text: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.history_embed(history), self.video_embed(x)]
        if text is not None:
            parts.append(self.text_proj(text))
        tokens = torch.cat(parts, dim=1) + self.time_embed(timestep[:, None] / 1000.0)[:, None]
        return tokens + self.attn(tokens)


def _inputs(*, text: bool, history_shape: tuple[int, ...] = HISTORY_SHAPE, t: float = 999.0) -> dict:
    torch.manual_seed(1)
    inputs = {"x": toys.video_input(), "history": torch.randn(history_shape), "timestep": torch.full((B,), t)}
    if text:
        inputs["text"] = toys.text_input()
    return inputs


def _site(inputs: dict):
    torch.manual_seed(0)
    gm, _ = capture_graph(HistoryVideoText().eval(), inputs)
    (site,) = find_attention_sites(gm)
    return site


def test_history_video_text_reduces_the_largest_video_segment_with_text_on_both_sides():
    site = _site(_inputs(text=True))

    assert (site.kind, site.text_position) == ("joint", "both")
    assert (site.video_tokens, site.grid) == (N_VIDEO, GRID)
    assert site.tokens_before == N_HISTORY and site.video_start == N_HISTORY
    assert site.text_tokens == N_HISTORY + TEXT  # everything kept whole: history and text
    assert site.query_tokens == site.key_tokens == N_HISTORY + N_VIDEO + TEXT
    assert site.reducible and site.features == ("q", "kv", "h")
    assert site.hidden_states_video_start == site.output_video_start == N_HISTORY
    assert site.to_dict()["tokens_before"] == N_HISTORY


def test_history_video_without_text_is_text_first_with_the_history_before_the_video():
    site = _site(_inputs(text=False))

    assert (site.kind, site.text_position) == ("joint", "first")
    assert (site.video_tokens, site.grid) == (N_VIDEO, GRID)
    assert site.tokens_before == site.video_start == site.text_tokens == N_HISTORY
    assert site.reducible and site.features == ("q", "kv", "h")


def test_a_larger_history_wins_over_the_current_video():
    # the rule is "largest segment with a grid", whichever side it is on
    site = _site(_inputs(text=True, history_shape=(B, toys.C, 8, 8, 8)))  # (8, 4, 4) = 128 tokens

    assert (site.kind, site.text_position) == ("joint", "last")
    assert (site.video_tokens, site.grid, site.video_start) == (128, (8, 4, 4), 0)
    assert site.text_tokens == N_VIDEO + TEXT


def test_two_video_segments_of_equal_size_are_unreducible():
    site = _site(_inputs(text=False, history_shape=tuple(toys.video_input().shape)))

    assert (site.kind, site.reducible, site.features) == ("unknown", False, ())
    assert site.video_tokens is None and site.grid is None
    assert "several separate video segments" in site.reason


# ---------------------------------------------------------------------------------------------
# end to end: the backend reduces the middle span


class _RecordAttention(TorchFunctionMode):
    """Records ``(query, key)`` of every ``scaled_dot_product_attention`` call."""

    def __init__(self, calls: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs["key"]
            self.calls.append((query.detach().clone(), key.detach().clone()))
        return func(*args, **kwargs)


def _recording_compiler(calls: list[tuple[torch.Tensor, torch.Tensor]]):
    """:func:`helpers.eager_compiler` whose graphs record their attention inputs."""

    def inductor_compiler(gm: torch.fx.GraphModule, mode: str | None = None):
        compile_graph = eager_compiler(gm, mode)

        def compile_recording(graph: torch.fx.GraphModule, example_inputs):
            fn = compile_graph(graph, example_inputs)

            def run(*args):
                with _RecordAttention(calls):
                    return fn(*args)

            return run

        return compile_recording

    return inductor_compiler


def _rows_come_from(rows: torch.Tensor, candidates: torch.Tensor) -> bool:
    """Whether every row of ``rows (B, H, n, d)`` equals some row of ``candidates (B, H, m, d)``."""
    equal = (rows[..., :, None, :] == candidates[..., None, :, :]).all(dim=-1)  # (B, H, n, m)
    return bool(equal.any(dim=-1).all())


def test_backend_reduces_only_the_current_video_span_between_history_and_text(monkeypatch):
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", _recording_compiler(calls))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = HistoryVideoText().eval()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    try:
        with torch.no_grad():
            outputs = [compiled(**_inputs(text=True, t=t)) for t in (999.0, 749.0)]
            eager_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
            with _RecordAttention(eager_calls):
                expected = model(**_inputs(text=True, t=749.0))
        report = assert_reduced(backend, sites={0})  # before torch._dynamo.reset(), which ends the video
    finally:
        torch._dynamo.reset()

    (graph,) = report["graphs"]
    (site,) = graph["sites"]
    assert report["steps"] == 2 and graph["calls"] == 2
    assert (site["kind"], site["text_position"], site["tokens_before"]) == ("joint", "both", N_HISTORY)
    assert site["hidden_states_video_start"] == site["output_video_start"] == N_HISTORY
    kept_q, kept_kv = site["applied"]["q"]["kept_tokens"], site["applied"]["kv"]["kept_tokens"]
    assert site["applied"]["q"]["video_tokens"] == site["applied"]["kv"]["video_tokens"] == N_VIDEO
    assert 0 < kept_q < N_VIDEO and 0 < kept_kv < N_VIDEO

    output = outputs[-1]
    assert output.shape == expected.shape == (B, N_HISTORY + N_VIDEO + TEXT, DIM)
    assert torch.isfinite(output).all()
    assert float((output - expected).norm() / expected.norm()) <= 0.5

    # the attention of the second call saw the history, then the kept video rows, then the text
    assert len(calls) == 2 and len(eager_calls) == 1
    query, key = calls[-1]
    full_query, full_key = eager_calls[0]
    assert query.shape[-2] == N_HISTORY + kept_q + TEXT
    assert key.shape[-2] == N_HISTORY + kept_kv + TEXT
    for reduced, full, kept in ((query, full_query, kept_q), (key, full_key, kept_kv)):
        assert torch.equal(reduced[..., :N_HISTORY, :], full[..., :N_HISTORY, :])  # history rows intact
        assert torch.equal(reduced[..., -TEXT:, :], full[..., -TEXT:, :])  # text rows intact
        middle = reduced[..., N_HISTORY:N_HISTORY + kept, :]
        assert _rows_come_from(middle, full[..., N_HISTORY:N_HISTORY + N_VIDEO, :])  # kept video rows
        assert torch.unique(middle[0, 0], dim=0).shape[0] == kept  # each a different video token


def test_history_and_text_queries_differ_from_every_video_query():
    """Sanity of the toy: the history and text tokens are distinct from every video token, so the
    row checks above could not pass by coincidence."""
    torch.manual_seed(0)
    model = HistoryVideoText().eval()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad(), _RecordAttention(calls):
        model(**_inputs(text=True))
    (query, _), = calls
    video = query[..., N_HISTORY:N_HISTORY + N_VIDEO, :]
    others = torch.cat([query[..., :N_HISTORY, :], query[..., -TEXT:, :]], dim=-2)
    assert not (others[..., :, None, :] == video[..., None, :, :]).all(dim=-1).any()
    assert _rows_come_from(video[..., ::3, :], video) and not _rows_come_from(others, video)
