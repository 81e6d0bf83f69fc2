"""Fixtures for the ops tests.

The ops tests run thousands of tiny tensor ops. On a loaded 2-core machine, intra-op thread
pools spin and wait for each other far longer than such ops take (a 1 ms op becomes 5-25 ms),
so these tests run single-threaded; the previous setting is restored afterwards.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_ops():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
