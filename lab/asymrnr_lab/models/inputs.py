"""Structured, seeded inputs for the reference model (and any video DiT).

Speed and quality are measured on structured inputs, never zeros or pure noise: token
redundancy, which AsymRnR exploits, only exists in smooth, coherent latents.
:func:`synthetic_latents` draws smooth moving patterns; :func:`synthetic_text_embeddings` draws
token sequences correlated along the token axis. All draws use private ``torch.Generator``
objects on CPU (so values are identical on every device) and leave the global RNG untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from asymrnr_lab.models.config import DEFAULT_PRESET, ReferenceDiTConfig, resolve_config

#: Gaussian blobs per (batch element, channel).
NUM_BLOBS = 3
#: Blob width (std) as a fraction of the frame's height/width, drawn uniformly in this range.
BLOB_SIGMA_RANGE = (0.12, 0.25)
#: Smallest blob width (std) in pixels, so that small latents stay smooth too.
MIN_BLOB_SIGMA_PX = 1.5
#: Blob speed in frame sizes per latent frame, drawn uniformly in this range (random direction).
BLOB_SPEED_RANGE = (0.04, 0.12)
#: Largest spatial wave number (cycles per frame) of the travelling sinusoid per channel.
MAX_WAVE_NUMBER = 2
#: Shortest spatial period of the sinusoid in pixels (caps the wave number on small latents).
MIN_WAVE_PERIOD_PX = 12
#: Temporal phase speed of the sinusoid, in radians per latent frame, drawn in this range.
WAVE_SPEED_RANGE = (0.2, 0.6)
#: Relative weight of the sinusoid against the blobs.
WAVE_WEIGHT = 0.5
#: Correlation between neighbouring text tokens (AR(1) process along the token axis).
TEXT_TOKEN_CORRELATION = 0.8
#: Offset between the latent seed and the text seed inside :func:`reference_inputs`.
TEXT_SEED_OFFSET = 1_000_003
#: Default timestep of :func:`reference_inputs` (middle of a 1000-step schedule).
DEFAULT_TIMESTEP = 500.0


def _is_shape(shape: tuple, ndim: int) -> bool:
    return len(shape) == ndim and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    )


def _uniform(
    generator: torch.Generator, shape: Sequence[int], low: float, high: float
) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)


def _over_grid(t: torch.Tensor) -> torch.Tensor:
    """Append three unit dims so per-map parameters broadcast over ``(F, H, W)``."""
    return t[..., None, None, None]


def _wrapped(delta: torch.Tensor) -> torch.Tensor:
    """Signed distance on the unit circle, in [-0.5, 0.5)."""
    return torch.remainder(delta + 0.5, 1.0) - 0.5


def synthetic_latents(
    shape: Sequence[int],
    *,
    seed: int = 0,
    noise: float = 0.05,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Smooth moving patterns shaped like a video latent.

    Every (batch element, channel) gets its own sum of ``NUM_BLOBS`` Gaussian blobs of random
    sign, width (at least ``MIN_BLOB_SIGMA_PX`` pixels) and velocity, plus one low-frequency
    sinusoid (at most one cycle per ``MIN_WAVE_PERIOD_PX`` pixels) whose phase advances with
    the frame; blob positions move with the frame index (periodic boundary, so nothing leaves
    the frame). Neighbouring pixels are strongly correlated (lag-1 correlation about 0.8 on an
    8x8 frame, above 0.95 on 48x48), as AsymRnR's token redundancy needs. Each (b, c) map is
    standardised over ``(F, H, W)``, then ``noise`` times seeded Gaussian noise is added and the
    result rescaled to unit variance.

    Args:
        shape: ``(B, C, F, H, W)``, each >= 1.
        seed: seed of the private generator.
        noise: relative std of the added white noise, >= 0 (default 0.05).
        dtype, device: of the result (drawn on CPU in float64 first).

    Returns:
        ``(B, C, F, H, W)`` tensor, roughly zero-mean and unit-variance.

    Raises:
        ValueError: ``shape`` is not five integers >= 1, or ``noise`` is negative or not finite.
    """
    shape = tuple(shape)
    if not _is_shape(shape, 5):
        raise ValueError(f"shape must be five integers >= 1 (B, C, F, H, W), got {shape!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    batch, channels, frames, height, width = shape
    gen = torch.Generator(device="cpu").manual_seed(seed)

    f = torch.arange(frames, dtype=torch.float64).view(frames, 1, 1)
    y = (torch.arange(height, dtype=torch.float64) / height).view(1, height, 1)
    x = (torch.arange(width, dtype=torch.float64) / width).view(1, 1, width)

    # Blob parameters, (B, C, K) each, broadcast against the (F, H, W) grid.
    pb = (batch, channels, NUM_BLOBS)
    centre_y = torch.rand(*pb, generator=gen, dtype=torch.float64)
    centre_x = torch.rand(*pb, generator=gen, dtype=torch.float64)
    sigma = _uniform(gen, pb, *BLOB_SIGMA_RANGE)
    speed = _uniform(gen, pb, *BLOB_SPEED_RANGE)
    direction = _uniform(gen, pb, 0.0, 2 * math.pi)
    amplitude = torch.where(torch.rand(*pb, generator=gen) < 0.5, -1.0, 1.0).double()
    amplitude = amplitude * _uniform(gen, pb, 0.5, 1.0)

    cy = _over_grid(centre_y) + _over_grid(speed * torch.sin(direction)) * f
    cx = _over_grid(centre_x) + _over_grid(speed * torch.cos(direction)) * f
    sigma_y = _over_grid(sigma.clamp_min(MIN_BLOB_SIGMA_PX / height))
    sigma_x = _over_grid(sigma.clamp_min(MIN_BLOB_SIGMA_PX / width))
    dist2 = (_wrapped(y - cy) / sigma_y) ** 2 + (_wrapped(x - cx) / sigma_x) ** 2
    blobs = (_over_grid(amplitude) * torch.exp(-dist2 / 2)).sum(dim=2)

    # One travelling sinusoid per (B, C).
    pw = (batch, channels)
    # Integer wave numbers keep it periodic on the frame; at most one cycle per
    # MIN_WAVE_PERIOD_PX pixels. A zero wave number leaves only the temporal phase.
    max_k_y = min(MAX_WAVE_NUMBER, height // MIN_WAVE_PERIOD_PX)
    max_k_x = min(MAX_WAVE_NUMBER, width // MIN_WAVE_PERIOD_PX)
    k_y = torch.randint(0, max_k_y + 1, pw, generator=gen).double()
    k_x = torch.randint(0, max_k_x + 1, pw, generator=gen).double()
    phase = _uniform(gen, pw, 0.0, 2 * math.pi)
    omega = _uniform(gen, pw, *WAVE_SPEED_RANGE)

    wave = torch.sin(
        2 * math.pi * (_over_grid(k_y) * y + _over_grid(k_x) * x)
        + _over_grid(phase)
        + _over_grid(omega) * f
    )

    pattern = blobs + WAVE_WEIGHT * wave  # (B, C, F, H, W)
    mean = pattern.mean(dim=(2, 3, 4), keepdim=True)
    std = pattern.std(dim=(2, 3, 4), keepdim=True, correction=0).clamp_min(1e-6)
    pattern = (pattern - mean) / std
    pattern = pattern + noise * torch.randn(*shape, generator=gen, dtype=torch.float64)
    pattern = pattern / math.sqrt(1.0 + noise**2)
    return pattern.to(device=device, dtype=dtype)


def synthetic_text_embeddings(
    shape: Sequence[int],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Seeded text embeddings ``(B, T, text_dim)``, unit variance, smooth along the tokens.

    An AR(1) process along the token axis with neighbour correlation
    ``TEXT_TOKEN_CORRELATION``: consecutive tokens are related like words of one prompt, and
    every batch element (e.g. the conditional and unconditional halves of a CFG batch) differs.

    Raises:
        ValueError: ``shape`` is not three integers >= 1.
    """
    shape = tuple(shape)
    if not _is_shape(shape, 3):
        raise ValueError(f"shape must be three integers >= 1 (B, T, text_dim), got {shape!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    innovations = torch.randn(*shape, generator=gen, dtype=torch.float64)
    rho = TEXT_TOKEN_CORRELATION
    tokens = [innovations[:, 0]]
    for t in range(1, shape[1]):
        tokens.append(rho * tokens[-1] + math.sqrt(1 - rho**2) * innovations[:, t])
    return torch.stack(tokens, dim=1).to(device=device, dtype=dtype)


def reference_inputs(
    preset_or_config: str | ReferenceDiTConfig = DEFAULT_PRESET,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    timestep: float = DEFAULT_TIMESTEP,
) -> dict[str, torch.Tensor]:
    """Keyword inputs of :class:`~asymrnr_lab.models.ReferenceDiT` for a preset or config.

    Returns:
        ``{"hidden_states": (B, C, F, H, W)`` from :func:`synthetic_latents` (seed ``seed``),
        ``"encoder_hidden_states": (B, T, text_dim)`` from :func:`synthetic_text_embeddings`
        (seed ``seed + TEXT_SEED_OFFSET``), ``"timestep": (B,)`` float32 filled with
        ``timestep``}. Sizes come from the config (``batch_size`` overrides ``B``); the
        timestep is float32 whatever ``dtype`` is, as diffusers schedulers give it.

    Raises:
        ValueError: unknown preset, or ``batch_size`` not an integer >= 1.
    """
    config = resolve_config(preset_or_config)
    if batch_size is None:
        batch_size = config.batch_size
    elif not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return {
        "hidden_states": synthetic_latents(
            (batch_size, config.in_channels, *config.latent_size),
            seed=seed,
            dtype=dtype,
            device=device,
        ),
        "encoder_hidden_states": synthetic_text_embeddings(
            (batch_size, config.text_tokens, config.text_dim),
            seed=seed + TEXT_SEED_OFFSET,
            dtype=dtype,
            device=device,
        ),
        "timestep": torch.full((batch_size,), float(timestep), dtype=torch.float32, device=device),
    }
