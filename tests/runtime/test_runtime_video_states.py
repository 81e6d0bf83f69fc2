"""VideoStates: one video state per calling thread, block instance and model instance.

A model instance is known by its first lifted parameter object, held weakly: live models keep
their own states, and a new parameter object takes over the state whose parameter is gone (the
same model with parameters re-created per call by offloading hooks), the others being dropped.
"""

from __future__ import annotations

import gc
import threading
import weakref

import torch

from asymrnr_compile.runtime.model_instances import weights_of
from asymrnr_compile.runtime.video_state import VideoStates


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


def test_a_new_parameter_object_takes_over_the_state_whose_parameter_is_gone():
    """Offloading hooks re-create a model's parameters for every call: the new object continues
    the state of the one that is gone (its steps and matchings), block instance by block
    instance, and of several gone, the most recent one; the others are dropped. Live models keep
    theirs."""
    states = VideoStates()
    live_weights, first_weights, second_weights = torch.zeros(1), torch.zeros(1), torch.zeros(1)
    live = states.get(0, live_weights)
    first = weakref.ref(states.get(0, first_weights))
    second, second_block_1 = states.get(0, second_weights), states.get(1, second_weights)
    second.matching_steps.append(7)  # its video has progressed
    del first_weights, second_weights
    gc.collect()
    assert first() is not None  # kept until a new parameter object shows up
    recreated = torch.zeros(1)  # the second model's parameter, re-created
    assert states.get(0, recreated) is second and second.matching_steps == [7]
    assert states.get(0, recreated) is second
    assert states.get(1, recreated) is second_block_1  # block instance by block instance
    assert states.get(0, live_weights) is live  # a live model keeps its own
    gc.collect()
    assert first() is None  # the older state whose parameter is gone was dropped


def test_weights_of_finds_the_parameter_argument():
    parameter = torch.nn.Parameter(torch.zeros(2))
    args = (torch.ones(3), parameter, 5)
    assert weights_of(args, 1) is parameter
    assert weights_of(args, None) is None
    assert weights_of(args, 2) is None  # not a tensor
    assert weights_of(args, 9) is None  # out of range
