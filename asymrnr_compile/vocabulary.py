"""Names every layer of the package shares: the features AsymRnR reduces and the timestep
arguments a model's step is read from.

The three features AsymRnR can reduce at an attention site (paper Sec. 3.2):

- ``"q"``: the queries (after QK-norm and RoPE); attention runs for the kept queries and the
  output is restored to every video token.
- ``"kv"``: keys and values together (matched on V, the same indices applied to K); nothing is
  restored.
- ``"h"``: the attention block's input hidden states, before the q/k/v projections; the output
  projection's result is restored. Where ``h`` is reduced at a site and step, ``q`` and ``kv``
  are not.

This module depends on nothing else in the package: the analysis uses it to say which features a
site can reduce, the config to validate settings, the planner, the schedules and the rewrite to
say which ones they do, the runtime and the regional hooks to find the timestep.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Feature = Literal["q", "kv", "h"]

FEATURES: tuple[Feature, ...] = ("q", "kv", "h")
"""Every feature, in the order reports, plans and schedules list them."""

PLANNING_ORDER: tuple[Feature, ...] = ("h", "q", "kv")
"""The order in which a planner decides the features of one site: ``h`` first, because reducing
``h`` there switches ``q`` and ``kv`` off."""

EXCLUSIVE_FEATURE: Feature = "h"
"""The conflict rule (the one definition; paper Sec. 3.2): where ``h`` is reduced at a site and
step, the attention already runs on the kept hidden states, so ``q`` and ``kv`` are not reduced
there. Schedules reject or resolve tables that break it; planners, the schedule driver and
calibrate skip a feature that :func:`conflicts` with one already chosen."""

EXCLUDED_BY_EXCLUSIVE: tuple[Feature, ...] = ("q", "kv")
"""The features :data:`EXCLUSIVE_FEATURE` switches off where it is reduced."""


def conflicts(feature: Feature, chosen: Iterable[str]) -> bool:
    """Whether reducing ``feature`` at a site and step breaks the conflict rule given the
    features ``chosen`` there already (``h`` with ``q`` or ``kv``, either way round)."""
    chosen = set(chosen)
    if feature == EXCLUSIVE_FEATURE:
        return bool(chosen & set(EXCLUDED_BY_EXCLUSIVE))
    return feature in EXCLUDED_BY_EXCLUSIVE and EXCLUSIVE_FEATURE in chosen


DEFAULT_TIMESTEP_ARGS: tuple[str, ...] = ("timestep", "timesteps")
"""The model arguments the denoising step is read from, unless ``AsymRnRConfig.timestep_arg``
names another (the diffusers transformers call it ``timestep``)."""
