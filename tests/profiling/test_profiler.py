"""Redundancy profiling: compiled statistics equal an eager computation, outputs are unchanged."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch._dynamo

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.ops import redundancy
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.models import reference_dit as reference_dit_module
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"  # 2 blocks; 8 text + 32 video tokens on a 2x4x4 grid
STEPS = 3
CONFIG = AsymRnRConfig(min_video_tokens=16, seed=3)


@pytest.fixture(scope="module")
def model():
    return build_reference_model(PRESET)


@pytest.fixture(scope="module")
def inputs():
    return reference_inputs(PRESET)


def _loop(fn, inputs):
    return sample(fn, inputs["hidden_states"][:1], inputs["encoder_hidden_states"][:1],
                  inputs["encoder_hidden_states"][1:], SamplerConfig(steps=STEPS))


@pytest.fixture(scope="module")
def profiled(model, inputs):
    torch._dynamo.reset()
    outputs = {}
    calls = []

    def run(compiled):
        outputs["profiled"] = _loop(compiled, inputs)

    prof = asymrnr_compile.profile(model, run, config=CONFIG, on_call=calls.append)
    torch._dynamo.reset()
    with torch.no_grad():
        outputs["inductor"] = _loop(torch.compile(model, backend="inductor", fullgraph=True, dynamic=False), inputs)
    torch._dynamo.reset()
    return prof, outputs, calls


def _eager_features(model, inputs):
    """Per step, per block: the SDPA q, k, v and the hidden states entering to_q, captured eagerly."""
    captured: list[dict[str, torch.Tensor]] = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    class Recorder:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def scaled_dot_product_attention(q, k, v, *args, **kwargs):
            captured[-1].update(q=q, k=k, v=v)
            return real_sdpa(q, k, v, *args, **kwargs)

    def pre_hook(module, args):
        captured.append({"h": args[0]})

    hooks = [block.attn.to_q.register_forward_pre_hook(pre_hook) for block in model.blocks]
    original = reference_dit_module.F
    reference_dit_module.F = Recorder()
    try:
        with torch.no_grad():
            _loop(model, inputs)
    finally:
        reference_dit_module.F = original
        for hook in hooks:
            hook.remove()
    blocks = len(model.blocks)
    return [captured[step * blocks:(step + 1) * blocks] for step in range(STEPS)]


def _eager_stats(x, split, num_tokens, start):
    """The statistics written out with torch.quantile and a plain sort, independently of the pass."""
    matching = ops.match_tokens(x, split, start=start)
    video = x[..., start:start + num_tokens, :].float()
    scale = 2 * video.var(dim=-2, unbiased=False).sum(-1, keepdim=True)
    d = (matching.distance / scale).reshape(-1, matching.distance.shape[-1])
    values = [d.mean(), *(torch.quantile(d.reshape(-1), q) for q in redundancy.DEFAULT_QUANTILES)]
    means, shares = [], []
    for ratio in redundancy.DEFAULT_PROFILE_RATIOS:
        dropped = num_tokens - ops.num_kept_tokens(num_tokens, len(split.dst), ratio)
        smallest = d.sort(dim=-1).values[:, :dropped]
        means.append(smallest.mean())
        shares.append(smallest.sum() / d.sum())
    return torch.stack([*values, *means, *shares]).double()


def test_statistics_equal_an_eager_computation(profiled, model, inputs):
    prof, _, calls = profiled
    assert calls == list(range(STEPS))  # one call per step, progress reported
    assert [s.name for s in prof.sites] == ["blocks.0.attn", "blocks.1.attn"]
    assert [s.row for s in prof.sites] == [0, 1]
    assert prof.data.shape == (2, STEPS, 4, len(prof.stat_names))
    features = _eager_features(model, inputs)
    text, video, grid = 8, 32, (2, 4, 4)
    checked = 0
    for position, site in enumerate(prof.sites):
        for f_index, feature in enumerate(prof.features):
            if feature not in site.features:
                continue
            split_feature = {"q": "q", "k": "kv", "v": "kv", "h": "h"}[feature]
            seed = site_seed(CONFIG.seed, site.index, split_feature)
            split = ops.split_tokens(video, grid, CONFIG.dst_stride, seed=seed)
            for step in range(STEPS):
                x = features[step][site.index][feature]
                expected = _eager_stats(x, split, video, text)
                torch.testing.assert_close(prof.data[position, step, f_index], expected, rtol=2e-4, atol=2e-5)
                checked += 1
    assert checked == 2 * STEPS * 4  # h, q, k and v of both sites at every step


def test_profiling_leaves_the_outputs_unchanged(profiled):
    _, outputs, _ = profiled
    reference = outputs["inductor"]
    error = float((outputs["profiled"] - reference).abs().max() / reference.abs().max())
    assert error <= 1e-5


def test_profile_to_dict_has_a_redundancy_key_per_site(profiled):
    prof, _, _ = profiled
    report = prof.to_dict()
    site = report["sites"][0]
    assert set(site["redundancy"]) == {"h", "q", "k", "v"}
    assert len(site["redundancy"]["q"]["mean"]) == STEPS
    assert all(0 < v < 2 for v in site["redundancy"]["v"]["mean"])
    tiers = prof.tiers()
    assert tiers["q"].shape == (2, STEPS) and tiers["q"].dtype == torch.int64


def test_bad_profile_settings_raise():
    with pytest.raises(ValueError, match="ratios must be in"):
        asymrnr_compile.profiling.ProfilingBackend(ratios=(1.5,))
    with pytest.raises(TypeError, match="run_fn must be callable"):
        asymrnr_compile.profile(torch.nn.Linear(2, 2), None)
    assert math.isclose(redundancy.redundancy_stats(torch.ones(1, 4), 8, 4)[0].item(), 1.0)


def test_calibrate_meets_its_target_most_redundant_first(profiled):
    from asymrnr_compile.profiling.calibrate import (
        DEFAULT_LADDER,
        MEASURED_ON,
        calibrate,
        predicted_speedup,
    )

    prof, _, _ = profiled
    target = 1.04  # the tiny preset spends only ~9% of its FLOPs in attention
    schedule = calibrate(prof, target_speedup=target)
    assert (schedule.num_blocks, schedule.num_steps) == (prof.num_rows, STEPS)
    predicted = predicted_speedup(prof, schedule)
    assert predicted >= target
    reduced = {f: schedule.ratios(f) for f in ("q", "kv")}
    assert sum(int((t > 0).sum()) for t in reduced.values()) > 0
    assert float(schedule.ratios("h").abs().sum()) == 0.0  # h is not on the default ladder
    # Greedy order: every move less damaging than the most damaging one taken was taken.
    taken = []
    for feature, rungs in DEFAULT_LADDER.items():
        f_index = prof.features.index(MEASURED_ON[feature])
        for ratio in rungs:
            damage = prof.row_stat(f"drop_mean@{ratio:g}")[..., f_index]
            taken += [(float(damage[r, s]), feature, ratio, r, s) for r in range(prof.num_rows) for s in range(STEPS)]
    last = max(d for d, f, ratio, r, s in taken if float(reduced[f][r, s]) >= ratio)
    for d, f, ratio, r, s in taken:
        if d < last:
            assert float(reduced[f][r, s]) >= ratio, (f, ratio, r, s)
    with pytest.raises(ValueError, match="not reachable"):
        calibrate(prof, target_speedup=5.0)
    with pytest.raises(ValueError, match="target_speedup must be"):
        calibrate(prof, target_speedup=0.5)


ERROR_RATIOS = (0.3, 0.5)


@pytest.fixture(scope="module")
def profiled_with_errors(model, inputs):
    torch._dynamo.reset()
    outputs = {}

    def run(compiled):
        outputs["profiled"] = _loop(compiled, inputs)

    prof = asymrnr_compile.profile(model, run, config=CONFIG, error_ratios=ERROR_RATIOS)
    torch._dynamo.reset()
    return prof, outputs["profiled"]


def _eager_errors(q, k, v, split, matched, reduction, num_tokens, start):
    """Output errors written out directly: a reduced query row is exact for the kept queries
    (attention rows are independent), a dropped one copies its stand-in's exact row."""
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)[..., start:start + num_tokens, :]
    matching = ops.match_tokens(matched, split, start=start)
    errors = []
    for ratio in ERROR_RATIOS:
        indices = ops.reduction_indices(split, matching, ops.num_kept_tokens(num_tokens, len(split.dst), ratio))
        if reduction == "q":
            stand_in = torch.gather(indices.keep, -1, indices.restore)  # (B, H, N) token standing for each
            approx = torch.gather(exact, -2, stand_in.unsqueeze(-1).expand_as(exact))
        else:
            text_keys = torch.arange(start, device=q.device).expand(*indices.keep.shape[:-1], start)
            keys = torch.cat([text_keys, indices.keep + start], dim=-1).unsqueeze(-1)
            k_kept = torch.gather(k, -2, keys.expand(*keys.shape[:-1], k.shape[-1]))
            v_kept = torch.gather(v, -2, keys.expand(*keys.shape[:-1], v.shape[-1]))
            approx = torch.nn.functional.scaled_dot_product_attention(q, k_kept, v_kept)[..., start:, :]
        errors.append(((approx - exact).norm(dim=-1) / exact.norm(dim=-1)).mean())
    return torch.stack(errors).double()


def test_output_errors_equal_an_eager_computation_and_leave_the_outputs_alone(profiled_with_errors, profiled,
                                                                              model, inputs):
    prof, output = profiled_with_errors
    assert prof.stat_names[-2:] == ("error@0.3", "error@0.5") and prof.error_ratios == ERROR_RATIOS
    assert prof.to_dict()["error_ratios"] == list(ERROR_RATIOS)
    from asymrnr_compile.profiling.report import markdown_report

    table = markdown_report(prof, title="t").split("## Output error (measured)")[1]
    assert "| site | q @0.3 | q @0.5 | kv @0.3 | kv @0.5 |" in table
    row = next(line for line in table.splitlines() if line.startswith("| blocks.1.attn |"))
    means = [float(cell) for cell in row.strip("|").split("|")[1:]]
    position = [s.name for s in prof.sites].index("blocks.1.attn")
    q_mean = float(prof.stat("error@0.5")[position, :, prof.features.index("q")].mean())
    assert means[1] == pytest.approx(q_mean, abs=6e-4)
    assert "Output error" not in markdown_report(profiled[0], title="t")  # only when recorded
    _, outputs, _ = profiled
    torch.testing.assert_close(output, outputs["profiled"], rtol=0, atol=0)  # measuring changes nothing
    errors = prof.data[..., -2:]
    for feature in ("h", "k"):  # no reduction of its own to measure
        assert bool(torch.isnan(errors[:, :, prof.features.index(feature)]).all())
    features = _eager_features(model, inputs)
    text, video, grid = 8, 32, (2, 4, 4)
    for position, site in enumerate(prof.sites):
        for feature, reduction, split_feature in (("q", "q", "q"), ("v", "kv", "kv")):
            seed = site_seed(CONFIG.seed, site.index, split_feature)
            split = ops.split_tokens(video, grid, CONFIG.dst_stride, seed=seed)
            for step in range(STEPS):
                captured = features[step][site.index]
                expected = _eager_errors(captured["q"], captured["k"], captured["v"], split, captured[feature],
                                         reduction, video, text)
                got = errors[position, step, prof.features.index(feature)]
                assert bool((got > 0).all())
                torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)


def test_calibrate_by_output_error_ranks_moves_by_the_measured_error(profiled_with_errors, profiled):
    from asymrnr_compile.profiling.calibrate import MEASURED_ON, calibrate, predicted_speedup

    prof, _ = profiled_with_errors
    ladder = {"q": (0.5,), "kv": (0.3,)}
    schedule = calibrate(prof, target_speedup=1.02, ladder=ladder, damage="error")
    assert predicted_speedup(prof, schedule) >= 1.02
    assert "damage='error'" in schedule.source
    moves = []
    for feature, (ratio,) in ladder.items():
        cost = prof.row_stat(f"error@{ratio:g}")[..., prof.features.index(MEASURED_ON[feature])]
        moves += [(float(cost[r, s]), feature, ratio, r, s) for r in range(prof.num_rows) for s in range(STEPS)]
    reduced = {f: schedule.ratios(f) for f in ladder}
    last = max(c for c, f, ratio, r, s in moves if float(reduced[f][r, s]) >= ratio)
    assert all(float(reduced[f][r, s]) >= ratio for c, f, ratio, r, s in moves if c < last)
    assert any(float(reduced[f][r, s]) < ratio for c, f, ratio, r, s in moves)  # not everything taken
    with pytest.raises(ValueError, match=r"error_ratios = \(0.3, 0.5\)"):
        calibrate(prof, target_speedup=1.02, ladder={"q": (0.7,)}, damage="error")
    with pytest.raises(ValueError, match="damage='error' measures q and kv"):
        calibrate(prof, target_speedup=1.02, ladder={"h": (0.3,)}, damage="error")
    with pytest.raises(ValueError, match="profile with error_ratios"):
        calibrate(profiled[0], target_speedup=1.02, ladder=ladder, damage="error")
    with pytest.raises(ValueError, match="damage must be one of"):
        calibrate(prof, target_speedup=1.02, damage="psnr")


def test_the_profiler_measures_only_the_sites_the_backend_would_reduce(model, inputs):
    """skip_blocks (and every other site-selection rule) applies to the profile as to the backend."""
    torch._dynamo.reset()
    config = AsymRnRConfig(min_video_tokens=16, seed=3, skip_blocks=(0,))
    prof = asymrnr_compile.profile(model, lambda compiled: _loop(compiled, inputs), config=config)
    torch._dynamo.reset()
    assert [site.block for site in prof.sites] == ["blocks.1"]
    assert prof.skipped == [{"site": "blocks.0.attn", "reason": "block 0 is in skip_blocks"}]
    assert prof.num_rows == 1 and not torch.isnan(prof.data).all()


def test_predicted_speedup_is_the_backends_ideal_for_the_same_schedule_and_config():
    """calibrate's cost model counts the matching as the backend runs it: with the default config
    (q and kv matched on the hidden states, on a 32-dim projection) the predicted speedup of a
    schedule is the ideal speedup the backend reports when it runs that schedule. The "small"
    preset (576 video tokens, hidden 128) is large enough for the projection to save FLOPs, so a
    count of the exact per-head matching gives another number."""
    from asymrnr_compile.profiling.calibrate import calibrate, predicted_speedup

    preset = "small"
    model, inputs = build_reference_model(preset), reference_inputs(preset)
    config = AsymRnRConfig(min_video_tokens=16, seed=3, cache_steps=2)
    assert config.match_on == "hidden_states" and config.match_dims is not None
    torch._dynamo.reset()
    prof = asymrnr_compile.profile(model, lambda compiled: _loop(compiled, inputs), config=config)
    assert prof.sites and all(site.hidden_matched for site in prof.sites)
    schedule = calibrate(prof, target_speedup=1.1, best_effort=True)
    predicted = predicted_speedup(prof, schedule)
    assert predicted > 1.05

    torch._dynamo.reset()
    backend = AsymRnRBackend(dataclasses.replace(config, schedule=schedule))
    _loop(torch.compile(model, backend=backend, fullgraph=True, dynamic=False), inputs)
    torch._dynamo.reset()
    assert backend.report().ideal_speedup == pytest.approx(predicted, rel=1e-9)

    # The same schedule counted with the exact per-head matching: a different (lower) figure.
    exact_config = dataclasses.replace(config, match_dims=None, match_on="features")
    exact_sites = [dataclasses.replace(site, hidden_matched=False) for site in prof.sites]
    exact = predicted_speedup(dataclasses.replace(prof, config=exact_config, sites=exact_sites), schedule)
    assert exact < predicted * (1 - 1e-3)
