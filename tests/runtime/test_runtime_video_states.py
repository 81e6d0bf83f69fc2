"""VideoStates: one video state per calling thread, block instance and model instance.

A model instance is known by its first lifted parameter, held weakly, so that a model deleted and
another loaded in its place (whose parameter Python may give the freed one's ``id``) starts
clean, and the states of deleted models do not outlive them for long.
"""

from __future__ import annotations

import gc
import threading
import weakref

import torch

from asymrnr_compile.runtime.runtime import VideoStates, weights_of


def test_one_state_per_block_instance_and_model_instance():
    states = VideoStates()
    first, second = torch.zeros(1), torch.zeros(1)
    state = states.get(0, first)
    assert states.get(0, first) is state
    assert states.get(0, second) is not state  # another model of the same class
    assert states.get(1, first) is not state  # another block instance
    assert states.get(0) is states.get(0, None) is not state  # unknown model: one state for all
    assert len(states.all()) == 4


def test_each_thread_has_its_own_states():
    states = VideoStates()
    weights = torch.zeros(1)
    mine = states.get(0, weights)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(states.get(0, weights)))
    thread.start()
    thread.join()
    assert theirs[0] is not mine


def test_a_deleted_models_state_is_neither_reused_nor_kept():
    """The first model's weights are freed; a new model's state is made afresh and the old one
    dropped, whether or not the new parameter got the freed one's ``id`` (CPython often reuses
    it: then only the weak reference tells the two apart)."""
    states = VideoStates()
    weights = torch.zeros(1)
    old_state = weakref.ref(states.get(0, weights))
    old_state().matching_steps.append(7)  # the first model's video has progressed
    del weights
    gc.collect()
    new_weights = torch.zeros(1)
    new_state = states.get(0, new_weights)
    assert new_state.matching_steps == []
    gc.collect()
    assert old_state() is None  # dropped, not handed to the new model
    assert states.all() == [new_state]


def test_weights_of_finds_the_parameter_argument():
    parameter = torch.nn.Parameter(torch.zeros(2))
    args = (torch.ones(3), parameter, 5)
    assert weights_of(args, 1) is parameter
    assert weights_of(args, None) is None
    assert weights_of(args, 2) is None  # not a tensor
    assert weights_of(args, 9) is None  # out of range
