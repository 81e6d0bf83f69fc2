"""A small rectified-flow (flow-matching Euler) sampler with classifier-free guidance.

Used by the demo, benchmarks and tests to drive a video DiT the way diffusers pipelines do:
either cond and uncond batched into one call (CogVideoX, Mochi, LTX) or as two calls per step
with the same timestep (Wan, HunyuanVideo). The timestep passed to the model is ``sigma * 1000``
as a float tensor of shape (B,), so a compiled model sees a new value every step and no
recompile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

# diffusers flow-matching schedulers scale sigma in [0, 1] to timesteps in [0, 1000].
TIMESTEP_SCALE = 1000.0
DEFAULT_GUIDANCE_SCALE = 5.0

CfgMode = Literal["batched", "split"]
ModelFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of :func:`sample`.

    Attributes:
        steps: denoising steps (Euler steps from sigma 1 to 0). Int >= 1. Default 10.
        guidance_scale: classifier-free guidance weight; 1 disables the uncond branch's effect.
        cfg_mode: ``"batched"`` (one call on the batch [cond, uncond]) or ``"split"`` (two calls
            per step with the same timestep: cond first, then uncond).
    """

    steps: int = 10
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    cfg_mode: CfgMode = "batched"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if self.cfg_mode not in ("batched", "split"):
            raise ValueError(f"cfg_mode must be 'batched' or 'split', got {self.cfg_mode!r}")

    def sigmas(self) -> list[float]:
        """Noise levels 1 = sigma_0 > ... > sigma_steps = 0, evenly spaced."""
        return [1.0 - i / self.steps for i in range(self.steps + 1)]


def euler_cfg_step(
    model: ModelFn,
    x: torch.Tensor,
    step: int,
    text: torch.Tensor,
    null_text: torch.Tensor,
    config: SamplerConfig,
) -> torch.Tensor:
    """One Euler step with classifier-free guidance, from ``sigmas[step]`` to ``sigmas[step + 1]``."""
    sigmas = config.sigmas()
    sigma, sigma_next = sigmas[step], sigmas[step + 1]
    batch = x.shape[0]
    if config.cfg_mode == "batched":
        timestep = torch.full((2 * batch,), sigma * TIMESTEP_SCALE, device=x.device)
        velocity = model(hidden_states=torch.cat([x, x]), encoder_hidden_states=torch.cat([text, null_text]),
                         timestep=timestep)
        cond, uncond = velocity.chunk(2)
    else:
        timestep = torch.full((batch,), sigma * TIMESTEP_SCALE, device=x.device)
        cond = model(hidden_states=x, encoder_hidden_states=text, timestep=timestep)
        uncond = model(hidden_states=x, encoder_hidden_states=null_text, timestep=timestep)
    guided = uncond + config.guidance_scale * (cond - uncond)
    return x + (sigma_next - sigma) * guided.to(x.dtype)


def sample(
    model: ModelFn,
    noise: torch.Tensor,
    text: torch.Tensor,
    null_text: torch.Tensor,
    config: SamplerConfig = SamplerConfig(),
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` with Euler steps on the flow ``x_sigma = (1 - sigma) x_0 + sigma * noise``.

    Args:
        model: called as ``model(hidden_states=x, encoder_hidden_states=e, timestep=t)`` and
            returning the velocity ``noise - x_0`` with the shape of ``x``.
        noise: initial latent (B, ...).
        text, null_text: cond and uncond text embeddings (B, T, D).
        config: steps, guidance and the CFG call pattern.
        on_step: called as ``on_step(step, steps)`` after each step (progress display).

    Returns:
        The final latent, shape of ``noise``.
    """
    x = noise
    for step in range(config.steps):
        x = euler_cfg_step(model, x, step, text, null_text, config)
        if on_step is not None:
            on_step(step, config.steps)
    return x


def sample_lockstep(
    models: dict[str, ModelFn],
    noise: torch.Tensor,
    text: torch.Tensor,
    null_text: torch.Tensor,
    config: SamplerConfig = SamplerConfig(),
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Sample with several models side by side, one step of each in turn, timing every step.

    Interleaving step by step exposes every model to the same machine load, so their time
    ratios hold on a shared machine (docs/measuring.md). Returns the final latents and the
    seconds of each step, per model name.
    """
    latents = {name: noise for name in models}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for step in range(config.steps):
        for name, model in models.items():
            start = time.perf_counter()
            latents[name] = euler_cfg_step(model, latents[name], step, text, null_text, config)
            seconds[name].append(time.perf_counter() - start)
        if on_step is not None:
            on_step(step, config.steps)
    return latents, seconds
