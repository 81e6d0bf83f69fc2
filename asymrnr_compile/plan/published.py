"""Import of the released AsymRnR schedules: redundancy tiers and threshold tables (paper Sec. 3.4).

The published code stores, per (block, step), an integer *redundancy tier* per feature in
``euclidean_<model>_cache<C>.safetensors`` (higher = more redundant), and per preset a small table
``{tier threshold: ratio}`` per feature in ``<model>_cache<C>_<0|1>.yaml`` (``_0`` "base", ``_1``
"fast"). A feature's ratio at (block, step) is the largest ratio whose threshold the tier reaches.
This module reads those files and applies the threshold rule; :class:`~asymrnr_compile.plan.schedule.Schedule`
(``from_tables``, ``from_published``) wraps the result.
"""

from __future__ import annotations

import numbers
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from asymrnr_compile._validate import check_choice, check_ratio
from asymrnr_compile.vocabulary import EXCLUDED_BY_EXCLUSIVE, EXCLUSIVE_FEATURE

OnConflict = Literal["error", "h"]
RATIO_DTYPE = torch.float64
"""Schedules hold float64 ratios: ``ratio()`` then returns 0.4, not 0.4000000059604645."""

TABLE_FEATURE_ALIASES: Mapping[str, str] = types.MappingProxyType({"q": "q", "v": "kv", "kv": "kv", "h": "h"})
"""Table feature name -> schedule feature. The published tables use ``"v"`` for keys and values
reduced together (our ``"kv"``)."""

TIER_KEYS: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {"q": ("q",), "kv": ("kv", "v"), "h": ("h",)}
)
"""Schedule feature -> the tier tensor(s) that feed its table, first present wins. As in the
published code, a table reads the tier tensor of the same name: ``q`` table -> ``q`` tiers,
``v`` table -> ``v`` tiers (V is what the kv matching is computed on). The released files also
hold ``h`` and ``k`` (keys alone) tiers, which no released table uses."""


def ratios_from_tiers(
    tiers: Mapping[str, torch.Tensor], tables: Mapping[str, Mapping[Any, Any]], *, on_conflict: OnConflict = "error"
) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, float]]]:
    """Per-feature ratio tensors ``(blocks, steps)`` from tiers and threshold tables, and the
    normalised tables (see :meth:`~asymrnr_compile.plan.schedule.Schedule.from_tables`)."""
    check_choice("on_conflict", on_conflict, ("error", "h"))
    if not isinstance(tiers, Mapping):
        raise TypeError(f"tiers must be a dict {{name: int tensor}}, got {type(tiers).__name__}")
    if not tiers:
        raise ValueError("tiers must hold at least one tier tensor of shape (blocks, steps)")
    shape: tuple[int, int] | None = None
    first = ""
    for key, value in tiers.items():
        name = f"tiers[{key!r}]"
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
            raise TypeError(f"{name} must be an integer tensor of redundancy tiers, got dtype {value.dtype}")
        if value.dim() != 2 or value.shape[0] < 1 or value.shape[1] < 1:
            raise ValueError(f"{name} must have shape (blocks, steps) with both >= 1, got {tuple(value.shape)}")
        if shape is None:
            shape, first = (int(value.shape[0]), int(value.shape[1])), key
        elif tuple(value.shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but tiers[{first!r}] has {shape}: "
                "every tier tensor needs the same (blocks, steps)"
            )
    assert shape is not None
    normal = normalise_tables(tables)
    ratios: dict[str, torch.Tensor] = {}
    for feature, table in normal.items():
        key = next((k for k in TIER_KEYS[feature] if k in tiers), None)
        if key is None:
            wanted = " or ".join(repr(k) for k in TIER_KEYS[feature])
            raise ValueError(
                f"tables[{feature!r}] needs the tier tensor {wanted}; tiers has {sorted(map(str, tiers))}"
            )
        tier = tiers[key].to("cpu", torch.int64)
        out = torch.zeros(shape, dtype=RATIO_DTYPE)
        for threshold, ratio in table.items():
            out = torch.where(tier >= threshold, out.clamp(min=ratio), out)
        ratios[feature] = out
    if not ratios:
        ratios["q"] = torch.zeros(shape, dtype=RATIO_DTYPE)
    if on_conflict == EXCLUSIVE_FEATURE and EXCLUSIVE_FEATURE in ratios:  # the conflict rule (vocabulary.py)
        h_on = ratios[EXCLUSIVE_FEATURE] > 0
        for feature in EXCLUDED_BY_EXCLUSIVE:
            if feature in ratios:
                ratios[feature] = ratios[feature].masked_fill(h_on, 0.0)
    return ratios, normal


def read_published(tiers_path: Any, table_path: Any) -> tuple[dict[str, torch.Tensor], Any, str]:
    """The tier tensors, the table mapping and a source label (``"<tiers> + <table>"``) of a
    released schedule (see :meth:`~asymrnr_compile.plan.schedule.Schedule.from_published`)."""
    tiers_file = existing_file("tiers_path", tiers_path)
    table_file = existing_file("table_path", table_path)
    try:
        tiers = read_safetensors(tiers_file)[0]
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"tiers_path {str(tiers_file)!r} is not a readable safetensors file: {err}") from err
    import yaml  # local: only needed here

    try:
        tables = yaml.safe_load(table_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"table_path {str(table_file)!r} is not valid YAML: {err}") from err
    if not isinstance(tables, Mapping):
        raise ValueError(
            f"table_path {str(table_file)!r} must hold a mapping {{feature: {{threshold: ratio}}}}, "
            f"got {type(tables).__name__}"
        )
    return tiers, tables, f"{tiers_file.name} + {table_file.name}"


def _threshold(feature: str, key: object) -> int:
    if isinstance(key, bool):
        raise TypeError(f"tables[{feature!r}] threshold must be an int, got {key!r}")
    if isinstance(key, numbers.Integral):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("+-").isdigit():
        return int(key.strip())
    raise TypeError(f"tables[{feature!r}] threshold must be an int (or a string of digits), got {key!r}")


def normalise_tables(tables: object) -> dict[str, dict[int, float]]:
    """``{feature: {threshold: ratio}}`` with schedule feature names, int thresholds (sorted) and
    float ratios in [0, 1)."""
    if not isinstance(tables, Mapping):
        raise TypeError(f"tables must be a dict {{feature: {{threshold: ratio}}}}, got {type(tables).__name__}")
    out: dict[str, dict[int, float]] = {}
    for raw_feature, table in tables.items():
        if raw_feature == "k":
            raise ValueError(
                "tables feature 'k' (keys alone) is not supported: use 'v' or 'kv' (keys and values "
                "reduced together, matched on V)"
            )
        check_choice("tables feature", raw_feature, tuple(TABLE_FEATURE_ALIASES))
        feature = TABLE_FEATURE_ALIASES[raw_feature]
        if feature in out:
            raise ValueError(f"tables gives {feature!r} twice (both 'v' and 'kv'?)")
        if table is None:
            table = {}
        if not isinstance(table, Mapping):
            raise TypeError(
                f"tables[{raw_feature!r}] must be a mapping {{threshold: ratio}}, got {type(table).__name__}"
            )
        entries: dict[int, float] = {}
        for key, ratio in table.items():
            threshold = _threshold(raw_feature, key)
            if threshold in entries:
                raise ValueError(f"tables[{raw_feature!r}] gives threshold {threshold} twice")
            entries[threshold] = check_ratio(f"tables[{raw_feature!r}][{threshold}]", ratio)
        out[feature] = dict(sorted(entries.items()))
    return out


def existing_file(name: str, path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{name}: no such file {str(file)!r}")
    return file


def read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """Every tensor of a safetensors file (on the CPU) and its metadata."""
    from safetensors import safe_open

    with safe_open(os.fspath(file), framework="pt", device="cpu") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()
