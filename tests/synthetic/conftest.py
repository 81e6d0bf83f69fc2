"""Fixtures of the synthetic-task tests."""

from __future__ import annotations

import pytest
import torch

from asymrnr_lab.synthetic import SyntheticTaskConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The detectors run thousands of ops on tiny tensors: on a shared 2-core machine, OpenMP
    hand-offs make them ~40x slower with 2 threads than with 1. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def config() -> SyntheticTaskConfig:
    return SyntheticTaskConfig()


@pytest.fixture(scope="session")
def wide_config() -> SyntheticTaskConfig:
    """Every optional attribute on: four shapes, one or two objects, two speeds."""
    return SyntheticTaskConfig(
        shapes=("circle", "square", "triangle", "diamond"),
        counts=(1, 2),
        speeds=("slowly", "quickly"),
    )
