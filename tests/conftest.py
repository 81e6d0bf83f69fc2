"""Shared test configuration.

Hypothesis profiles:

- ``ci`` (default): ``derandomize=True`` and a fixed example budget, so every CI run draws the
  same examples and a failure reproduces exactly.
- ``thorough``: random, ten times the examples; for local runs
  (``HYPOTHESIS_PROFILE=thorough pytest``).
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# Without a GPU the fused Triton matching kernel is tested under Triton's CPU interpreter, which
# must be chosen before Triton is first imported (its own library functions are decorated then).
# With a GPU the tests run the compiled kernel on it, and Inductor's Triton code is not touched.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CI_EXAMPLES = 200

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=CI_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=10 * CI_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.manual_seed(0)
