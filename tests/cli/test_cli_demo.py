"""The main job, `asymrnr-compile demo`, end to end on small settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asymrnr_lab.cli import main

# The tiny preset is below min_video_tokens: asymrnr compiles it unchanged and warns so (expected here).
UNREDUCED_WARNING = "ignore:asymrnr. a graph with attention runs unreduced"


@pytest.mark.filterwarnings(UNREDUCED_WARNING)
def test_demo_speed_part_on_the_tiny_preset(tmp_path, capsys):
    out = tmp_path / "demo.json"
    code = main(["demo", "--preset", "tiny", "--steps", "3", "--cache-steps", "2", "--quality-prompts", "0",
                 "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # the settings come first
    first = printed.splitlines()[0]
    assert first.startswith("asymrnr settings (preset default): q_ratio 0.5, kv_ratio 0.3, cache_steps 2 ")
    for setting in ("match_on hidden_states", "redraw_split on", "proportional_attention on"):
        assert setting in first
    # progress of every loop on stderr, not in the printed results
    for label in ("warm-up inductor", "warm-up asymrnr", "timed round 1/1"):
        assert re.search(rf"^{re.escape(label)}.*: steps 3/3, \d+\.\d s$", captured.err, flags=re.M), captured.err
    assert "steps 3/3" not in printed
    # the compile line says what it counts, against the warm-up line it is part of
    warmup = re.search(r"^warm-up asymrnr \(one whole loop, compiling included\): (\d+\.\d) s$", printed, flags=re.M)
    compiled = re.search(r"^asymrnr: 0 compiled variants .* Inductor compiled their subgraphs in \d+\.\d s, part of "
                         r"the (\d+\.\d) s asymrnr warm-up above", printed, flags=re.M)
    assert warmup and compiled and warmup.group(1) == compiled.group(1)
    header = next(line for line in printed.splitlines() if line.startswith("variant"))
    assert header.split() == ["variant", "loop", "s", "loop", "ideal", "median", "step", "rel", "err", "PSNR", "dB"]
    speed = json.loads(out.read_text())["speed"]
    assert set(speed["variants"]) == {"eager", "inductor", "asymrnr"}
    report = speed["asymrnr_report"]
    # the tiny preset has 32 video tokens: below min_video_tokens, so asymrnr compiles it unchanged
    # and says why; the numbers must still be there and match Inductor exactly
    assert report["num_variants"] == 0 and report["cache_misses"] == 0
    assert speed["variants"]["asymrnr"]["rel_l2_vs_inductor"] <= 1e-5
    assert speed["variants"]["inductor"]["speedup_vs_inductor"] == 1.0
    assert speed["variants"]["inductor"]["loop_speedup_vs_inductor"] == 1.0


@pytest.mark.slow
def test_demo_reduces_the_small_preset(tmp_path):
    out = tmp_path / "demo.json"
    assert main(["demo", "--preset", "small", "--steps", "3", "--cache-steps", "2", "--quality-prompts", "0",
                 "--json", str(out)]) == 0
    speed = json.loads(out.read_text())["speed"]
    report = speed["asymrnr_report"]
    # two loops (warm-up, timed) x steps 0 and 2 x 2 sites x (q, kv)
    assert report["cache_misses"] == 2 * 2 * 2 * 2
    assert report["ideal_speedup"] > 1.0
    assert 0 < speed["variants"]["asymrnr"]["rel_l2_vs_inductor"] < 0.5


@pytest.mark.slow
def test_demo_quality_part_writes_pictures(tmp_path):
    pytest.importorskip("PIL")
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.cli.demo import run_quality_demo

    result = run_quality_demo(AsymRnRConfig(), tmp_path, num_prompts=2, log=lambda _: None)
    assert len(result.pictures) == 4 and all(Path(p).is_file() for p in result.pictures)
    # the defaults and the published method, side by side
    assert list(result.comparison.variants) == ["unaccelerated", "asymrnr", "asymrnr published"]
    assert result.comparison.variants["asymrnr"].backend_report["config"]["match_on"] == "hidden_states"
    assert result.comparison.variants["asymrnr published"].backend_report["config"]["match_on"] == "features"
    assert all("seconds" not in variant for variant in result.to_dict()["variants"])
    from asymrnr_lab.synthetic.model import (
        FINE_CHECKPOINT_PATH,
        read_checkpoint_metadata,
    )

    assert result.checkpoint_step == read_checkpoint_metadata(FINE_CHECKPOINT_PATH)["step"]  # the 1024-token model
    asymrnr = result.comparison.variants["asymrnr"]
    assert asymrnr.backend_report["cache_misses"] > 0
    assert asymrnr.report.psnr is not None


@pytest.mark.filterwarnings(UNREDUCED_WARNING)
@pytest.mark.parametrize("flags, chosen", [
    (["--published", "--match-on", "hidden_states", "--redraw-split", "--proportional-attention"],
     ("published", "hidden_states", True, True, 5)),
    (["--match-on", "features", "--no-redraw-split", "--no-proportional-attention"],
     ("default", "features", False, False, 2)),
    (["--published"], ("published", "features", True, False, 5)),  # the official split policy
    (["--published", "--no-redraw-split"], ("published", "features", False, False, 5)),
])
def test_demo_passes_the_preset_and_matching_options_to_the_backend(tmp_path, flags, chosen):
    out = tmp_path / "demo.json"
    code = main(["demo", "--preset", "tiny", "--steps", "2", "--quality-prompts", "0", *flags, "--json", str(out)])
    assert code == 0
    config = json.loads(out.read_text())["speed"]["asymrnr_report"]["config"]
    names = ("preset", "match_on", "redraw_split", "proportional_attention", "cache_steps")
    assert tuple(config[name] for name in names) == chosen


def test_demo_rejects_a_bad_matching_option():
    with pytest.raises(SystemExit):
        main(["demo", "--preset", "tiny", "--match-on", "queries"])


def test_quality_model_choice_is_checked():
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.cli.demo import run_quality_demo

    with pytest.raises(ValueError, match="model_preset"):
        run_quality_demo(AsymRnRConfig(), "unused", model_preset="attention")
    with pytest.raises(SystemExit):
        main(["demo", "--quality-model", "attention"])


def test_quality_part_runs_the_other_preset_next_to_the_given_settings():
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.cli.demo import quality_variants

    given = AsymRnRConfig(q_ratio=0.4, kv_ratio=0.2)
    variants = quality_variants(given)
    assert list(variants) == ["asymrnr", "asymrnr published"] and variants["asymrnr"] == given
    assert variants["asymrnr published"] == AsymRnRConfig(preset="published", q_ratio=0.4, kv_ratio=0.2)
    published = AsymRnRConfig(preset="published")
    variants = quality_variants(published)
    assert list(variants) == ["asymrnr", "asymrnr defaults"] and variants["asymrnr defaults"] == AsymRnRConfig()
    assert list(quality_variants(given, with_comparison=False)) == ["asymrnr"]


def test_the_printed_legends_say_what_is_where():
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.cli.demo import picture_legend, quality_legend, quality_variants

    legend = picture_legend(["unaccelerated", "asymrnr", "asymrnr published"])
    assert "PNG: one row per variant, top to bottom: unaccelerated, asymrnr, asymrnr published" in legend
    assert "GIF: the same variants left to right" in legend and "caption" in legend
    text = quality_legend(quality_variants(AsymRnRConfig()))
    assert "no timing column" in text and "asymrnr published: the same ratios with the published method" in text
    assert "docs/defaults.md" in text
    assert "a low PSNR with every video right is expected" in text  # why the object may sit elsewhere


def test_the_quality_table_can_leave_out_the_seconds():
    import torch

    from asymrnr_lab.synthetic.compare import QualityComparison, VariantQuality
    from asymrnr_lab.synthetic.quality import QualityReport

    report = QualityReport(num_samples=4, valid=100.0, all_correct=75.0, attribute_accuracy={}, temporal={},
                           psnr=20.5, ssim=0.9, invalid_reasons={}, samples=[])
    comparison = QualityComparison([], [], {"asymrnr": VariantQuality("asymrnr", torch.zeros(1), report, 96.1)})
    assert "seconds" in comparison.table() and "96.1" in comparison.table()
    without = comparison.table(seconds=False)
    assert "seconds" not in without and "96.1" not in without and "20.50" in without


def test_quality_prompts_differ_in_every_attribute_from_one_to_the_next():
    from asymrnr_lab.cli.demo import quality_prompts

    prompts = quality_prompts(4)
    assert len({p.text for p in prompts}) == 4
    for a, b in zip(prompts, prompts[1:]):
        assert a.shape != b.shape and a.colour != b.colour and a.background != b.background
        assert a.direction != b.direction


def test_captions_are_drawn_with_a_gap_between_words():
    """PIL's default font draws a space so narrow after some letters that words run together."""
    from PIL import Image, ImageDraw

    from asymrnr_lab.synthetic.compare import WORD_GAP_PX, draw_words

    canvas = Image.new("RGB", (200, 12), "black")
    draw = ImageDraw.Draw(canvas)
    draw_words(draw, (0, 0), "left on", fill="white")
    columns = [any(canvas.getpixel((x, y)) != (0, 0, 0) for y in range(12)) for x in range(200)]
    first_word_end = int(draw.textlength("left"))
    blank_run = 0
    for x in range(first_word_end - 1, first_word_end + WORD_GAP_PX + 2):
        blank_run = blank_run + 1 if not columns[x] else 0
        if blank_run >= WORD_GAP_PX:
            break
    assert blank_run >= WORD_GAP_PX, "no word gap drawn between 'left' and 'on'"
