"""Real diffusers pipelines end to end under ``torch.compile(pipe.transformer, backend=asymrnr)``.

Each case builds a real pipeline offline (``tokenizer=None, text_encoder=None``; the tiny
transformer of :data:`asymrnr_lab.models.diffusers_models.BUILDERS`, re-created from its config
where the pipeline needs other channel counts; a tiny VAE of the family as in diffusers' own
pipeline tests; the family's scheduler), passes precomputed text embeddings, and samples two
videos (two pipeline calls, no ``backend.reset()`` in between). Asserted:

- every attention site with video tokens is reduced, no graph fell back, matchings were computed;
- the report counts ``num_inference_steps`` steps per video and one call per step (batched CFG:
  CogVideoX, Mochi, LTX-Video) or two (split CFG: HunyuanVideo with ``true_cfg_scale``, Wan);
- no Dynamo recompile in the second video;
- the second call is detected as a new video: its matchings are recomputed at its step 0, so the
  computed matchings double;
- all ratios 0 gives the same frames as ``backend="inductor"``.

The latent token grids are 3 x 4 x 4 (48 video tokens), LTX-Video's 3 x 8 x 8 (its pipelines
take sizes divisible by 32 and the tiny VAE compresses 4x): ``min_video_tokens`` and
``dst_stride`` are lowered to fit. Compilation dominates (tens of seconds per pipeline on 2 CPU cores): only the
cheapest case (CogVideoX text-to-video) runs through Inductor by default; the others run by
default with the rewritten graphs executed eagerly (everything asymrnr does, without Inductor's
code generation), and through Inductor when ``slow`` tests are asked for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch._dynamo
from helpers import eager_compiler
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
pytest.importorskip("transformers", reason="the diffusers pipelines import transformers (pip install -e .[diffusers])")

from asymrnr_lab.models.diffusers_models import build  # noqa: E402  (needs diffusers)

STEPS = 3  # num_inference_steps of each video; the default cache window (5) covers all: step 0 computes
SMALL_GRID = {"min_video_tokens": 8, "dst_stride": (1, 2, 2)}  # 3 x 4 x 4 token grids
REDUCE = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, **SMALL_GRID)
UNREDUCED = AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, **SMALL_GRID)
FRAMES_TOLERANCE = 1e-5  # frames are in [0, 1]


# ------------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------------


def _transformer(family: str, **overrides: Any) -> torch.nn.Module:
    """The family's tiny test transformer (seeded), re-created with ``overrides`` of its config."""
    model, _ = build(family)
    if overrides:
        torch.manual_seed(0)
        model = type(model).from_config(model.config, **overrides).eval()
    return model


def _cogvideox_vae() -> torch.nn.Module:
    return diffusers.AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )


def _hunyuan_vae() -> torch.nn.Module:
    return diffusers.AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )


def _mochi_vae() -> torch.nn.Module:
    return diffusers.AutoencoderKLMochi(
        latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
    )


def _wan_vae() -> torch.nn.Module:
    # z_dim 4 to match the tiny transformer; the latent normalisation has one entry per channel
    return diffusers.AutoencoderKLWan(
        base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )


def _ltx_vae() -> torch.nn.Module:
    vae = diffusers.AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1, 1, 1, 1), timestep_conditioning=False,
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def _text(tokens: int, dim: int, mask: bool = False, pooled: int = 0, pad_uncond: bool = False) -> dict[str, Any]:
    """Precomputed prompt embeddings (cond and uncond) under the pipelines' argument names."""
    kwargs: dict[str, Any] = {"prompt_embeds": torch.randn(1, tokens, dim),
                              "negative_prompt_embeds": torch.randn(1, tokens, dim)}
    if mask:
        kwargs["prompt_attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
        uncond_mask = torch.ones(1, tokens, dtype=torch.long)
        if pad_uncond:
            uncond_mask[:, tokens // 2:] = 0
        kwargs["negative_prompt_attention_mask"] = uncond_mask
    if pooled:
        kwargs["pooled_prompt_embeds"] = torch.randn(1, pooled)
        kwargs["negative_pooled_prompt_embeds"] = torch.randn(1, pooled)
    return kwargs


def _image(size: int) -> dict[str, Any]:
    return {"image": torch.rand(1, 3, size, size)}


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineCase:
    """One pipeline: how to build it offline and call it."""

    pipeline: str  # the diffusers class
    family: str  # key of BUILDERS
    vae: Callable[[], torch.nn.Module]
    scheduler: Callable[[], Any]
    size: int  # height = width in pixels
    num_frames: int  # 3 latent frames
    calls_per_step: int  # 1: batched CFG; 2: cond and uncond calls
    inputs: Callable[[], dict[str, Any]]  # embeddings (and image), seeded by the caller
    transformer_overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # other call arguments


CASES: dict[str, PipelineCase] = {
    "cogvideox_t2v": PipelineCase(
        "CogVideoXPipeline", "cogvideox", _cogvideox_vae, lambda: diffusers.CogVideoXDDIMScheduler(),
        64, 9, 1, lambda: _text(8, 8)),
    "cogvideox_i2v": PipelineCase(
        "CogVideoXImageToVideoPipeline", "cogvideox", _cogvideox_vae, lambda: diffusers.CogVideoXDDIMScheduler(),
        64, 9, 1, lambda: {**_text(8, 8), **_image(64)}, {"in_channels": 8}),
    "hunyuan_t2v": PipelineCase(
        "HunyuanVideoPipeline", "hunyuan", _hunyuan_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        32, 9, 2, lambda: _text(12, 16, mask=True, pooled=8, pad_uncond=True),
        extra={"true_cfg_scale": 2.0}),  # real CFG with the negative prompt: two calls per step
    "mochi_t2v": PipelineCase(
        "MochiPipeline", "mochi", _mochi_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(),
        64, 13, 1, lambda: _text(16, 16, mask=True, pad_uncond=True), {"in_channels": 12}),
    "wan_t2v": PipelineCase(
        "WanPipeline", "wan", _wan_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        64, 9, 2, lambda: _text(12, 16)),
    "wan_i2v": PipelineCase(  # Wan 2.2-style: no image encoder (image_dim None), image latents as channels
        "WanImageToVideoPipeline", "wan", _wan_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        64, 9, 2, lambda: {**_text(12, 16), **_image(64)}, {"in_channels": 12}),
    "ltx_t2v": PipelineCase(
        "LTXPipeline", "ltx", _ltx_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(),
        32, 9, 1, lambda: _text(16, 16, mask=True, pad_uncond=True)),
    "ltx_i2v": PipelineCase(  # per-token timesteps: the conditioning frame's tokens at 0
        "LTXImageToVideoPipeline", "ltx", _ltx_vae, lambda: diffusers.FlowMatchEulerDiscreteScheduler(),
        32, 9, 1, lambda: {**_text(16, 16, mask=True, pad_uncond=True), **_image(32)}),
}

DEFAULT_CASE = "cogvideox_t2v"  # the cheapest; every other case is slow


def _params() -> list[Any]:
    return [pytest.param(name, id=name, marks=() if name == DEFAULT_CASE else pytest.mark.slow) for name in CASES]


def _make_pipeline(case: PipelineCase) -> Any:
    transformer = _transformer(case.family, **case.transformer_overrides)
    torch.manual_seed(0)
    vae = case.vae().eval()
    cls = getattr(diffusers, case.pipeline)
    # no text encoders or tokenizers (HunyuanVideo has two of each): the prompts come as embeddings
    text_parts = {name: None for name in inspect.signature(cls.__init__).parameters
                  if name.startswith(("text_encoder", "tokenizer"))}
    pipe = cls(**text_parts, transformer=transformer, vae=vae, scheduler=case.scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(case: PipelineCase, pipe: Any, video: int) -> torch.Tensor:
    """Video ``video`` (its own noise and prompt embeddings) as (F, C, H, W) frames in [0, 1]."""
    torch.manual_seed(100 + video)
    kwargs = case.inputs()
    with torch.no_grad():
        output = pipe(**kwargs, **case.extra, height=case.size, width=case.size, num_frames=case.num_frames,
                      num_inference_steps=STEPS, generator=torch.Generator().manual_seed(video), output_type="pt")
    frames = output.frames[0]
    assert torch.isfinite(frames).all()
    return frames


def _compile(pipe: Any, backend: Any) -> None:
    pipe.transformer = torch.compile(pipe.transformer, backend=backend, fullgraph=True, dynamic=False)


def _unique_graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _assert_reduced(report: dict[str, Any]) -> None:
    assert report["graphs"], "the backend compiled no graph"
    video_sites = []
    for graph in report["graphs"]:
        assert graph["fallback_reason"] is None, graph["fallback_reason"]
        video_sites += [site for site in graph["sites"] if site["video_tokens"]]
    assert video_sites, "no attention site with video tokens"
    for site in video_sites:
        assert site.get("applied"), f"{site['name']} ({site['kind']}) not reduced: {site['reason']}"


@pytest.mark.parametrize("name", _params())
def test_pipeline_two_videos_reduced(name: str) -> None:
    _two_videos_reduced(CASES[name])


@pytest.mark.parametrize("name", [name for name in CASES if name != DEFAULT_CASE])
def test_pipeline_two_videos_reduced_with_eager_graphs(name: str, monkeypatch) -> None:
    """Every family's pipeline in the default run: the same Dynamo capture, analysis, plans, step
    and call counting and cache as above, with the rewritten graphs run as they are instead of
    through Inductor (whose code is what makes the slow cases slow; CogVideoX runs it above)."""
    import asymrnr_compile.backend

    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    _two_videos_reduced(CASES[name])


def _two_videos_reduced(case: PipelineCase) -> None:
    pipe = _make_pipeline(case)
    backend = AsymRnRBackend(REDUCE)
    _compile(pipe, backend)
    calls = STEPS * case.calls_per_step

    _sample(case, pipe, 0)
    first = backend.report().to_dict()
    _assert_reduced(first)
    assert (first["steps"], first["calls"]) == (STEPS, calls)
    assert first["cache_misses"] > 0
    graphs = _unique_graphs()
    assert graphs >= 1

    _sample(case, pipe, 1)
    second = backend.report().to_dict()
    assert _unique_graphs() == graphs, "the second video recompiled"
    assert (second["steps"], second["calls"]) == (2 * STEPS, 2 * calls)
    # a new video: matchings recomputed at its step 0, exactly as many as the first video's
    assert second["cache_misses"] == 2 * first["cache_misses"]
    assert second["cache_hits"] == 2 * first["cache_hits"]


@pytest.mark.parametrize("name", _params())
def test_pipeline_ratio_zero_equals_inductor(name: str) -> None:
    case = CASES[name]
    frames = {}
    for label, backend in (("asymrnr", AsymRnRBackend(UNREDUCED)), ("inductor", "inductor")):
        torch._dynamo.reset()
        pipe = _make_pipeline(case)
        _compile(pipe, backend)
        frames[label] = _sample(case, pipe, 0)
    torch.testing.assert_close(frames["asymrnr"], frames["inductor"], atol=FRAMES_TOLERANCE, rtol=0)
