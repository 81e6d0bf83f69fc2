"""Shared test configuration.

Hypothesis profiles:

- ``ci`` (default): ``derandomize=True`` and a fixed example budget, so every CI run draws the
  same examples and a failure reproduces exactly.
- ``thorough``: random, ten times the examples; for local runs
  (``HYPOTHESIS_PROFILE=thorough pytest``).

``--asymrnr-force-fallback`` (off by default): every rewrite fails, so every asymrnr graph falls
back to plain Inductor (``AsymRnRRuntime._fall_back``) and runs unreduced. An autouse session fixture
monkeypatches ``asymrnr_compile.runtime.variants.reduce_attention_tokens`` to raise
``RuntimeError("forced fallback (--asymrnr-force-fallback)")`` in every test
(``reduction_checks.force_fallback``), and sets ``ASYMRNR_FORCE_FALLBACK=1`` so that the
processes a test spawns do the same where they check it (the context-parallel ranks,
``tests/parallel/cp_harness.py``). The fallback is silent (the model still runs), so a
test of a reducing path that passes with this option does not check that it reduced: it should
call ``reduction_checks.assert_reduced`` (or check the report's ``cache_misses`` and
``fallback_reason``). Tests of unreduced paths (ratio 0, fallbacks, errors, analysis) pass either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
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


FORCE_FALLBACK_OPTION = "--asymrnr-force-fallback"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        FORCE_FALLBACK_OPTION, action="store_true", default=False,
        help="make every asymrnr rewrite fail, so that every graph falls back to plain Inductor; "
             "tests of reducing paths must then fail (see tests/conftest.py)")


@pytest.fixture(autouse=True, scope="session")
def _asymrnr_force_fallback(request: pytest.FixtureRequest) -> Iterator[None]:
    """Session-scoped, so that it is in place before module-scoped fixtures compile anything."""
    if not request.config.getoption(FORCE_FALLBACK_OPTION):
        yield
        return
    from reduction_checks import FORCE_FALLBACK_ENV, force_fallback

    with pytest.MonkeyPatch.context() as monkeypatch:
        force_fallback(monkeypatch.setattr)
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "1")
        yield


@pytest.fixture(autouse=True)
def _grad_mode_is_left_on() -> Iterator[None]:
    """Grad mode is global per thread: a test that leaves it off (a ``no_grad`` held across a
    generator's yields, exited out of order) would break every later test that trains or checks
    ``requires_grad``. Fail the test that does it, and turn grad mode back on."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd disabled (torch.is_grad_enabled() is False)")
