"""Argument checks shared by the ops and the configuration (private).

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the argument and the allowed values, as docs/architecture.md requires.
They run on Python ints and tensor *shapes* only, so they cost nothing inside
``torch.compile`` (shapes are static there).
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Sequence

import torch

GRID_RANK = 3
"""Video grids and dst strides are ``(frames, height, width)``."""


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int; raise if it is not an integer or below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_triple(name: str, value: object, *, minimum: int) -> tuple[int, int, int]:
    """Return ``value`` as a tuple of three ints, each ``>= minimum``."""
    is_sequence = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    if not is_sequence or len(value) != GRID_RANK:
        raise ValueError(
            f"{name} must be a sequence of {GRID_RANK} ints (frames, height, width), got {value!r}"
        )
    out = []
    for axis, item in zip(("frames", "height", "width"), value):
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} ({axis}) must be an int, got {type(item).__name__} ({item!r})")
        if int(item) < minimum:
            raise ValueError(f"{name} must have every entry >= {minimum}, got {tuple(value)!r}")
        out.append(int(item))
    return (out[0], out[1], out[2])


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (the error suggests the closest one)."""
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name} must be one of {tuple(allowed)!r}, got {value!r}{hint}")
    return value


def check_ratio(name: str, value: object) -> float:
    """Return ``value`` as a float in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} ({value!r})")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def check_tensor(name: str, value: object, *, min_dim: int) -> torch.Tensor:
    """Return ``value`` if it is a tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}"
        )
    return value


def check_index(name: str, value: object, *, min_dim: int = 1) -> torch.Tensor:
    """Return ``value`` if it is an int64 index tensor with at least ``min_dim`` dimensions."""
    value = check_tensor(name, value, min_dim=min_dim)
    if value.dtype != torch.long:
        raise TypeError(f"{name} must be a LongTensor (torch.int64), got {value.dtype}")
    return value


def check_span(name: str, start: object, length: int, total: int, *, what: str) -> int:
    """Validate a token span ``[start, start + length)`` inside an axis of size ``total``."""
    start = check_int(name, start, minimum=0)
    if start + length > total:
        raise ValueError(
            f"{name}={start} puts the {length} {what} outside the token axis of length {total}; "
            f"{name} must be in [0, {total - length}]"
        )
    return start


def broadcast_leading(
    name_a: str, shape_a: Sequence[int], name_b: str, shape_b: Sequence[int]
) -> torch.Size:
    """Broadcast two leading-dimension shapes, naming both arguments when they do not fit."""
    try:
        return torch.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    except RuntimeError as err:
        raise ValueError(
            f"leading dimensions of {name_a} {tuple(shape_a)} and {name_b} {tuple(shape_b)} "
            f"do not broadcast"
        ) from err
