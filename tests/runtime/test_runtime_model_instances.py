"""PerModelInstance: one value per (group, model instance), the model known by a parameter
object held weakly; a re-created parameter object takes over the value whose object is gone.
The one rule behind VideoStates (outside a video scope) and VideoScope's states."""

from __future__ import annotations

import gc
import itertools

import pytest
import torch

from asymrnr_compile.runtime.model_instances import PerModelInstance


def _maker():
    made = itertools.count()
    return lambda: next(made)


def test_two_live_parameter_objects_keep_two_values():
    values, make = PerModelInstance(), _maker()
    first, second = torch.zeros(1), torch.zeros(1)
    assert values.get("block 0", first, make) == 0
    assert values.get("block 0", second, make) == 1
    assert values.get("block 0", first, make) == 0 and values.get("block 0", second, make) == 1
    assert values.get("block 1", first, make) == 2  # another group
    assert values.get("block 0", None, make) == values.get("block 0", None) == 3  # unknown model: one value


def test_a_recreated_parameter_object_takes_over_the_value_whose_object_is_gone():
    values, make = PerModelInstance(), _maker()
    weights = torch.zeros(1)
    state = values.get("block 0", weights, make)
    other_group = values.get("block 1", weights, make)
    del weights
    gc.collect()
    recreated = torch.zeros(1)  # offloading hooks made a new parameter object
    assert values.get("block 0", recreated, make) == state
    assert values.get("block 1", recreated, make) == other_group  # group by group
    assert len(values) == 2  # the gone entries were replaced, not kept


def test_of_several_gone_the_most_recent_is_taken_over_and_the_others_dropped():
    values, make = PerModelInstance(), _maker()
    older, newer = torch.zeros(1), torch.zeros(1)
    values.get("g", older, make)
    newest_value = values.get("g", newer, make)
    del older, newer
    gc.collect()
    assert values.get("g", torch.zeros(1), make) == newest_value
    assert len(values) == 1


def test_without_make_a_missing_value_raises_key_error():
    with pytest.raises(KeyError):
        PerModelInstance().get("g", torch.zeros(1))
