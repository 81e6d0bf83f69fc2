"""Graph analyses: attention sites and their token layout. Analyses never mutate the graph."""

from __future__ import annotations

from asymrnr_compile.analysis.describe import describe
from asymrnr_compile.analysis.find_sites import find_attention_sites
from asymrnr_compile.analysis.site import ALL_FEATURES, AttentionSite, Feature

__all__ = ["ALL_FEATURES", "AttentionSite", "Feature", "describe", "find_attention_sites"]
