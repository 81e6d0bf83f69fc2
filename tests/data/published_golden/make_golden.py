"""Regenerate ``published_golden.safetensors``: the published method's matchings and final latent.

The file pins what ``AsymRnRConfig(preset="published")`` computes to what the backend's defaults
computed before they changed (commit a9216f9, when the defaults were the published method):
every matching's kept and restore indices of a 6-step batched-CFG loop of the ``"small"``
reference DiT (576 video tokens, 2 blocks), and the final latent.
``tests/backend/test_backend_presets.py`` compares against it. Run from the repository root,
only when a change of the published method's results is intended:

    python tests/data/published_golden/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
GOLDEN_PATH = HERE / "published_golden.safetensors"
STEPS = 6
PRESET = "small"


def run(config_options: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Matchings (``"step{s}.call{c}.site{i}.{feature}.keep|restore"``) and the final latent."""
    from asymrnr_compile import AsymRnRBackend
    from asymrnr_compile.models import build_reference_model, reference_inputs
    from asymrnr_compile.models.inputs import synthetic_latents
    from asymrnr_compile.sampling import SamplerConfig, sample

    torch._dynamo.reset()
    model = build_reference_model(PRESET, seed=0).eval()
    inputs = reference_inputs(PRESET, seed=0, batch_size=1)
    null_text = reference_inputs(PRESET, seed=17, batch_size=1)["encoder_hidden_states"]
    noise = synthetic_latents(tuple(inputs["hidden_states"].shape), seed=1)
    records: dict[str, torch.Tensor] = {}

    def record(matching) -> None:
        name = f"step{matching.step}.call{matching.call_index}.site{matching.site.index}.{matching.feature}"
        records[f"{name}.keep"] = matching.indices.keep.detach().cpu().contiguous()
        records[f"{name}.restore"] = matching.indices.restore.detach().cpu().contiguous()

    backend = AsymRnRBackend(on_matching=record, **config_options)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        latent = sample(compiled, noise, inputs["encoder_hidden_states"], null_text,
                        SamplerConfig(steps=STEPS, cfg_mode="batched"))
    return records, latent


def main() -> int:
    records, latent = run({"preset": "published"})
    save_file({**records, "final_latent": latent.contiguous()}, str(GOLDEN_PATH))
    print(f"wrote {GOLDEN_PATH}: {len(records) // 2} matchings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
