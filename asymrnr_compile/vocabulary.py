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

from typing import Literal

Feature = Literal["q", "kv", "h"]

FEATURES: tuple[Feature, ...] = ("q", "kv", "h")
"""Every feature, in the order reports, plans and schedules list them."""

PLANNING_ORDER: tuple[Feature, ...] = ("h", "q", "kv")
"""The order in which a planner decides the features of one site: ``h`` first, because reducing
``h`` there switches ``q`` and ``kv`` off."""


DEFAULT_TIMESTEP_ARGS: tuple[str, ...] = ("timestep", "timesteps")
"""The model arguments the denoising step is read from, unless ``AsymRnRConfig.timestep_arg``
names another (the diffusers transformers call it ``timestep``)."""
