"""Seeds of the random destination splits and of the random token selection.

Every (site, feature) draws its own split, so that sites do not share one destination pattern;
with ``redraw_split`` every matching window draws a new one. The random token-dropping baseline
(``token_selection="random"``) seeds its selection the same way. The backend, the rewrite and the
profiler all call :func:`site_seed`, so a profile measures the split the backend would use.
"""

from __future__ import annotations

from asymrnr_compile.vocabulary import FEATURES, Feature

SITE_SEED_STRIDE = 7919
"""Seed distance between consecutive attention sites (a prime)."""

WINDOW_SEED_STRIDE = 104729
"""Seed distance between consecutive matching windows with ``redraw_split`` (a prime apart from
:data:`SITE_SEED_STRIDE`)."""


def site_seed(base_seed: int, site_index: int, feature: Feature, window: int = 0) -> int:
    """The seed of one (site, feature) split, or of its random selection.

    Args:
        base_seed: ``AsymRnRConfig.seed``.
        site_index: the site's position among the graph's attention calls.
        feature: ``"q"``, ``"kv"`` or ``"h"`` (offset 0, 1, 2).
        window: the matching window (0 without ``redraw_split``).
    """
    return base_seed + SITE_SEED_STRIDE * site_index + FEATURES.index(feature) + WINDOW_SEED_STRIDE * window
