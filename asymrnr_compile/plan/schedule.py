"""Per-block, per-step reduction ratios: AsymRnR's redundancy schedules (paper Sec. 3.4 and 4).

AsymRnR does not reduce every attention block at every denoising step by the same amount. A
baseline run measures how redundant each block's features are at each step and stores an
integer *redundancy tier* per (block, step) and feature: **higher tier = more redundant** (the
source tokens lie closer to their nearest destination tokens, so dropping them costs less). A
small table ``{tier threshold: ratio}`` per feature turns tiers into ratios: the ratio of a
feature at (block, step) is the **largest ratio whose threshold the tier reaches**
(``tier >= threshold``), and 0 when the tier reaches no threshold. E.g. the CogVideoX-2B "base"
preset is ``q {6: 0.4, 7: 0.8}, v {8: 0.3}``: a q tier of 6 gives 0.4, 7 or more gives 0.8.

A :class:`Schedule` holds the result: one float64 tensor of shape ``(blocks, steps)`` per
feature,

- ``"q"``: fraction of video query tokens removed (output restored),
- ``"kv"``: fraction of video key/value tokens removed together (the published format calls
  this feature ``"v"``: the matching is computed on V and applied to K as well),
- ``"h"``: fraction of the attention block's input hidden states removed,

each in ``[0, 1)``. It is immutable after construction.

**Rows (blocks).** Row ``b`` is the ``b``-th attention-bearing transformer block in execution
order. For most models that is ``site.block_index``; for HunyuanVideo the published rows are the
20 dual-stream blocks followed by the 40 single-stream blocks (row 20 is
``single_transformer_blocks.0``), so the caller maps sites to rows. Several sites of one block
(Mochi's per-batch-element attention) share the block's row.

**Steps.** Column ``s`` is denoising step ``s`` (0 = first). A schedule made at one step count
can drive another: address steps by normalised time with ``ratio(..., progress=p)``
(``p = 0`` first step, ``p = 1`` last step, mapped to the nearest calibrated step), or build
a schedule for the new count once with :meth:`Schedule.resample` (same nearest-step mapping,
see :meth:`Schedule.source_steps`).

**Conflict rule.** Where ``h > 0`` at (block, step), ``q`` and ``kv`` must be 0 there (the
whole block already runs on fewer tokens). The constructor *raises* ``ValueError`` on a
violation. :meth:`Schedule.from_tables` can instead resolve it with ``on_conflict="h"``
(h wins: q and kv are set to 0 where h > 0). The published code resolves such conflicts by an
efficiency estimate that may switch h off instead; none of the released tables has an ``h``
table, so published imports never conflict.

**Files.** :meth:`Schedule.save` / :meth:`Schedule.load` use safetensors with JSON metadata
(never pickle, docs/architecture.md). :meth:`Schedule.from_published` reads the released
``euclidean_<model>_cache<C>.safetensors`` tiers and ``<model>_cache<C>_<0|1>.yaml`` tables
(YAML via ``yaml.safe_load``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from asymrnr_compile._validate import check_choice, check_int, check_ratio, check_triple
from asymrnr_compile.plan.published import (
    RATIO_DTYPE,
    OnConflict,
    existing_file,
    normalise_tables,
    ratios_from_tiers,
    read_published,
    read_safetensors,
)
from asymrnr_compile.vocabulary import EXCLUDED_BY_EXCLUSIVE, EXCLUSIVE_FEATURE, FEATURES

if TYPE_CHECKING:
    from asymrnr_compile.analysis.site import AttentionSite

FORMAT = "asymrnr_compile.plan.schedule"
FORMAT_VERSION = 1
"""Version of the file written by :meth:`Schedule.save`; :meth:`Schedule.load` rejects newer ones."""


PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False, init=False)
class Schedule:
    """Reduction ratio per block x step x feature (paper Sec. 3.4 and 4). Immutable.

    Build with :meth:`from_published`, :meth:`from_tables`, :meth:`constant`, :meth:`load`, or
    directly from ratio tensors.

    Args:
        ratios: ``{"q" | "kv" | "h": tensor}``, each real-valued, shape ``(blocks, steps)``,
            values in ``[0, 1)``. Missing features are all 0; at least one must be given. The
            tensors are copied (float64, CPU).
        tables: the ``{feature: {tier threshold: ratio}}`` tables the ratios were made from, if
            any (recorded for reports and in saved files; feature names ``q``/``kv``/``h``,
            ``v`` accepted for ``kv``). Default None.
        grid: video token grid ``(frames, height, width)`` the schedule was measured on, if
            known. Default None.
        model: free-form model label, e.g. ``"cogvideox-2b"``. Default None.
        source: where the schedule came from (file names, "constant", ...). Default None.

    Raises:
        ValueError: shapes differ or are empty, a ratio is outside ``[0, 1)`` or not finite,
            an unknown feature, or the conflict rule is broken (``h > 0`` together with
            ``q > 0`` or ``kv > 0`` at one (block, step)).
        TypeError: a ratio is not a tensor, or is a bool/complex tensor.

    Attributes:
        num_blocks, num_steps: the shape ``(blocks, steps)`` of every ratio tensor.
        grid, model, source: as given.
        tables: the tables as a read-only ``{feature: {threshold: ratio}}`` mapping, or None.
    """

    num_blocks: int
    num_steps: int
    grid: tuple[int, int, int] | None
    model: str | None
    source: str | None
    tables: Mapping[str, Mapping[int, float]] | None
    _ratios: Mapping[str, torch.Tensor] = field(repr=False)
    _lists: Mapping[str, tuple[tuple[float, ...], ...]] = field(repr=False)

    def __init__(
        self,
        ratios: Mapping[str, torch.Tensor],
        *,
        tables: Mapping[str, Mapping[Any, Any]] | None = None,
        grid: tuple[int, int, int] | None = None,
        model: str | None = None,
        source: str | None = None,
    ) -> None:
        if not isinstance(ratios, Mapping):
            raise TypeError(f"ratios must be a dict {{feature: tensor}}, got {type(ratios).__name__}")
        if not ratios:
            raise ValueError(f"ratios must give at least one of the features {FEATURES}")
        shape: tuple[int, int] | None = None
        given: dict[str, torch.Tensor] = {}
        for feature, value in ratios.items():
            check_choice("ratios feature", feature, FEATURES)
            name = f"ratios[{feature!r}]"
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.dtype == torch.bool or value.is_complex():
                raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
            if value.dim() != 2 or value.shape[0] < 1 or value.shape[1] < 1:
                raise ValueError(f"{name} must have shape (blocks, steps) with both >= 1, got {tuple(value.shape)}")
            if shape is None:
                shape = (int(value.shape[0]), int(value.shape[1]))
            elif tuple(value.shape) != shape:
                first = next(iter(given))
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)} but ratios[{first!r}] has {shape}: "
                    "every feature needs the same (blocks, steps)"
                )
            tensor = value.detach().to(device="cpu", dtype=RATIO_DTYPE).clone().contiguous()
            bad = ~((tensor >= 0) & (tensor < 1))  # also catches NaN
            if bool(bad.any()):
                b, s = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"{name} must be in [0, 1) everywhere, got {float(tensor[b, s])} at block {b}, step {s}"
                )
            given[feature] = tensor
        assert shape is not None
        full = {f: given.get(f, torch.zeros(shape, dtype=RATIO_DTYPE)) for f in FEATURES}
        excluded_on = torch.stack([full[f] > 0 for f in EXCLUDED_BY_EXCLUSIVE]).any(dim=0)
        clash = (full[EXCLUSIVE_FEATURE] > 0) & excluded_on  # the conflict rule (vocabulary.py)
        if bool(clash.any()):
            b, s = (int(i) for i in clash.nonzero()[0])
            raise ValueError(
                f"conflict rule: where h > 0, q and kv must be 0; {int(clash.sum())} (block, step) "
                f"break it, first block {b}, step {s} (h={float(full['h'][b, s])}, "
                f"q={float(full['q'][b, s])}, kv={float(full['kv'][b, s])}). "
                "Use Schedule.from_tables(..., on_conflict='h') to let h win"
            )
        if grid is not None:
            grid = check_triple("grid", grid, minimum=1)
        for label, text in (("model", model), ("source", source)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{label} must be a str or None, got {type(text).__name__}")
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        set_("num_blocks", shape[0])
        set_("num_steps", shape[1])
        set_("grid", grid)
        set_("model", model)
        set_("source", source)
        set_("tables", None if tables is None else _freeze_tables(normalise_tables(tables)))
        set_("_ratios", types.MappingProxyType(full))
        set_("_lists", types.MappingProxyType({f: tuple(map(tuple, t.tolist())) for f, t in full.items()}))

    # ------------------------------------------------------------------ builders

    @classmethod
    def constant(
        cls,
        blocks: int,
        steps: int,
        *,
        q: float = 0.0,
        kv: float = 0.0,
        h: float = 0.0,
        grid: tuple[int, int, int] | None = None,
        model: str | None = None,
    ) -> Schedule:
        """The same ratios at every (block, step); each ratio in ``[0, 1)``, default 0.

        ``h > 0`` together with ``q > 0`` or ``kv > 0`` breaks the conflict rule (ValueError).
        """
        blocks = check_int("blocks", blocks, minimum=1)
        steps = check_int("steps", steps, minimum=1)
        values = {"q": check_ratio("q", q), "kv": check_ratio("kv", kv), "h": check_ratio("h", h)}
        ratios = {f: torch.full((blocks, steps), v, dtype=RATIO_DTYPE) for f, v in values.items()}
        return cls(ratios, grid=grid, model=model, source="constant")

    @classmethod
    def from_tables(
        cls,
        tiers: Mapping[str, torch.Tensor],
        tables: Mapping[str, Mapping[Any, Any]],
        *,
        on_conflict: OnConflict = "error",
        grid: tuple[int, int, int] | None = None,
        model: str | None = None,
        source: str | None = None,
    ) -> Schedule:
        """Turn redundancy tiers into ratios with the threshold rule (paper Sec. 3.4).

        For each table feature, the ratio at (block, step) is the largest ``ratio`` among the
        table entries whose ``threshold <= tier[block, step]``; 0 if there is none. Features
        without a table are 0 everywhere.

        Args:
            tiers: ``{name: int tensor (blocks, steps)}``; higher tier = more redundant. A table
                feature reads the tier tensor of the same name (:data:`TIER_KEYS`: ``q`` -> ``q``;
                ``kv`` -> ``kv``, else ``v``; ``h`` -> ``h``). Extra tier tensors (the published
                ``k``) are ignored, but all must share one shape.
            tables: ``{feature: {threshold: ratio}}`` with feature ``q``, ``v``/``kv`` or ``h``,
                integer thresholds (ints or strings of digits, as YAML may give) and ratios in
                ``[0, 1)``.
            on_conflict: ``"error"`` (default): raise where h > 0 meets q > 0 or kv > 0.
                ``"h"``: h wins, q and kv are set to 0 there.
            grid, model, source: recorded as in :class:`Schedule`.
        """
        ratios, normal = ratios_from_tiers(tiers, tables, on_conflict=on_conflict)
        return cls(ratios, tables=normal, grid=grid, model=model, source=source)

    @classmethod
    def from_published(
        cls,
        tiers_path: PathLike,
        table_path: PathLike,
        *,
        grid: tuple[int, int, int] | None = None,
        model: str | None = None,
    ) -> Schedule:
        """Import a released AsymRnR schedule: tiers (safetensors) + one preset table (YAML).

        Args:
            tiers_path: ``euclidean_<model>_cache<C>.safetensors`` with int64 tensors ``h``,
                ``k``, ``q``, ``v`` of shape (blocks, steps).
            table_path: ``<model>_cache<C>_<0|1>.yaml`` (``_0`` "base", ``_1`` "fast"): a mapping
                ``{q: {threshold: ratio}, v: {threshold: ratio}}``; ``v`` becomes ``kv``. The
                ``q`` table reads the ``q`` tiers and the ``v`` table the ``v`` tiers, as the
                published code does (``redundancy_schedule[feat]`` with the table's own key).
            grid, model: recorded as in :class:`Schedule`.

        Raises:
            FileNotFoundError: a file is missing (the message names the argument).
            ValueError: not a safetensors file, not a YAML mapping, a table feature without
                its tier tensor, tier shapes that differ, a threshold that is not an integer, a
                ratio outside ``[0, 1)``.
        """
        tiers, tables, source = read_published(tiers_path, table_path)
        try:
            return cls.from_tables(tiers, tables, grid=grid, model=model, source=source)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{source}: {err}") from err

    @classmethod
    def load(cls, path: PathLike) -> Schedule:
        """Read a file written by :meth:`save` (safetensors; never pickle)."""
        file = existing_file("path", path)
        try:
            tensors, metadata = read_safetensors(file)
        except Exception as err:
            raise ValueError(f"path {str(file)!r} is not a readable safetensors file: {err}") from err
        metadata = metadata or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(
                f"path {str(file)!r} is not a saved Schedule (metadata format {metadata.get('format')!r}, "
                f"expected {FORMAT!r}); for released AsymRnR tiers use Schedule.from_published"
            )
        try:
            version = int(metadata.get("format_version", ""))
            info = json.loads(metadata["schedule"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"path {str(file)!r}: damaged schedule metadata ({err})") from err
        if version > FORMAT_VERSION:
            raise ValueError(
                f"path {str(file)!r} has schedule format version {version}; this asymrnr_compile "
                f"reads up to {FORMAT_VERSION}"
            )
        missing = [f for f in FEATURES if f not in tensors]
        if missing:
            raise ValueError(f"path {str(file)!r} lacks the ratio tensors {missing}")
        schedule = cls(
            {f: tensors[f] for f in FEATURES},
            tables=info.get("tables"),
            grid=tuple(info["grid"]) if info.get("grid") is not None else None,
            model=info.get("model"),
            source=info.get("source"),
        )
        stated = (info.get("num_blocks"), info.get("num_steps"))
        if stated != (schedule.num_blocks, schedule.num_steps):
            raise ValueError(
                f"path {str(file)!r}: metadata says {stated[0]} blocks x {stated[1]} steps, "
                f"tensors are {schedule.num_blocks} x {schedule.num_steps}"
            )
        return schedule

    # ------------------------------------------------------------------ queries

    def ratio(
        self,
        *,
        block: int,
        feature: str,
        step: int | None = None,
        progress: float | None = None,
    ) -> float:
        """The ratio of ``feature`` at ``block`` and one step, as a Python float.

        Give exactly one of ``step`` (an index in ``[0, num_steps)``) or ``progress`` (a float
        in ``[0, 1]``: 0 = first step, 1 = last step, mapped to the nearest calibrated step by
        :meth:`step_for_progress`).
        """
        if feature not in FEATURES:
            check_choice("feature", feature, FEATURES)
        block = _check_index("block", block, self.num_blocks, "blocks")
        if (step is None) == (progress is None):
            raise ValueError("give exactly one of step= (an index) or progress= (in [0, 1])")
        if step is None:
            step = self.step_for_progress(progress)
        else:
            step = _check_index("step", step, self.num_steps, "steps")
        return self._lists[feature][block][step]

    def ratios(self, feature: str) -> torch.Tensor:
        """A copy of the float64 ratio tensor of ``feature``, shape ``(num_blocks, num_steps)``."""
        check_choice("feature", feature, FEATURES)
        return self._ratios[feature].clone()

    def step_for_progress(self, progress: float) -> int:
        """The calibrated step nearest to normalised time ``progress`` in ``[0, 1]``:
        ``floor(progress * (num_steps - 1) + 0.5)`` (halves round up, with a 1e-9 tolerance so
        that ``progress = j / (n - 1)`` reads the same step as :meth:`source_steps` (n))."""
        if isinstance(progress, bool) or not isinstance(progress, numbers.Real):
            raise TypeError(f"progress must be a float in [0, 1], got {type(progress).__name__} ({progress!r})")
        progress = float(progress)
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        return min(self.num_steps - 1, math.floor(progress * (self.num_steps - 1) + 0.5 + 1e-9))

    def source_steps(self, num_steps: int) -> tuple[int, ...]:
        """For a run of ``num_steps`` steps, the calibrated step each step reads.

        Step ``j`` has progress ``j / (num_steps - 1)`` and reads the nearest calibrated step,
        computed exactly in integers: ``round_half_up(j * (S - 1) / (num_steps - 1))`` with
        ``S = self.num_steps``. The first step maps to 0, the last to ``S - 1``, and the mapping
        never decreases. ``num_steps == 1`` reads step 0.
        """
        num_steps = check_int("num_steps", num_steps, minimum=1)
        if num_steps == 1:
            return (0,)
        last, span = self.num_steps - 1, num_steps - 1
        return tuple((2 * j * last + span) // (2 * span) for j in range(num_steps))

    def resample(self, num_steps: int) -> Schedule:
        """This schedule for a run of ``num_steps`` steps (nearest-step mapping of
        :meth:`source_steps`); the same object when the count already matches. Blocks, tables,
        grid and model are kept; ``source`` notes the resampling."""
        index = torch.tensor(self.source_steps(num_steps), dtype=torch.long)
        if num_steps == self.num_steps:
            return self
        note = f"resampled {self.num_steps} -> {num_steps} steps"
        return Schedule(
            {f: t.index_select(1, index) for f, t in self._ratios.items()},
            tables=self.tables,
            grid=self.grid,
            model=self.model,
            source=f"{self.source}; {note}" if self.source else note,
        )

    def check_fits(self, num_blocks: int, num_steps: int | None = None, *, resample: bool = False) -> None:
        """Raise ValueError unless this schedule fits a model of ``num_blocks`` blocks run for
        ``num_steps`` steps.

        A different block count is always an error. A different step count is an error unless
        ``resample=True`` (the caller addresses steps by ``progress`` or uses
        :meth:`resample`), or ``num_steps`` is None (not known yet). The message names both
        shapes, e.g. ``"schedule has 30 blocks x 50 steps, model has 4 blocks x 10 steps"``.
        """
        num_blocks = check_int("num_blocks", num_blocks, minimum=1)
        if num_steps is not None:
            num_steps = check_int("num_steps", num_steps, minimum=1)
        blocks_ok = num_blocks == self.num_blocks
        steps_ok = num_steps is None or resample or num_steps == self.num_steps
        if blocks_ok and steps_ok:
            return
        model_steps = f"{num_steps} steps" if num_steps is not None else "an unknown number of steps"
        message = (
            f"schedule has {self.num_blocks} blocks x {self.num_steps} steps, "
            f"model has {num_blocks} blocks x {model_steps}"
        )
        if not blocks_ok:
            message += "; the block count must match (one schedule row per attention block)"
        else:
            message += f"; use schedule.resample({num_steps}) or address steps by progress"
        raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for reports: shape, provenance, tables, and per feature the mean
        ratio, the largest ratio and the fraction of (block, step) with a ratio > 0."""
        summary = {}
        for feature, tensor in self._ratios.items():
            summary[feature] = {
                "mean_ratio": float(tensor.mean()),
                "max_ratio": float(tensor.max()),
                "reduced_fraction": float((tensor > 0).to(RATIO_DTYPE).mean()),
            }
        return {**self._description(), "features": summary}

    # ------------------------------------------------------------------ saving

    def _description(self) -> dict[str, Any]:
        """Shape, grid, model, source and tables: what a saved file's metadata and the report hold."""
        return {
            "num_blocks": self.num_blocks,
            "num_steps": self.num_steps,
            "grid": list(self.grid) if self.grid is not None else None,
            "model": self.model,
            "source": self.source,
            "tables": _tables_to_json(self.tables),
        }

    def save(self, path: PathLike) -> None:
        """Write this schedule as safetensors: float64 tensors ``q``, ``kv``, ``h`` of shape
        (blocks, steps) and string metadata ``format``, ``format_version`` and ``schedule`` (JSON:
        ``num_blocks``, ``num_steps``, ``grid``, ``model``, ``source``, ``tables``). Exact round
        trip through :meth:`load`."""
        from safetensors.torch import save_file

        info = self._description()
        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "schedule": json.dumps(info)}
        save_file({f: t.contiguous() for f, t in self._ratios.items()}, os.fspath(path), metadata=metadata)


def site_rows(sites: Iterable[AttentionSite]) -> dict[int, int]:
    """Schedule row of every reducible attention site of one captured graph: ``{site.index: row}``.

    Rows are the blocks that hold at least one reducible site, numbered in graph (execution)
    order of their first site: the block of the first reducible site is row 0, and so on. All
    sites of one block (``site.block``, e.g. Mochi's per-batch-element attention calls) share its
    row; a site without a known block gets a row of its own. Sites the analysis marks
    unreducible get no row. The backend (``schedule=``), :func:`asymrnr_compile.profile` and
    :func:`asymrnr_compile.calibrate` all use this mapping, so a schedule made from a profile
    fits the backend's model. ``sites`` are :class:`~asymrnr_compile.analysis.AttentionSite`
    records (anything with ``index``, ``block`` and ``reducible``).
    """
    rows: dict[int, int] = {}
    block_rows: dict[str, int] = {}
    next_row = 0
    for site in sorted(sites, key=lambda s: s.index):
        if not site.reducible:
            continue
        if site.block is None:
            rows[site.index] = next_row
            next_row += 1
            continue
        if site.block not in block_rows:
            block_rows[site.block] = next_row
            next_row += 1
        rows[site.index] = block_rows[site.block]
    return rows


# ---------------------------------------------------------------------- helpers


def _check_index(name: str, value: object, size: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in [0, {size}) (the schedule has {size} {what}), got {value}")
    return value


def _freeze_tables(tables: dict[str, dict[int, float]]) -> Mapping[str, Mapping[int, float]]:
    return types.MappingProxyType({f: types.MappingProxyType(dict(t)) for f, t in tables.items()})


def _tables_to_json(tables: Mapping[str, Mapping[int, float]] | None) -> dict[str, dict[str, float]] | None:
    if tables is None:
        return None
    return {f: {str(k): v for k, v in t.items()} for f, t in tables.items()}
