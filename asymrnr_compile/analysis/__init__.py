"""Graph analyses: attention sites, their token layout, and the FLOP cost model.

Analyses never mutate the graph. :func:`find_attention_sites` gives one
:class:`AttentionSite` record per ``scaled_dot_product_attention`` call (``sdpa.py`` says which
targets those are); ``token_layout.py`` is the layout algebra, ``propagate_layout.py`` the per-op
layout rules, ``projection_paths.py`` the search for (and proof of) the projections between a
block's hidden states and its attention, ``cost.py`` the cost model, ``describe.py`` a readable
summary.
"""

from __future__ import annotations

from asymrnr_compile.analysis.describe import describe
from asymrnr_compile.analysis.find_sites import find_attention_sites
from asymrnr_compile.analysis.site import AttentionSite

__all__ = ["AttentionSite", "describe", "find_attention_sites"]
