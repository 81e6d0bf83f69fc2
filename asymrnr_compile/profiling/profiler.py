"""Redundancy profiling: run a model's normal sampling loop and record, per attention site, step
and feature, how redundant its video tokens are (paper Sec. 3.4).

::

    import asymrnr_compile
    prof = asymrnr_compile.profile(model, lambda m: my_sampling_loop(m), config=AsymRnRConfig())
    prof.stat("mean")              # (sites, steps, features) mean normalised distance
    schedule = asymrnr_compile.calibrate(prof, target_speedup=1.5)

The model is compiled with :class:`ProfilingBackend`: every captured graph is rewritten by
:func:`~asymrnr_compile.passes.record_redundancy.record_redundancy` (statistics as extra graph
outputs) and compiled with Inductor. Nothing is reduced: the model's outputs are those of the
plain Inductor graph. The split and similarity are the config's (``dst_stride``, ``seed``,
``similarity``, ``grid``), with the same per-site seeds the backend uses, so the profile measures
the matching the backend would make. Steps come from the timestep input as in the backend
(:class:`~asymrnr_compile.runtime.steps.StepSignal`); calls within one step (cond / uncond) and
repeated videos are averaged. The sites profiled are those the backend would reduce
(:func:`~asymrnr_compile.plan.select_sites.site_skip_reason`: ``min_video_tokens``,
``skip_blocks`` and the split's grid apply alike), compiled subgraph by subgraph as the backend's
variants are (:mod:`~asymrnr_compile.runtime.compile_subgraphs`).

Sites map to schedule rows with :func:`~asymrnr_compile.plan.schedule.site_rows`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.cost import GraphCostModel
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.ops import redundancy
from asymrnr_compile.passes.record_redundancy import (
    PROFILE_FEATURES,
    FeatureProbe,
    record_redundancy,
)
from asymrnr_compile.plan.schedule import site_rows
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.plan.select_sites import site_dst_stride, site_skip_reason, split_grid
from asymrnr_compile.runtime.compile_subgraphs import Compiler, SubgraphCompiler, compile_subgraphs, inductor_compiler
from asymrnr_compile.runtime.steps import StepSignal, StepTracker
from asymrnr_compile.vocabulary import Feature

logger = logging.getLogger("asymrnr_compile")

# The split a profiled feature is measured on: the one the backend draws for the reduced feature.
SPLIT_OF_FEATURE: dict[str, Feature] = {"q": "q", "k": "kv", "v": "kv", "h": "h"}


@dataclass
class ProfiledSite:
    """One profiled attention site (JSON-ready apart from nothing: plain values only)."""

    name: str
    index: int
    graph: int
    row: int
    block: str | None
    kind: str
    video_tokens: int
    text_tokens: int | None
    grid: tuple[int, int, int] | None
    num_dst: int
    features: tuple[str, ...]
    hidden_matched: bool = False
    """Whether a backend with the profile's config matches q and kv here on the hidden states
    (``config.match_on`` and :meth:`AttentionSite.matches_on_hidden_states`): the cost model then
    counts one matching of the hidden states per feature, not one per head."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "graph": self.graph, "row": self.row, "block": self.block,
                "kind": self.kind, "video_tokens": self.video_tokens, "text_tokens": self.text_tokens,
                "grid": list(self.grid) if self.grid else None, "num_dst": self.num_dst,
                "features": list(self.features), "hidden_matched": self.hidden_matched}


class _ProfiledGraph:
    """The callable returned to Dynamo for one graph: runs the profiling variant, keeps statistics."""

    def __init__(self, graph_index: int, gm: torch.fx.GraphModule, sites: list[AttentionSite],
                 probes: list[FeatureProbe], splits: dict[tuple[int, str], ops.TokenSplit],
                 config: AsymRnRConfig, quantiles: tuple[float, ...], ratios: tuple[float, ...],
                 error_ratios: tuple[float, ...], compile_graph: Compiler,
                 tracker: StepTracker | None = None) -> None:
        self.graph_index = graph_index
        self.rewrite = record_redundancy(gm, sites, probes, similarity=config.similarity,
                                         match_chunk_bytes=config.match_chunk_bytes,
                                         match_kernel=config.match_kernel, quantiles=quantiles,
                                         ratios=ratios, error_ratios=error_ratios)
        self.splits = splits
        self.compile_graph = compile_graph
        self.fn: Callable[..., Any] | None = None
        # Graphs with a timestep input share the backend's tracker, so that a recompiled graph
        # continues the step count instead of restarting it.
        self.steps = StepSignal(gm, tracker, arg_names=config.timestep_args)
        # (step, site index, feature) -> [sum of statistics, count]
        self.sums: dict[tuple[int, int, str], list[Any]] = {}
        self.calls = 0
        self.on_call: Callable[[int], None] | None = None

    def _extra(self) -> list[torch.Tensor]:
        return [getattr(self.splits[(probe.site_index, probe.feature)], name)
                for probe, name in self.rewrite.extra_inputs]

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        event = self.steps.observe(args)
        extra = self._extra()
        if self.fn is None:  # split at attention: identical blocks share their compiled subgraphs
            self.fn = compile_subgraphs(self.rewrite.gm, SubgraphCompiler(self.compile_graph))
        outputs = self.fn(*args, *extra)
        original = self.rewrite.num_original_outputs
        for probe, stats in zip(self.rewrite.extra_outputs, outputs[original:]):
            entry = self.sums.setdefault((event.step, probe.site_index, probe.feature), [0.0, 0])
            entry[0] = entry[0] + stats.detach().to("cpu", torch.float64)
            entry[1] += 1
        if self.on_call is not None:
            self.on_call(event.step)
        return outputs[:original]


def _probe_features(site: AttentionSite) -> list[str]:
    """Which of h, q, k, v can be measured at a site (video tokens on that tensor's axis -2)."""
    out = []
    hidden = site.hidden_states.meta.get("example_value") if site.hidden_states is not None else None
    if (isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and site.token_dim == 1
            and site.hidden_states_video_start is not None):
        out.append("h")
    out.append("q")
    if site.kind != "cross":
        out += ["k", "v"]
    return out


class ProfilingBackend:
    """A ``torch.compile`` backend that records redundancy statistics (see the module docstring).

    Args:
        config: split, similarity and seed settings (ratios are ignored). Default
            ``AsymRnRConfig()``.
        quantiles: quantiles of the normalised distance to record, each in [0, 1]. Default
            ``ops.redundancy.DEFAULT_QUANTILES``.
        ratios: ratios whose dropped-token statistics are recorded, each in [0, 1). Default
            ``ops.redundancy.DEFAULT_PROFILE_RATIOS``.
        min_video_tokens: sites with fewer video tokens are not profiled. Default: the config's.
        error_ratios: ratios at which the output error of the q and kv reductions is measured
            (``error@r`` statistics, :func:`asymrnr_compile.ops.redundancy.reduction_errors`;
            one extra attention call per ratio, q and v probes), each in [0, 1). Default none.
    """

    def __init__(self, config: AsymRnRConfig | None = None, *,
                 quantiles: Sequence[float] = redundancy.DEFAULT_QUANTILES,
                 ratios: Sequence[float] = redundancy.DEFAULT_PROFILE_RATIOS,
                 min_video_tokens: int | None = None,
                 error_ratios: Sequence[float] = ()) -> None:
        self.config = config if config is not None else AsymRnRConfig()
        if not isinstance(self.config, AsymRnRConfig):
            raise TypeError(f"config must be an AsymRnRConfig, got {type(self.config).__name__}")
        self.quantiles = tuple(float(q) for q in quantiles)
        self.ratios = tuple(float(r) for r in ratios)
        self.error_ratios = tuple(float(r) for r in error_ratios)
        redundancy.stat_names(self.quantiles, self.ratios, self.error_ratios)
        for q in self.quantiles:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantiles must be in [0, 1], got {q}")
        for label, values in (("ratios", self.ratios), ("error_ratios", self.error_ratios)):
            for r in values:
                if not 0.0 <= r < 1.0:
                    raise ValueError(f"{label} must be in [0, 1), got {r}")
        # The sites profiled are those the backend would reduce, with this token minimum.
        self.selection = self.config if min_video_tokens is None else \
            dataclasses.replace(self.config, min_video_tokens=min_video_tokens)
        self.graphs: list[_ProfiledGraph] = []
        self.sites: list[ProfiledSite] = []
        self.skipped: list[dict[str, str]] = []
        self.cost_models: list[tuple[GraphCostModel, dict[int, int]]] = []
        self.on_call: Callable[[int], None] | None = None
        self._rows = 0
        self._block_rows: dict[Any, int] = {}
        self._position: dict[tuple[int, int], int] = {}  # (graph, site index) -> position in self.sites
        self._tracker = StepTracker()

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: Any = None,
                 mode: str | None = None) -> Callable[..., Any]:
        compile_graph = inductor_compiler(gm, mode)
        graph_index = len(self.graphs)
        sites = find_attention_sites(gm)
        rows = site_rows(sites)
        known = {site.name: position for position, site in enumerate(self.sites)}
        merged = 0
        probes: list[FeatureProbe] = []
        splits: dict[tuple[int, str], ops.TokenSplit] = {}
        config = self.config
        for site in sites:
            reason = site_skip_reason(site, self.selection)
            if reason or site.video_tokens is None:
                entry = {"site": site.name, "reason": reason or "unknown number of video tokens"}
                if entry not in self.skipped:
                    self.skipped.append(entry)
                continue
            grid = split_grid(site, config)
            stride = site_dst_stride(grid, config.dst_stride)
            num_dst = ops.count_dst_tokens(site.video_tokens, grid, stride)
            features = _probe_features(site)
            if site.name in known:  # the same site in a recompiled graph: accumulate into it
                self._position[(graph_index, site.index)] = known[site.name]
                merged += 1
            else:
                # Rows are blocks (site_rows), numbered across graphs by first appearance.
                key = site.block if site.block is not None else ("site", graph_index, rows[site.index])
                row = self._block_rows.setdefault(key, len(self._block_rows))
                self._position[(graph_index, site.index)] = len(self.sites)
                self.sites.append(ProfiledSite(site.name, site.index, graph_index, row, site.block, site.kind,
                                               site.video_tokens, site.text_tokens, grid, num_dst, tuple(features),
                                               site.matches_on_hidden_states(config.match_on)))
            for feature in features:
                start = site.hidden_states_video_start if feature == "h" else site.video_start
                probes.append(FeatureProbe(site.index, feature, site.video_tokens, num_dst, start))
                seed = site_seed(config.seed, site.index, SPLIT_OF_FEATURE[feature])
                splits[(site.index, feature)] = ops.split_tokens(site.video_tokens, grid, stride, seed=seed)
        self._rows = len(self._block_rows)
        recompiled = bool(probes) and merged == len({p.site_index for p in probes})
        if not recompiled:
            # A recompiled copy of a graph seen before adds no cost model (its FLOPs are counted once).
            self.cost_models.append((GraphCostModel(gm, sites), {s.index: s.num_dst for s in self.sites
                                                                 if s.graph == graph_index}))
        if not probes:
            logger.info("asymrnr profile: nothing to profile in this graph")
            self.graphs.append(None)  # type: ignore[arg-type]
            return compile_graph(gm, list(example_inputs))
        graph = _ProfiledGraph(graph_index, gm, sites, probes, splits, config, self.quantiles, self.ratios,
                               self.error_ratios, compile_graph, self._tracker)
        graph.on_call = self.on_call
        self.graphs.append(graph)
        return graph

    def profile(self) -> RedundancyProfile:
        """The statistics recorded so far."""
        names = redundancy.stat_names(self.quantiles, self.ratios, self.error_ratios)
        steps = 1 + max((key[0] for g in self.graphs if g is not None for key in g.sums), default=-1)
        totals: dict[tuple[int, int, str], list[Any]] = {}
        for graph in self.graphs:
            if graph is None:
                continue
            for (step, site_index, feature), (total, count) in graph.sums.items():
                entry = totals.setdefault((self._position[(graph.graph_index, site_index)], step, feature), [0.0, 0])
                entry[0], entry[1] = entry[0] + total, entry[1] + count
        data = torch.full((len(self.sites), max(steps, 0), len(PROFILE_FEATURES), len(names)), math.nan,
                          dtype=torch.float64)
        for (position, step, feature), (total, count) in totals.items():
            data[position, step, PROFILE_FEATURES.index(feature)] = total / count
        return RedundancyProfile(self.sites, data, names, self.quantiles, self.ratios, self.config,
                                 self.cost_models, self.skipped, self._rows, error_ratios=self.error_ratios)


@dataclass
class RedundancyProfile:
    """Per site, step and feature redundancy statistics (see :mod:`asymrnr_compile.ops.redundancy`).

    Attributes:
        sites: the profiled sites (with their schedule ``row``).
        data: float64 ``(sites, steps, features, stats)``; NaN where a feature was not measured.
        stat_names: names along the last axis (``mean``, ``p10``, ..., ``drop_mean@r``,
            ``drop_share@r``, then ``error@r`` for each of ``error_ratios``).
        quantiles, ratios, error_ratios: the statistics' layout (``error_ratios`` empty unless
            output errors were recorded).
        config: the split/similarity settings profiled.
        cost_models: per captured graph, its cost model and ``{site index: N_dst}``.
        skipped: sites not profiled and why.
        num_rows: schedule rows (blocks with reducible sites) of the model.
    """

    sites: list[ProfiledSite]
    data: torch.Tensor
    stat_names: tuple[str, ...]
    quantiles: tuple[float, ...]
    ratios: tuple[float, ...]
    config: AsymRnRConfig
    cost_models: list[tuple[GraphCostModel, dict[int, int]]] = field(repr=False, default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    num_rows: int = 0
    error_ratios: tuple[float, ...] = ()

    features: tuple[str, ...] = PROFILE_FEATURES

    @property
    def num_steps(self) -> int:
        return int(self.data.shape[1])

    def stat(self, name: str) -> torch.Tensor:
        """One statistic, ``(sites, steps, features)``."""
        if name not in self.stat_names:
            raise ValueError(f"stat name must be one of {self.stat_names}, got {name!r}")
        return self.data[..., self.stat_names.index(name)]

    def row_stat(self, name: str) -> torch.Tensor:
        """One statistic averaged over the sites of each schedule row, ``(rows, steps, features)``."""
        per_site = self.stat(name)
        out = torch.full((self.num_rows, self.num_steps, len(self.features)), math.nan, dtype=torch.float64)
        for row in range(self.num_rows):
            members = [i for i, site in enumerate(self.sites) if site.row == row]
            if members:
                out[row] = per_site[members].nanmean(dim=0) if len(members) > 1 else per_site[members[0]]
        return out

    def tiers(self, num_tiers: int = 10, feature_stat: str = "mean") -> dict[str, torch.Tensor]:
        """Integer redundancy tiers ``{h, q, k, v: (rows, steps)}`` for ``Schedule.from_tables``:
        the normalised distance binned into ``num_tiers`` equal bins of [0, 1] (tier ``num_tiers - 1``
        = distance near 0 = most redundant; distances >= 1 are tier 0)."""
        if isinstance(num_tiers, bool) or not isinstance(num_tiers, int) or num_tiers < 2:
            raise ValueError(f"num_tiers must be an int >= 2, got {num_tiers!r}")
        values = self.row_stat(feature_stat).nan_to_num(1.0).clamp(0.0, 1.0)
        tiers = ((1.0 - values) * num_tiers).floor().clamp(0, num_tiers - 1).to(torch.int64)
        return {f: tiers[..., i].contiguous() for i, f in enumerate(self.features)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per site its record and a ``redundancy`` key ``{feature: {stat: [per step]}}``."""
        sites = []
        for position, site in enumerate(self.sites):
            per_feature = {}
            for f_index, feature in enumerate(self.features):
                values = self.data[position, :, f_index]
                if torch.isnan(values).all():
                    continue
                per_feature[feature] = {name: [None if math.isnan(v) else round(v, 6)
                                               for v in values[:, s_index].tolist()]
                                        for s_index, name in enumerate(self.stat_names)}
            sites.append({**site.to_dict(), "redundancy": per_feature})
        return {
            "steps": self.num_steps,
            "rows": self.num_rows,
            "features": list(self.features),
            "stat_names": list(self.stat_names),
            "quantiles": list(self.quantiles),
            "ratios": list(self.ratios),
            "error_ratios": list(self.error_ratios),
            "normalisation": {"euclidean": "squared distance / (2 * total variance of the video tokens)",
                              "cosine": "1 - cos", "dot": "-d.s / mean squared norm"}[self.config.similarity],
            "similarity": self.config.similarity,
            "dst_stride": list(self.config.dst_stride),
            "seed": self.config.seed,
            "sites": sites,
            "skipped": self.skipped,
        }


def profile(model: torch.nn.Module, run_fn: Callable[[Callable[..., Any]], Any], *,
            config: AsymRnRConfig | None = None,
            quantiles: Sequence[float] = redundancy.DEFAULT_QUANTILES,
            ratios: Sequence[float] = redundancy.DEFAULT_PROFILE_RATIOS,
            min_video_tokens: int | None = None,
            on_call: Callable[[int], None] | None = None, fullgraph: bool = True,
            error_ratios: Sequence[float] = ()) -> RedundancyProfile:
    """Profile the redundancy of ``model`` over the sampling loop ``run_fn`` (paper Sec. 3.4).

    Args:
        model: the video transformer (an ``nn.Module``, called by ``run_fn``).
        run_fn: called once as ``run_fn(compiled_model)``; runs the normal sampling loop with the
            compiled model in place of ``model`` (its outputs are unchanged: nothing is reduced).
        config: split, similarity, seed, grid (ratios are ignored). Default ``AsymRnRConfig()``.
        quantiles, ratios, error_ratios: statistics to record (see :class:`ProfilingBackend`);
            ``error_ratios`` (default none) adds the measured output error of the q and kv
            reductions, for ``calibrate(..., damage="error")``.
        min_video_tokens: sites with fewer video tokens are not profiled; default the config's.
        on_call: called as ``on_call(step)`` after every model call (progress display).
        fullgraph: compile the model as one graph (default True, as the backend is meant to be
            used); False accepts graph breaks (sites are then profiled graph by graph; rows are
            numbered by block across graphs). A recompiled graph's sites are merged, by name,
            into those seen before, and steps continue across it.

    Returns:
        A :class:`RedundancyProfile`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(run_fn):
        raise TypeError(f"run_fn must be callable as run_fn(compiled_model), got {type(run_fn).__name__}")
    backend = ProfilingBackend(config, quantiles=quantiles, ratios=ratios, min_video_tokens=min_video_tokens,
                               error_ratios=error_ratios)
    backend.on_call = on_call
    compiled = torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=False)
    with torch.no_grad():
        run_fn(compiled)
    return backend.profile()
