"""Anti-aliased shape coverage from signed distances (shared by rendering and detection).

Coordinates are continuous pixels: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and its
centre is ``(i + 0.5, j + 0.5)``. A shape of size ``s`` centred at ``(cy, cx)`` fits the box
``[cy - s/2, cy + s/2] x [cx - s/2, cx + s/2]``. Coverage is ``clamp(0.5 - d, 0, 1)`` for the
signed distance ``d`` of the pixel centre (negative inside): a one-pixel linear edge ramp, which
preserves area to within a fraction of a pixel.
"""

from __future__ import annotations

import math

import torch

_SQRT2 = math.sqrt(2.0)
_SQRT5 = math.sqrt(5.0)

#: Area of each shape over the square of its size (its fill ratio of the bounding box).
FILL_RATIO: dict[str, float] = {
    "circle": math.pi / 4,
    "square": 1.0,
    "triangle": 0.5,
    "diamond": 0.5,
}

#: Offset of each shape's area centroid below its box centre, over its size (the triangle's
#: centroid lies 2/3 of the way from the apex to the base: s/6 below the box centre).
CENTROID_OFFSET: dict[str, float] = {
    "circle": 0.0,
    "square": 0.0,
    "triangle": 1 / 6,
    "diamond": 0.0,
}


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float64):
    """Pixel-centre coordinates ``(y (H, 1), x (1, W))``."""
    y = torch.arange(height, dtype=dtype).add_(0.5)[:, None]
    x = torch.arange(width, dtype=dtype).add_(0.5)[None, :]
    return y, x


def signed_distance(
    shape: str, dy: torch.Tensor, dx: torch.Tensor, size: torch.Tensor
) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of offsets ``(dy, dx)`` from the box centre."""
    half = size / 2
    if shape == "circle":
        return torch.sqrt(dy * dy + dx * dx) - half
    if shape == "square":
        return torch.maximum(dy.abs(), dx.abs()) - half
    if shape == "triangle":
        # Apex (0, -s/2), base y = +s/2 from x = -s/2 to +s/2. Sides: 2|dx| - dy - s/2 <= 0.
        base = dy - half
        side = (2 * dx.abs() - dy - half) / _SQRT5
        return torch.maximum(base, side)
    if shape == "diamond":
        return (dy.abs() + dx.abs() - half) / _SQRT2
    raise ValueError(f"shape must be one of {tuple(FILL_RATIO)}, got {shape!r}")


def coverage(
    shape: str,
    centre_y: torch.Tensor,
    centre_x: torch.Tensor,
    size: torch.Tensor | float,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Coverage in [0, 1], shape ``(*batch, height, width)`` for centres of shape ``batch``."""
    centre_y = torch.as_tensor(centre_y).to(dtype)
    centre_x = torch.as_tensor(centre_x).to(dtype)
    size = torch.as_tensor(size).to(dtype)
    y, x = pixel_grid(height, width, dtype)
    dy = y - centre_y[..., None, None]
    dx = x - centre_x[..., None, None]
    d = signed_distance(shape, dy, dx, size[..., None, None])
    return (0.5 - d).clamp_(0.0, 1.0)


def blob_coverage(
    centre_y: torch.Tensor,
    centre_x: torch.Tensor,
    radius: float,
    amplitudes: torch.Tensor,
    phases: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """A shapeless blob: radius ``r(theta) = radius * (1 + sum_k a_k sin(k theta + phi_k))``,
    ``k = 2, 3, ...``. ``amplitudes`` ``(K,)``; ``phases`` ``(*batch, K)``. Used to corrupt
    videos (a model's failure mode that a fill-ratio-only detector scores as a circle)."""
    centre_y = torch.as_tensor(centre_y, dtype=torch.float64)
    centre_x = torch.as_tensor(centre_x, dtype=torch.float64)
    y, x = pixel_grid(height, width)
    dy = y - centre_y[..., None, None]
    dx = x - centre_x[..., None, None]
    theta = torch.atan2(dy, dx)
    k = torch.arange(2, 2 + amplitudes.numel(), dtype=torch.float64)
    wave = amplitudes.to(torch.float64) * torch.sin(
        k * theta[..., None] + phases.to(torch.float64)[..., None, None, :]
    )
    r = radius * (1 + wave.sum(-1))
    d = torch.sqrt(dy * dy + dx * dx) - r
    return (0.5 - d).clamp_(0.0, 1.0)
