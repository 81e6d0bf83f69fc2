"""Quality detectors: ~100% on ground truth of every caption, lower on each corruption."""

from __future__ import annotations

import json
import math
from collections import deque

import pytest
import torch

from asymrnr_lab.synthetic import (
    Caption,
    DetectorThresholds,
    adherence,
    all_captions,
    all_correct,
    corrupt,
    detect_attributes,
    label_components,
    psnr,
    render_video,
    score_samples,
    ssim,
    temporal_consistency,
    validity,
)
from asymrnr_lab.synthetic.validate import applicable, score_kind

# ---------------------------------------------------------------------------------------------
# Ground truth: every caption combination
# ---------------------------------------------------------------------------------------------


def test_ground_truth_scores_100_percent_for_every_caption(config):
    report = score_kind(render_video, config, seeds=(0, 1))
    assert report.num_samples == 2 * config.num_captions
    assert report.valid == 100.0, report.invalid_reasons
    assert report.all_correct == 100.0
    assert set(report.attribute_accuracy) == {"colour", "background", "shape", "direction",
                                              "count"}
    assert all(v == 100.0 for v in report.attribute_accuracy.values())
    assert report.temporal["jitter_px"] < 0.05  # straight lines, exact up to anti-aliasing


def test_ground_truth_wide_config(wide_config):
    """Two objects, two speeds and diamonds are read exactly too (every 3rd caption)."""
    report = score_kind(render_video, wide_config, seeds=(0,),
                        captions=all_captions(wide_config)[::3])
    assert report.all_correct == 100.0, report.invalid_reasons
    assert report.attribute_accuracy["speed"] == 100.0


def test_detected_attributes_of_one_video(config):
    caption = Caption("triangle", "yellow", "white", "up")
    video = render_video(caption, config, 0)
    found = detect_attributes(video, config)
    assert (found.shape, found.colour, found.background, found.direction, found.count) == (
        "triangle", "yellow", "white", "up", 1
    )
    assert found.objects_per_frame == (1,) * config.frames
    assert found.velocity_px == pytest.approx((-1.5, 0.0), abs=0.02)
    assert found.fill_ratio == pytest.approx(0.5, abs=0.1)
    assert found.shape_iou > 0.98
    assert validity(video, config) == (True, "ok")
    assert adherence(video, caption.text, config) == dict.fromkeys(
        ("colour", "background", "shape", "direction", "count"), True
    )
    assert all_correct(video, caption, config)


# ---------------------------------------------------------------------------------------------
# Corruptions: each must hurt what it targets
# ---------------------------------------------------------------------------------------------

#: Corruption -> (the report figure it must lower, the most that figure may keep, in %).
EXPECTED_DROP = {
    "wrong_colour": ("colour", 0.0),
    "wrong_background": ("background", 0.0),
    "wrong_shape": ("shape", 0.0),
    "blob": ("valid", 0.0),
    "reversed_motion": ("direction", 0.0),
    "perpendicular_motion": ("direction", 0.0),
    "static": ("direction", 0.0),
    "extra_object": ("valid", 0.0),  # counts=(1,): two objects are invalid, and count wrong
    "shrunk": ("valid", 0.0),
    "vanishing": ("valid", 0.0),
    "noise_0.5": ("valid", 10.0),
    "blur_2": ("valid", 80.0),
    "shuffled_frames": ("direction", 50.0),
}

#: Mild corruptions a decent generator shows: they must still pass.
STILL_PASS = ("noise_0.1", "blur_0.5")


@pytest.fixture(scope="module")
def subset(config):
    """Every 3rd caption (32: every shape, colour, background and direction appear)."""
    return all_captions(config)[::3]


@pytest.fixture(scope="module")
def ground_truth_report(config, subset):
    return score_kind(render_video, config, seeds=(5,), captions=subset)


def test_every_corruption_has_an_expectation(config):
    assert set(EXPECTED_DROP) | set(STILL_PASS) == set(corrupt.CORRUPTIONS)
    assert all(applicable(name, config) for name in corrupt.CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(EXPECTED_DROP))
def test_corruption_is_caught(name, config, subset, ground_truth_report):
    render, _ = corrupt.CORRUPTIONS[name]
    report = score_kind(render, config, seeds=(5,), captions=subset)
    figure, at_most = EXPECTED_DROP[name]
    value = report.valid if figure == "valid" else report.attribute_accuracy[figure]
    assert value <= at_most, report.summary()
    assert report.all_correct < ground_truth_report.all_correct == 100.0
    if name == "extra_object":
        assert report.attribute_accuracy["count"] == 0.0


@pytest.mark.parametrize("name", STILL_PASS)
def test_mild_corruption_still_passes(name, config, subset):
    render, _ = corrupt.CORRUPTIONS[name]
    report = score_kind(render, config, seeds=(5,), captions=subset)
    assert report.all_correct == 100.0, report.summary()


def test_blob_would_pass_a_fill_ratio_detector(config, subset):
    """Why validity exists: blobs have the fill ratio of a circle."""
    circles = [c for c in subset if c.shape == "circle"]
    for caption in circles:
        found = detect_attributes(corrupt.blob(caption, config, 0), config)
        assert 0.6 < found.fill_ratio < 0.9
        assert found.shape == "circle"  # the best template, yet ...
        valid, reason = validity(corrupt.blob(caption, config, 0), config)
        assert not valid and "shapeless" in reason


def test_extra_object_counts_two_when_two_are_allowed(wide_config):
    caption = Caption("square", "green", "black", "right", 1, "slowly")
    video = corrupt.extra_object(caption, wide_config, 0)
    assert validity(video, wide_config)[0]
    found = detect_attributes(video, wide_config)
    assert found.count == 2 and found.objects_per_frame == (2,) * wide_config.frames
    assert adherence(video, caption, wide_config)["count"] is False


def test_invalid_reasons(config):
    caption = all_captions(config)[0]
    blank = render_video(caption, config, 0).clone()
    blank[:] = -1.0
    assert validity(blank, config) == (False, "frame 0: no object")
    noisy = corrupt.noise(0.5)(caption, config, 0)
    valid, reason = validity(noisy, config)
    assert not valid and ("clutter" in reason or "objects" in reason)
    valid, reason = validity(corrupt.shrunk(caption, config, 0), config)
    assert not valid and "area" in reason


# ---------------------------------------------------------------------------------------------
# Temporal consistency
# ---------------------------------------------------------------------------------------------


def test_shuffled_frames_are_less_consistent(config, subset):
    for caption in subset[:8]:
        clean = temporal_consistency(render_video(caption, config, 1), config)
        shuffled = temporal_consistency(corrupt.shuffled_frames(caption, config, 1), config)
        assert shuffled["mean_change"] > clean["mean_change"]
        assert shuffled["flicker"] > 1.5 * clean["flicker"]
        assert clean["jitter_px"] < 0.05 < 1.0 < shuffled["jitter_px"]


def test_temporal_metrics_basics(config):
    video = render_video(all_captions(config)[0], config, 0)
    still = video[:, :1].expand_as(video)
    assert temporal_consistency(still) == {"mean_change": 0.0, "flicker": 0.0}
    alternating = video[:, :1].repeat(1, config.frames, 1, 1)
    alternating[:, 1::2] *= -1
    m = temporal_consistency(alternating)
    assert m["flicker"] == pytest.approx(m["mean_change"])
    assert math.isnan(temporal_consistency(torch.full_like(video, -1.0), config)["jitter_px"])


# ---------------------------------------------------------------------------------------------
# Fidelity: PSNR and SSIM
# ---------------------------------------------------------------------------------------------


def test_ssim_and_psnr_identity(config):
    x = render_video(all_captions(config)[3], config, 0)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert psnr(x, x) == math.inf
    batch = torch.stack([x, -x])
    assert torch.allclose(ssim(batch, batch), torch.ones(2, dtype=torch.float64))


def test_psnr_and_ssim_fall_with_noise(config):
    x = render_video(all_captions(config)[3], config, 0)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    sigmas = (0.01, 0.03, 0.1, 0.3, 1.0)
    p = [psnr(x + s * noise, x) for s in sigmas]
    s = [ssim(x + s * noise, x) for s in sigmas]
    assert all(a > b for a, b in zip(p, p[1:]))
    assert all(a > b for a, b in zip(s, s[1:]))
    assert p[0] == pytest.approx(10 * math.log10(4 / (0.01**2 * noise.pow(2).mean())), rel=1e-9)
    assert s[-1] < 0.3 and s[0] > 0.95


def test_ssim_matches_definition_on_constant_frames(config):
    """Constant frames: SSIM reduces to the luminance term (2 mu_x mu_y + C1) / (mu_x^2 +
    mu_y^2 + C1)."""
    a = torch.full(config.video_shape, 0.2)
    b = torch.full(config.video_shape, -0.4)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.2 * -0.4 + c1) / (0.2**2 + 0.4**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-6)


def test_fidelity_shape_errors(config):
    x = torch.zeros(config.video_shape)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:, :2])
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        ssim(x[0], x[0])


# ---------------------------------------------------------------------------------------------
# Connected components
# ---------------------------------------------------------------------------------------------


def _reference_labels(mask: torch.Tensor) -> list[set]:
    """Components of a 2-D mask by breadth-first search (8-connectivity), as sets of pixels."""
    h, w = mask.shape
    seen, comps = set(), []
    for i in range(h):
        for j in range(w):
            if mask[i, j] and (i, j) not in seen:
                comp, queue = set(), deque([(i, j)])
                seen.add((i, j))
                while queue:
                    y, x = queue.popleft()
                    comp.add((y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            n = (y + dy, x + dx)
                            if 0 <= n[0] < h and 0 <= n[1] < w and mask[n] and n not in seen:
                                seen.add(n)
                                queue.append(n)
                comps.append(comp)
    return comps


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_label_components_matches_bfs(density):
    gen = torch.Generator().manual_seed(int(density * 100))
    masks = torch.rand(3, 12, 15, generator=gen) < density
    labels = label_components(masks)
    for mask, lab in zip(masks, labels):
        ours = [
            {tuple(p) for p in (lab == v).nonzero().tolist()}
            for v in lab.unique().tolist() if v != 0
        ]
        assert sorted(map(sorted, ours)) == sorted(map(sorted, _reference_labels(mask)))
    assert (labels[~masks] == 0).all()
    # Labels are unique across slices.
    per_slice = [set(lab.unique().tolist()) - {0} for lab in labels]
    assert not (per_slice[0] & per_slice[1]) and not (per_slice[1] & per_slice[2])


def test_label_components_snake():
    """A long one-pixel path is one component (propagation runs to convergence)."""
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[0::4, :] = True
    mask[1:4, 8] = True
    mask[5:8, 0] = True
    labels = label_components(mask)
    assert labels[mask].unique().numel() == 1


# ---------------------------------------------------------------------------------------------
# Aggregation and thresholds
# ---------------------------------------------------------------------------------------------


def test_score_samples_with_reference(config):
    captions = all_captions(config)[:4]
    reference = torch.stack([render_video(c, config, 0) for c in captions])
    gen = torch.Generator().manual_seed(0)
    noisy = reference + 0.05 * torch.randn(reference.shape, generator=gen)
    same = score_samples(reference, [c.text for c in captions], config, reference=reference)
    assert same.psnr == math.inf and same.ssim == pytest.approx(1.0)
    report = score_samples(noisy, captions, config, reference=reference)
    assert report.num_samples == 4 and report.all_correct == 100.0
    assert 20 < report.psnr < 40 and 0.5 < report.ssim < 1.0
    summary = json.loads(json.dumps(report.to_dict(with_samples=True)))
    assert summary["all_correct"] == 100.0 and len(summary["samples"]) == 4
    assert "valid and all attributes right: 100.0%" in report.summary()
    without = score_samples(noisy, captions, config)
    assert without.psnr is None and without.ssim is None


def test_score_samples_counts_invalid_reasons(config):
    captions = all_captions(config)[:3]
    videos = [corrupt.blob(c, config, 0) for c in captions] + [
        corrupt.vanishing(captions[0], config, 0)
    ]
    report = score_samples(videos, [*captions, captions[0]], config)
    assert report.valid == 0.0 and report.invalid_reasons == {"shapeless": 3, "no object": 1}


def test_score_samples_argument_errors(config):
    captions = all_captions(config)[:2]
    videos = torch.stack([render_video(c, config, 0) for c in captions])
    with pytest.raises(ValueError, match="captions"):
        score_samples(videos, captions[:1], config)
    with pytest.raises(ValueError, match="reference"):
        score_samples(videos, captions, config, reference=videos[:1])
    with pytest.raises(ValueError, match="config"):
        validity(videos[0][:, :4], config)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_shape_iou": 1.5}, "min_shape_iou"),
        ({"mask_contrast_fraction": -0.1}, "mask_contrast_fraction"),
        ({"area_range": (1.5, 0.6)}, "area_range"),
        ({"rim_px": -1}, "rim_px"),
        ({"edge_sharpening": 0.5}, "edge_sharpening"),
        ({"min_speed_fraction": math.inf}, "min_speed_fraction"),
    ],
)
def test_bad_thresholds_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        DetectorThresholds(**overrides)


def test_thresholds_change_the_verdict(config):
    caption = all_captions(config)[0]
    blob = corrupt.blob(caption, config, 0)
    assert not validity(blob, config)[0]
    assert validity(blob, config, DetectorThresholds(min_shape_iou=0.5))[0]
