"""The synthetic task trained in a diffusers class (``arch="cogvideox"``): a tiny
``CogVideoXTransformer3DModel`` trains, resumes exactly, exports in diffusers' format, loads
offline, samples, and compiles with the asymrnr backend, which reduces its tokens."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

from helpers import max_relative_error  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig  # noqa: E402
from asymrnr_lab.sampling import SamplerConfig  # noqa: E402
from asymrnr_lab.synthetic import cogvideox  # noqa: E402
from asymrnr_lab.synthetic.cogvideox import (  # noqa: E402
    COGVIDEOX_PRESETS,
    SIDECAR_NAME,
    TRANSFORMER_FOLDER,
    CogVideoXTaskConfig,
    TextToVideoCogVideoX,
    build_cogvideox_model,
    fold_frames,
    save_cogvideox_model,
    unfold_frames,
)
from asymrnr_lab.synthetic.config import SyntheticTaskConfig, all_captions  # noqa: E402
from asymrnr_lab.synthetic.generate import generate_videos  # noqa: E402
from asymrnr_lab.synthetic.model import (  # noqa: E402
    ARCHS,
    as_velocity_model,
    load_trained_model,
    read_checkpoint_metadata,
)
from asymrnr_lab.synthetic.train import (  # noqa: E402
    CHECKPOINT_NAME,
    EXPORT_FOLDER_NAME,
    EXPORT_NAME,
    TrainConfig,
    settings_dict,
    train,
)

#: A tiny CogVideoX on the task's 8 x 32 x 32 videos: 2 x 8 x 8 pixels per token -> a 4 x 4 x 4
#: grid of 64 video tokens, 2 heads of 16, one block.
TINY = CogVideoXTaskConfig(patch_size=8, num_heads=2, head_dim=16, num_blocks=1, time_embed_dim=32, text_dim=16)
QUICK = {"batch_size": 2, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2, "eval_every": 0}
CONFIG = TrainConfig(arch="cogvideox", steps=3, **QUICK)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 3-step run of :data:`TINY` (as preset ``"cogvideox"``) straight through, and
    stopped after 2 steps then resumed."""
    root = tmp_path_factory.mktemp("cogvideox")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(COGVIDEOX_PRESETS, "cogvideox", TINY)
        straight = train(root / "straight", CONFIG, log=lambda _: None)
        train(root / "resumed", CONFIG, log=lambda _: None, max_steps_this_run=2)
        assert torch.load(root / "resumed" / CHECKPOINT_NAME, weights_only=False)["step"] == 2
        messages: list[str] = []
        resumed = train(root / "resumed", CONFIG, log=messages.append)
    assert any("resuming" in m and "step 2/3" in m for m in messages)
    return straight, resumed


def _exact(a: dict, b: dict) -> None:
    """Equal state dicts; ``a``'s tensors cast to ``b``'s dtypes first (diffusers keeps the sin-cos
    position table in float64; ``load_trained_model(dtype=float32)`` casts it, as the forward does)."""
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].to(b[key].dtype), b[key], rtol=0, atol=0, msg=key)


def test_resumed_run_equals_uninterrupted_run(runs):
    straight, resumed = runs
    assert straight.name == resumed.name == EXPORT_FOLDER_NAME and not (straight.parent / EXPORT_NAME).exists()
    a, b = (torch.load(p.parent / CHECKPOINT_NAME, weights_only=False) for p in runs)
    for part in ("model", "ema", "optimizer"):
        if part == "optimizer":
            for s_a, s_b in zip(a[part]["state"].values(), b[part]["state"].values(), strict=True):
                _exact(s_a, s_b)
        else:
            _exact(a[part], b[part])
    _exact(*(load_trained_model(p)[0].state_dict() for p in runs))
    assert a["config"]["arch"] == "cogvideox" and a["config"]["preset"] == "cogvideox"


def test_export_is_diffusers_format_and_loads_offline_to_the_ema_model(runs, monkeypatch):
    import diffusers

    folder, _ = runs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sorted(p.name for p in (folder / TRANSFORMER_FOLDER).iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((folder / TRANSFORMER_FOLDER / "config.json").read_text())["_class_name"] == (
        "CogVideoXTransformer3DModel")
    loaded = diffusers.CogVideoXTransformer3DModel.from_pretrained(folder / TRANSFORMER_FOLDER).eval()

    state = torch.load(folder.parent / CHECKPOINT_NAME, weights_only=False)
    with torch.random.fork_rng(devices=[]):
        ema = TextToVideoCogVideoX(TINY, state["ema"]["token_embed.weight"].shape[0], "sample")
    ema.load_state_dict(state["ema"])
    ema.eval()
    video = torch.randn(2, *SyntheticTaskConfig().video_shape)
    text = ema.embed_text(torch.randint(1, 20, (2, TINY.text_tokens)))
    timestep = torch.tensor([900.0, 300.0])
    with torch.no_grad():
        expected = ema.transformer(hidden_states=video, encoder_hidden_states=text, timestep=timestep)
        # the diffusers model alone, driven the way the wrapper drives it
        grid = (TINY.latent_frames, 32 // TINY.patch_size, 32 // TINY.patch_size)
        rope = cogvideox.rotary_tables(grid, TINY.head_dim, TINY.rope_theta)
        raw = loaded(hidden_states=fold_frames(video, 2), encoder_hidden_states=text, timestep=timestep,
                     image_rotary_emb=rope, return_dict=False)[0]
    torch.testing.assert_close(unfold_frames(raw, 2), expected, rtol=0, atol=0)
    model, task = load_trained_model(folder)
    assert isinstance(model, TextToVideoCogVideoX) and model.prediction == "sample" and not model.training
    assert task == SyntheticTaskConfig()
    _exact(ema.state_dict(), model.state_dict())
    metadata = read_checkpoint_metadata(folder)
    assert metadata["step"] == 3 and metadata["arch"] == "cogvideox" and metadata["train_config"]["arch"] == "cogvideox"


@pytest.mark.parametrize("preset", sorted(COGVIDEOX_PRESETS))
def test_real_presets_have_the_reference_token_grids_and_export_under_10_mb(preset, tmp_path):
    config = COGVIDEOX_PRESETS[preset]
    assert config.video_tokens == {"cogvideox": 256, "cogvideox-fine": 1024}[preset]
    assert (config.hidden_size, config.num_blocks, config.text_dim, config.text_tokens) == (128, 4, 64, 10)
    folder = save_cogvideox_model(build_cogvideox_model(0, "sample", preset), tmp_path / "model",
                                  SyntheticTaskConfig())
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 10 * 2**20
    assert (folder / SIDECAR_NAME).is_file()


def test_loaded_model_samples_deterministically(runs):
    model, task = load_trained_model(runs[0])
    captions = all_captions(task)[:2]
    sampler = SamplerConfig(steps=2, guidance_scale=2.0)
    first = generate_videos(model, captions, [0, 1], task, sampler)
    assert first.shape == (2, *task.video_shape) and torch.isfinite(first).all()
    torch.testing.assert_close(generate_videos(model, captions, [0, 1], task, sampler), first, rtol=0, atol=0)
    # the forward is the velocity of the sample-predicting transformer, as TextToVideoDiT's
    x = torch.randn(1, *task.video_shape)
    ids = torch.randint(1, 20, (1, TINY.text_tokens))
    t = torch.tensor([400.0])
    with torch.no_grad():
        velocity = as_velocity_model(model.transformer, "sample")(
            hidden_states=x, encoder_hidden_states=model.embed_text(ids), timestep=t)
        torch.testing.assert_close(model(x, ids, t), velocity)


def test_asymrnr_reduces_the_loaded_cogvideox_transformer(runs):
    """A 2-step sampling loop under asymrnr (matching recomputed every step: one compiled
    variant) reduces q and kv at every block; with every ratio 0 the backend equals plain
    Inductor."""
    model, task = load_trained_model(runs[0])
    captions = all_captions(task)[:2]
    sampler = SamplerConfig(steps=2, guidance_scale=2.0)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=1, min_video_tokens=16))
    torch._dynamo.reset()
    counters.clear()
    reduced = generate_videos(model, captions, [0, 1], task, sampler,
                              transformer=torch.compile(model.transformer, backend=backend, dynamic=False))
    assert counters["stats"]["unique_graphs"] == 1
    report = backend.report().to_dict()
    (graph,) = report["graphs"]
    assert graph["fallback_reason"] is None
    applied = [entry["applied"] for entry in graph["sites"] if "applied" in entry]
    assert len(applied) == TINY.num_blocks
    for features in applied:
        assert set(features) == {"q", "kv"}
        assert all(f["video_tokens"] == 64 and f["kept_tokens"] < 64 for f in features.values())
    # a matching per step, block and feature: the reduction ran
    assert report["calls"] == sampler.steps and report["cache_misses"] == sampler.steps * 2 * TINY.num_blocks
    unreduced = generate_videos(model, captions, [0, 1], task, sampler)
    assert max_relative_error(reduced, unreduced) > 1e-4 and torch.isfinite(reduced).all()

    video = torch.randn(4, *task.video_shape)
    inputs = {"hidden_states": video, "encoder_hidden_states": model.embed_text(torch.randint(1, 20, (4, 10))),
              "timestep": torch.tensor([999.0, 999.0, 500.0, 500.0])}
    zero = AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, h_ratio=0.0, min_video_tokens=16))
    with torch.no_grad():
        torch._dynamo.reset()
        plain = torch.compile(model.transformer, backend="inductor", dynamic=False)(**inputs)
        torch._dynamo.reset()
        output = torch.compile(model.transformer, backend=zero, dynamic=False)(**inputs)
    torch._dynamo.reset()
    assert max_relative_error(output, plain) <= 1e-5


def test_bad_arch_and_mismatched_presets_raise():
    with pytest.raises(ValueError, match=r"arch must be one of \('reference', 'cogvideox'\), got 'dit'"):
        TrainConfig(arch="dit")
    assert ARCHS == ("reference", "cogvideox")
    with pytest.raises(ValueError, match="preset 'synthetic-fine' is not one of arch 'cogvideox'"):
        TrainConfig(arch="cogvideox", preset="synthetic-fine")
    with pytest.raises(ValueError, match="preset 'cogvideox' is not one of arch 'reference'"):
        TrainConfig(preset="cogvideox")
    assert TrainConfig(arch="cogvideox").preset == "cogvideox"
    assert TrainConfig(arch="cogvideox", preset="cogvideox-fine").preset == "cogvideox-fine"
    with pytest.raises(ValueError, match="head_dim must be a multiple of 16"):
        CogVideoXTaskConfig(head_dim=8)


def test_reference_runs_record_no_arch():
    """Reference checkpoints stay what they were before ``arch`` existed."""
    assert "arch" not in settings_dict(TrainConfig())
    assert settings_dict(TrainConfig(arch="cogvideox"))["arch"] == "cogvideox"


def test_frames_fold_into_channels_and_back():
    video = torch.randn(2, 3, 8, 4, 4)
    latent = fold_frames(video, 2)
    assert latent.shape == (2, 4, 6, 4, 4)
    torch.testing.assert_close(latent[:, 1, 3], video[:, 1, 3], rtol=0, atol=0)  # colour 1, frame 2 * 1 + 1
    torch.testing.assert_close(unfold_frames(latent, 2), video, rtol=0, atol=0)


def _shipped_model_loads_offline_and_samples_one_caption_right(path, preset, monkeypatch):
    """diffusers' own loader reads the transformer at ``path`` with no network; it is ``preset``,
    under 10 MB, the same weights as ``load_trained_model`` gives, and a 20-step sample of one
    caption is a valid video with every attribute right. Returns the export's metadata."""
    import diffusers

    from asymrnr_lab.synthetic.generate import EVAL_SAMPLER
    from asymrnr_lab.synthetic.quality import score_samples

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) < 10 * 2**20
    transformer = diffusers.CogVideoXTransformer3DModel.from_pretrained(path / TRANSFORMER_FOLDER,
                                                                       local_files_only=True)
    expected = COGVIDEOX_PRESETS[preset].diffusers_config()
    assert {key: transformer.config[key] for key in expected} == expected
    model, task = load_trained_model(path)
    _exact(transformer.state_dict(), model.transformer.model.state_dict())
    caption = all_captions(task)[:1]
    video = generate_videos(model, caption, [0], task, EVAL_SAMPLER)
    assert score_samples(video, caption, task).all_correct == 100.0
    metadata = read_checkpoint_metadata(path)
    assert metadata["arch"] == "cogvideox" and metadata["train_config"]["preset"] == preset
    return metadata


def test_shipped_cogvideox_model_loads_offline_with_from_pretrained(monkeypatch):
    """The trained 256-token model in the package loads offline and has learned the task; 12000
    steps in all: 4000, then twice 4000 more, each run from the previous one's weights (see
    docs/trained_models.md)."""
    from asymrnr_lab.synthetic.model import COGVIDEOX_MODEL_PATH

    metadata = _shipped_model_loads_offline_and_samples_one_caption_right(COGVIDEOX_MODEL_PATH, "cogvideox",
                                                                          monkeypatch)
    assert metadata["step"] == 4000
    (run,) = metadata["runs"]
    assert run["init_step"] == 4000
    (earlier,) = run["init_runs"]
    assert earlier["init_step"] == 4000 and earlier["init_runs"] == [{"from_step": 0, "steps": 4000}]


def test_shipped_1024_token_cogvideox_model_loads_offline_and_has_learned_the_task(monkeypatch):
    """The 1024-token trained model in the package loads offline and has learned the task; its
    history says it started from the shipped 256-token model."""
    from asymrnr_lab.synthetic.model import COGVIDEOX_FINE_MODEL_PATH, COGVIDEOX_MODEL_PATH

    metadata = _shipped_model_loads_offline_and_samples_one_caption_right(COGVIDEOX_FINE_MODEL_PATH,
                                                                          "cogvideox-fine", monkeypatch)
    (run,) = metadata["runs"]
    assert run["init_step"] == read_checkpoint_metadata(COGVIDEOX_MODEL_PATH)["step"]
    assert run["init_from"].endswith("synthetic_cogvideox")


def test_init_from_starts_a_new_run_from_a_trained_models_weights(runs, tmp_path, monkeypatch):
    """With a zero learning rate the new run's export is the model it started from, bit for bit;
    its history names that model; a model of another architecture is refused."""
    from dataclasses import replace

    from asymrnr_lab.synthetic.model import CHECKPOINT_PATH

    monkeypatch.setitem(COGVIDEOX_PRESETS, "cogvideox", TINY)
    messages: list[str] = []
    exported = train(tmp_path / "more", replace(CONFIG, steps=1, lr=0.0), log=messages.append, init_from=runs[0])
    assert any(m.startswith(f"training from {runs[0]} (its step 3)") for m in messages)
    _exact(load_trained_model(exported)[0].state_dict(), load_trained_model(runs[0])[0].state_dict())
    history = read_checkpoint_metadata(exported)["runs"]
    assert history[0]["init_from"] == str(runs[0]) and history[0]["init_step"] == 3
    with pytest.raises(ValueError, match="init_from .* does not fit this run.*'arch'"):
        train(tmp_path / "other", CONFIG, log=lambda _: None, init_from=CHECKPOINT_PATH)


#: :data:`TINY` at half the patch size: 4 x 4 pixels per token, a 4 x 8 x 8 grid of 256 tokens.
TINY_FINE = CogVideoXTaskConfig(patch_size=4, num_heads=2, head_dim=16, num_blocks=1, time_embed_dim=32,
                                text_dim=16)


def test_transplant_patch_size_keeps_what_a_coarse_token_sees_and_predicts():
    """On a video constant over each coarse patch, every fine token embeds exactly as the coarse
    token around it; a fine token's output pixels are the means of the coarse token's over its
    area; the transformer blocks are copied; the position table stays the fine model's."""
    coarse = build_cogvideox_model(seed=0, preset=TINY, vocab_size=20)
    fine = build_cogvideox_model(seed=1, preset=TINY_FINE, vocab_size=20)
    weights = cogvideox.transplant_patch_size(coarse.state_dict(), fine.state_dict())
    fine.load_state_dict(weights)

    block = "transformer.model.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(weights[block], coarse.state_dict()[block])
    assert torch.equal(weights[cogvideox.POSITION_TABLE], fine.state_dict()[cogvideox.POSITION_TABLE])

    generator = torch.Generator().manual_seed(0)
    channels = TINY.temporal_patch * 3
    blocks = torch.randn(1, channels, 32 // TINY.patch_size, 32 // TINY.patch_size, generator=generator)
    image = blocks.repeat_interleave(TINY.patch_size, dim=2).repeat_interleave(TINY.patch_size, dim=3)
    with torch.no_grad():
        coarse_embed = coarse.transformer.model.patch_embed.proj(image)      # (1, D, 4, 4)
        fine_embed = fine.transformer.model.patch_embed.proj(image)          # (1, D, 8, 8)
    ratio = TINY.patch_size // TINY_FINE.patch_size
    expanded = coarse_embed.repeat_interleave(ratio, dim=2).repeat_interleave(ratio, dim=3)
    assert max_relative_error(fine_embed, expanded) < 1e-5

    hidden = torch.randn(5, TINY.num_heads * TINY.head_dim, generator=generator)
    with torch.no_grad():
        coarse_out = coarse.transformer.model.proj_out(hidden).view(5, channels, TINY.patch_size,
                                                                    TINY.patch_size)
        fine_out = fine.transformer.model.proj_out(hidden).view(5, channels, TINY_FINE.patch_size,
                                                                TINY_FINE.patch_size)
    assert max_relative_error(fine_out, torch.nn.functional.avg_pool2d(coarse_out, ratio)) < 1e-5


def test_transplant_patch_size_refuses_other_differences():
    coarse = build_cogvideox_model(seed=0, preset=TINY, vocab_size=20).state_dict()
    from dataclasses import replace

    wider = build_cogvideox_model(seed=0, preset=replace(TINY_FINE, text_dim=32), vocab_size=20).state_dict()
    with pytest.raises(ValueError, match="only the patch embedding and the output projection may differ"):
        cogvideox.transplant_patch_size(coarse, wider)


def test_init_from_a_coarser_preset_transplants_the_patch_size(runs, tmp_path, monkeypatch):
    """A run of the finer preset starts from the coarser preset's trained model: with a zero
    learning rate its export is the transplanted model."""
    from dataclasses import replace

    monkeypatch.setitem(COGVIDEOX_PRESETS, "cogvideox", TINY)
    monkeypatch.setitem(COGVIDEOX_PRESETS, "cogvideox-fine", TINY_FINE)
    fine_config = replace(CONFIG, preset="cogvideox-fine", steps=1, lr=0.0)
    exported = train(tmp_path / "fine", fine_config, log=lambda _: None, init_from=runs[0])
    started_from = load_trained_model(runs[0])[0].state_dict()
    fine = load_trained_model(exported)[0].state_dict()
    _exact(fine, cogvideox.transplant_patch_size(started_from, fine))
    assert read_checkpoint_metadata(exported)["runs"][0]["init_from"] == str(runs[0])
