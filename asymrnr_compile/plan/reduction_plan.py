"""Reduction plans: what the rewrite pass inserts for one compiled variant.

A :class:`ReductionPlan` says, per attention site and feature, how many video tokens are kept and
whether the matching is computed in the graph (first step of a cache window) or read from the
matching cache (graph inputs). Plans are hashable: the runtime keeps one compiled variant per
distinct plan. Sizes are Python ints, so nothing in a rewritten graph is data-dependent.

Cached tensors travel between variants through :class:`CacheSlot` names. A variant that computes
a matching takes the destination/source split as inputs and returns the matching and the
reduction indices (keep, restore) as extra outputs. A variant that reuses a matching takes only
the reduction indices as inputs, so its graph is gathers around attention and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.vocabulary import FEATURES, Feature

if TYPE_CHECKING:
    from asymrnr_compile.config import AsymRnRConfig

MatchingField = Literal["src_order", "nearest", "distance"]
SplitField = Literal["dst", "src"]
IndexField = Literal["keep", "restore"]

MATCHING_FIELDS: tuple[MatchingField, ...] = ("src_order", "nearest", "distance")
SPLIT_FIELDS: tuple[SplitField, ...] = ("dst", "src")
INDEX_FIELDS: tuple[IndexField, ...] = ("keep", "restore")


@dataclass(frozen=True)
class FeaturePlan:
    """Reduction of one feature at one site.

    Attributes:
        num_tokens: N, the video tokens on the reduced axis.
        num_keep: K, video tokens kept (``N_dst <= K < N``).
        compute_matching: compute the matching in the graph (and output it), or take it from
            the cache (graph inputs).
    """

    num_tokens: int
    num_keep: int
    compute_matching: bool

    @property
    def ratio(self) -> float:
        """Fraction of video tokens removed."""
        return 1.0 - self.num_keep / self.num_tokens


@dataclass(frozen=True)
class SitePlan:
    """The features reduced at one attention site; None means not reduced."""

    site_index: int
    q: FeaturePlan | None = None
    kv: FeaturePlan | None = None
    h: FeaturePlan | None = None

    def feature(self, name: Feature) -> FeaturePlan | None:
        return getattr(self, name)

    def items(self) -> list[tuple[Feature, FeaturePlan]]:
        """The (feature, plan) pairs that are on, in the fixed order q, kv, h."""
        return [(name, plan) for name in FEATURES if (plan := getattr(self, name)) is not None]


@dataclass(frozen=True)
class ReductionPlan:
    """Everything that determines the graph of one compiled variant.

    Attributes:
        sites: one entry per site that reduces something, in graph order.
        similarity: matching similarity (``"euclidean"``, ``"cosine"``, ``"dot"``).
        reduce_mode: ``"replace"`` or ``"mean"``.
        match_chunk_bytes: budget of one distance-matrix block inside the ``"aten"`` matcher.
        match_kernel: the matching kernel (:data:`asymrnr_compile.ops.MATCH_KERNELS`).
        match_dims: dimensions of the random projection the matching runs on (seeded by
            ``seed``), or None: the exact matching.
        token_selection: ``"matched"`` (similarity matching) or ``"random"`` (the seeded
            token-dropping baseline, :func:`asymrnr_compile.ops.random_matching`).
        seed: base seed of the random selection (unused when ``"matched"``).
        proportional_attention: add the log-multiplicity bias of the kept keys to kv-reduced
            attention (:func:`asymrnr_compile.ops.proportional_attention_mask`).
        match_on: ``"features"`` (q on the queries, kv on the values, per head) or
            ``"hidden_states"`` (both on the site's input hidden states, shared by the heads,
            where :meth:`~asymrnr_compile.analysis.site.AttentionSite.hidden_matching_problem`
            finds none; elsewhere on the features).
    """

    sites: tuple[SitePlan, ...]
    similarity: str
    reduce_mode: str
    match_chunk_bytes: int
    token_selection: str = "matched"
    seed: int = 0
    proportional_attention: bool = False
    match_on: str = "features"
    match_kernel: str = "auto"
    match_dims: int | None = None

    @classmethod
    def for_config(cls, config: AsymRnRConfig, sites: tuple[SitePlan, ...] = ()) -> ReductionPlan:
        """The plan of ``sites`` with every other field taken from ``config`` (no sites: the
        unreduced graph). The only way the runtime builds plans, so no field is forgotten."""
        return cls(sites, config.similarity, config.reduce_mode, config.match_chunk_bytes, config.token_selection,
                   config.seed, config.proportional_attention, config.match_on, config.match_kernel,
                   config.match_dims)

    @property
    def is_identity(self) -> bool:
        return not self.sites

    def selection_seed(self, site_index: int, feature: Feature) -> int:
        """Seed of the random selection at one (site, feature): distinct per site and feature."""
        return site_seed(self.seed, site_index, feature)

    def feature_plan(self, site_index: int, feature: Feature) -> FeaturePlan:
        """The plan of one (site, feature); KeyError if it is not reduced in this plan."""
        for site in self.sites:
            if site.site_index == site_index and (plan := site.feature(feature)) is not None:
                return plan
        raise KeyError(f"site {site_index} does not reduce {feature!r} in this plan")


@dataclass(frozen=True)
class CacheSlot:
    """Name of one tensor that enters or leaves a rewritten graph besides the model's own.

    ``field`` is a :data:`SPLIT_FIELDS` entry (input of a computing variant), a
    :data:`MATCHING_FIELDS` entry (output of a computing variant) or an :data:`INDEX_FIELDS`
    entry (output of a computing variant, input of a reusing one).
    """

    site_index: int
    feature: Feature
    field: str

    @property
    def placeholder_name(self) -> str:
        return f"asymrnr_site{self.site_index}_{self.feature}_{self.field}"
