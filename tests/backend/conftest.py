"""Shared fixtures of the backend tests: the tiny reference DiT, its inputs, a clean Dynamo."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from asymrnr_lab.models import build_reference_model, reference_inputs

TINY_PRESET = "tiny"  # 2 blocks, one joint site each: 8 text + 32 video tokens on a 2x4x4 grid


@pytest.fixture(scope="module")
def model():
    return build_reference_model(TINY_PRESET)


@pytest.fixture(scope="module")
def inputs():
    return reference_inputs(TINY_PRESET)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every test starts and ends with no compiled code (no recompile limits, no shared backends)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
