"""The shipped trained text-to-video model: loading, deterministic sampling, pictures."""

import pytest
import torch

from asymrnr_lab.models.config import PRESETS
from asymrnr_lab.sampling import SamplerConfig
from asymrnr_lab.synthetic.compare import (
    GIF_FRAME_MS,
    LABEL_HEIGHT_PX,
    PICTURE_SCALE,
    write_comparison_gif,
    write_comparison_strip,
)
from asymrnr_lab.synthetic.config import all_captions
from asymrnr_lab.synthetic.generate import generate_videos
from asymrnr_lab.synthetic.model import (
    SHIPPED_CHECKPOINTS,
    SYNTHETIC_PRESET,
    load_trained_model,
    read_checkpoint_metadata,
)

MAX_CHECKPOINT_BYTES = 10 * 2**20
#: The shipped checkpoints and the preset each was trained as.
SHIPPED = SHIPPED_CHECKPOINTS


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    preset = request.param
    model, task = load_trained_model(SHIPPED[preset])
    return preset, model, task


@pytest.fixture(scope="module")
def trained():
    return load_trained_model()


def test_shipped_checkpoints_are_small_and_complete(shipped):
    preset, model, task = shipped
    assert SHIPPED[preset].stat().st_size < MAX_CHECKPOINT_BYTES
    assert model.config == PRESETS[preset]
    assert task.num_captions == len(all_captions(task))
    metadata = read_checkpoint_metadata(SHIPPED[preset])
    assert metadata["step"] > 0 and metadata["train_config"].get("preset", SYNTHETIC_PRESET) == preset
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_default_checkpoint_is_the_coarse_model(trained):
    assert trained[0].config == PRESETS[SYNTHETIC_PRESET]


def test_short_sampling_run_is_deterministic(shipped):
    _, model, task = shipped
    captions = all_captions(task)[:2]
    sampler = SamplerConfig(steps=3, guidance_scale=4.0)
    first = generate_videos(model, captions, [0, 1], task, sampler)
    second = generate_videos(model, captions, [0, 1], task, sampler)
    assert first.shape == (2, *task.video_shape)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.abs().max() <= 1.0
    other_noise = generate_videos(model, captions, [2, 3], task, sampler)
    assert (first - other_noise).abs().mean() > 1e-3


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="asymrnr-compile train"):
        load_trained_model(tmp_path / "none.safetensors")


def test_pictures_have_one_labelled_tile_per_variant(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    frames, height, width = 3, 8, 10
    ramp = torch.linspace(-1, 0, frames).view(1, frames, 1, 1).expand(3, frames, height, width)
    videos = {"unaccelerated": ramp, "asymrnr": torch.ones(3, frames, height, width)}
    gif = write_comparison_gif(videos, tmp_path / "a.gif")
    png = write_comparison_strip(videos, tmp_path / "a.png")
    tile_w, tile_h = width * PICTURE_SCALE, height * PICTURE_SCALE
    # GIF: a frame-number band, then the variants' names, then their tiles side by side
    expected_size = (2 * tile_w + PICTURE_SCALE, LABEL_HEIGHT_PX + tile_h + LABEL_HEIGHT_PX)
    with Image.open(gif) as image:
        assert image.n_frames == frames and image.size == expected_size
        assert image.info["duration"] == GIF_FRAME_MS
    with Image.open(png) as image:
        row_height = LABEL_HEIGHT_PX + tile_h
        # a band of frame numbers, then one row per variant (name band + tiles), top to bottom
        assert image.size == (frames * (tile_w + PICTURE_SCALE) - PICTURE_SCALE, LABEL_HEIGHT_PX + 2 * row_height)
        rgb = image.convert("RGB")
        # first row: frame f has value -1 + f / 2 -> grey levels 0, 64, 128; second row white
        for f, grey in enumerate((0, 64, 128)):
            x = f * (tile_w + PICTURE_SCALE) + tile_w // 2
            assert rgb.getpixel((x, 2 * LABEL_HEIGHT_PX + tile_h // 2)) == (grey, grey, grey)
            assert rgb.getpixel((x, LABEL_HEIGHT_PX + row_height + LABEL_HEIGHT_PX + 1)) == (255, 255, 255)


def _band_has_text(image, top: int, left: int = 0, right: int | None = None) -> bool:
    """Whether the label band starting at ``top`` holds anything but the grey background."""
    from asymrnr_lab.synthetic.compare import LABEL_HEIGHT_PX

    rgb = image.convert("RGB")
    right = rgb.width if right is None else right
    background = rgb.getpixel((rgb.width - 1, top))
    return any(rgb.getpixel((x, y)) != background
               for x in range(left, right) for y in range(top, top + LABEL_HEIGHT_PX))


def test_pictures_carry_the_caption_and_frame_numbers(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    frames, height, width = 3, 8, 40  # wide enough for "frame 1" over every column
    videos = {"unaccelerated": torch.zeros(3, frames, height, width), "asymrnr": torch.zeros(3, frames, height, width)}
    caption = "a red circle moving left on a black background"
    png = write_comparison_strip(videos, tmp_path / "a.png", caption=caption)
    gif = write_comparison_gif(videos, tmp_path / "a.gif", caption=caption)
    tile_w, tile_h = width * PICTURE_SCALE, height * PICTURE_SCALE
    with Image.open(png) as image:
        assert image.height == 2 * LABEL_HEIGHT_PX + 2 * (LABEL_HEIGHT_PX + tile_h)  # caption + frame numbers
        assert _band_has_text(image, 0)  # the caption
        for f in range(frames):  # a number over every column
            left = f * (tile_w + PICTURE_SCALE)
            assert _band_has_text(image, LABEL_HEIGHT_PX, left, left + tile_w)
    without = write_comparison_strip(videos, tmp_path / "b.png")
    with Image.open(without) as image:
        assert image.height == LABEL_HEIGHT_PX + 2 * (LABEL_HEIGHT_PX + tile_h)
    with Image.open(gif) as image:
        assert image.n_frames == frames
        assert image.height == 2 * LABEL_HEIGHT_PX + LABEL_HEIGHT_PX + tile_h
        bands = []
        for f in range(frames):
            image.seek(f)
            frame = image.convert("RGB")
            assert _band_has_text(frame, 0) and _band_has_text(frame, LABEL_HEIGHT_PX)
            bands.append(frame.crop((0, LABEL_HEIGHT_PX, frame.width, 2 * LABEL_HEIGHT_PX)).tobytes())
        assert len(set(bands)) == frames  # "frame k/F" differs from frame to frame


@pytest.mark.slow
def test_compare_variants_runs_asymrnr_on_the_trained_model(trained):
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.synthetic.compare import REFERENCE_VARIANT, compare_variants

    model, task = trained
    captions = all_captions(task)[:2]
    result = compare_variants(model, task, captions, [0, 1], {"asymrnr": AsymRnRConfig(cache_steps=2)},
                              SamplerConfig(steps=3, guidance_scale=4.0), batch_size=2,
                              compile_reference=False, log=lambda _: None)
    accelerated = result.variants["asymrnr"]
    assert accelerated.backend_report["cache_misses"] == 2 * 4  # steps 0 and 2 x 4 sites
    assert accelerated.backend_report["ideal_speedup"] > 1.0
    assert accelerated.report.psnr is not None and accelerated.report.psnr > 0
    assert result.variants[REFERENCE_VARIANT].report.psnr is None
    assert not torch.equal(accelerated.videos, result.variants[REFERENCE_VARIANT].videos)


def _two_captions(task):
    return all_captions(task)[:2], [0, 1]


def test_compare_variants_refuses_a_variant_the_backend_never_ran(trained, monkeypatch):
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.synthetic.compare import compare_variants

    model, task = trained
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)  # Dynamo never calls the backend
    with pytest.raises(RuntimeError, match="'asymrnr': the asymrnr backend was never called"):
        compare_variants(model, task, *_two_captions(task), {"asymrnr": AsymRnRConfig()},
                         SamplerConfig(steps=1), batch_size=2, compile_reference=False, log=lambda _: None)


@pytest.mark.slow
def test_compare_variants_runs_every_variant_past_dynamos_recompile_limit(trained, monkeypatch):
    """Each variant compiles the same forward: past the recompile limit Dynamo would run the
    later ones eagerly (unaccelerated) unless compare_variants resets it between variants."""
    import torch._dynamo.config

    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_lab.synthetic.compare import compare_variants

    model, task = trained
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    configs = {"kv": AsymRnRConfig(q_ratio=0.0, kv_ratio=0.3), "q": AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0)}
    result = compare_variants(model, task, *_two_captions(task), configs, SamplerConfig(steps=1),
                              batch_size=2, compile_reference=True, log=lambda _: None)
    for name in configs:
        assert result.variants[name].backend_report["cache_misses"] == 4  # one matching per site
        assert result.variants[name].report.psnr < 100  # not the unaccelerated videos
