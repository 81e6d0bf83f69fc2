"""``match_on="hidden_states"`` and ``redraw_split`` through the backend on the reference DiT:
the real analysis finds every site's hidden states, the matchings the runtime computes are those
of the ops on the block's attention input, and splits change per window only when asked."""

from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "min_video_tokens": 16}


def test_matchings_are_those_of_the_ops_on_each_attention_input():
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS, cache_steps=1, match_on="hidden_states"),
                             on_matching=records.append)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    attention_inputs = []  # the video part of each block's attention input, eager, in call order
    with torch.no_grad():
        out = compiled(**inputs)
        hooks = [block.attn.register_forward_pre_hook(lambda _, args: attention_inputs.append(args[0]))
                 for block in model.blocks]
        reference = model(**inputs)
    for hook in hooks:
        hook.remove()
    assert_reduced(backend, sites={0, 1})
    assert torch.isfinite(out).all() and not torch.allclose(out, reference)
    assert sorted({(r.site.index, r.feature) for r in records}) == [(s, f) for s in range(len(model.blocks))
                                                                    for f in ("kv", "q")]
    for record in records:
        hidden = attention_inputs[record.site.index]  # (B, N, D), computed by eager blocks
        num_keep = record.indices.keep.shape[-1]
        matching = ops.match_tokens(hidden, record.split)
        expected = ops.indices_over_heads(ops.reduction_indices(record.split, matching, num_keep))
        assert record.indices.keep.shape == (hidden.shape[0], 1, num_keep)  # one matching for all heads
        # The first block sees the same input either way; later ones differ by the reduction upstream.
        if record.site.index == 0:
            assert torch.equal(record.indices.keep, expected.keep)
            assert torch.equal(record.indices.restore, expected.restore)


def _splits(redraw_split: bool, steps: int = 4, videos: int = 2) -> list[tuple[int, int, torch.Tensor]]:
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS, cache_steps=2, redraw_split=redraw_split),
                             on_matching=records.append)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    text, null_text = inputs["encoder_hidden_states"][:1], inputs["encoder_hidden_states"][1:]
    with torch.no_grad():
        for _ in range(videos):
            sample(compiled, inputs["hidden_states"][:1], text, null_text, SamplerConfig(steps=steps))
    assert_reduced(backend, sites={0, 1})
    return [(r.step, r.site.index, r.split.dst) for r in records if r.feature == "q"]


def test_redraw_split_draws_one_split_per_window_the_same_in_every_video():
    records = _splits(redraw_split=True)
    by_step = {}
    for step, site, dst in records:
        by_step.setdefault((site, step), []).append(dst)
    assert sorted(step for site, step in by_step if site == 0) == [0, 2]  # matchings on windows' first steps
    for dsts in by_step.values():
        assert len(dsts) == 2 and torch.equal(dsts[0], dsts[1])  # deterministic: same split in both videos
    for site in {site for site, _ in by_step}:
        assert not torch.equal(by_step[site, 0][0], by_step[site, 2][0])  # a new split in window 1


def test_without_redraw_every_window_reuses_one_split():
    records = _splits(redraw_split=False, videos=1)
    for site in {site for _, site, _ in records}:
        dsts = [dst for _, s, dst in records if s == site]
        assert len(dsts) == 2 and torch.equal(dsts[0], dsts[1])


def test_cache_derives_indices_with_the_head_axis_for_hidden_matching():
    from asymrnr_compile.runtime import MatchingCache

    split = ops.split_tokens(32, (2, 4, 4), seed=0)
    hidden = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(0))
    matching = ops.match_tokens(hidden, split)
    stored = ops.indices_over_heads(ops.reduction_indices(split, matching, 20))
    cache = MatchingCache()
    cache.store((0, 0, "q"), 0, 20, {**matching._asdict(), **stored._asdict()})
    derived = cache.indices((0, 0, "q"), 12, split)
    expected = ops.indices_over_heads(ops.reduction_indices(split, matching, 12))
    assert derived.keep.shape == (2, 1, 12)
    assert torch.equal(derived.keep, expected.keep) and torch.equal(derived.restore, expected.restore)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="match_on"):
        AsymRnRConfig(match_on="queries")
    with pytest.raises(TypeError, match="redraw_split"):
        AsymRnRConfig(redraw_split=1)


def test_reference_dit_sites_match_on_the_hidden_states(caplog):
    """Every site reduced, each matching made on the hidden states (one per batch element, shared
    by the heads: a head axis of 1), and no log line about falling back to the features."""
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS, match_on="hidden_states"), on_matching=records.append)
    with caplog.at_level(logging.INFO, logger="asymrnr_compile"), torch.no_grad():
        torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
    assert_reduced(backend, sites={0, 1}, features={0: {"q", "kv"}, 1: {"q", "kv"}})
    assert sorted((r.site.index, r.feature) for r in records) == [(0, "kv"), (0, "q"), (1, "kv"), (1, "q")]
    batch = inputs["hidden_states"].shape[0]
    for record in records:
        assert record.site.hidden_matching_problem() is None
        assert record.indices.keep.shape[:-1] == (batch, 1) and record.indices.restore.shape == (batch, 1, 32)
    assert "not the hidden states" not in caplog.text
    assert "matches q/kv on the features" not in caplog.text
