"""The step signal (runtime/steps.py): timestep values -> (step, call in step, new video).

Covers :class:`StepTracker` on its own (both sampling directions, split-CFG repeats, new videos,
no timestep, reset), :func:`read_timestep`, and :func:`find_timestep_input` / :class:`StepSignal`
on hand-built and Dynamo-captured graphs.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.fx
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from asymrnr_compile.runtime.steps import (
    MAX_CALLS_PER_STEP,
    StepEvent,
    StepSignal,
    StepTracker,
    find_timestep_input,
    read_timestep,
)


def _events(tracker: StepTracker, timesteps) -> list[tuple[int, int, bool]]:
    return [(e.step, e.call_index, e.new_video) for e in map(tracker.observe, timesteps)]


# ---------------------------------------------------------------------- StepTracker


def test_first_call_is_step_0_of_a_new_video():
    event = StepTracker().observe(981.0)
    assert event == StepEvent(step=0, call_index=0, new_video=True)


def test_timesteps_counting_down_are_successive_steps():
    tracker = StepTracker()
    assert _events(tracker, [1000.0, 750.0, 500.0, 250.0, 0.0]) == [
        (0, 0, True), (1, 0, False), (2, 0, False), (3, 0, False), (4, 0, False)]
    assert tracker.direction == -1
    assert tracker.steps_seen == 5


def test_timesteps_counting_up_are_successive_steps():
    # Mochi's pipeline counts up (its scheduler inverts the sigmas)
    tracker = StepTracker()
    assert _events(tracker, [0.0, 250.0, 500.0, 1000.0]) == [
        (0, 0, True), (1, 0, False), (2, 0, False), (3, 0, False)]
    assert tracker.direction == 1


def test_the_same_timestep_again_is_another_call_of_the_same_step():
    # split-CFG pipelines: cond and uncond are two calls with one timestep
    tracker = StepTracker()
    assert _events(tracker, [1000.0, 1000.0, 800.0, 800.0, 600.0, 600.0]) == [
        (0, 0, True), (0, 1, False), (1, 0, False), (1, 1, False), (2, 0, False), (2, 1, False)]
    assert tracker.steps_seen == 3  # steps, not calls (6 calls)


def test_a_timestep_repeated_more_often_than_a_step_has_calls_starts_new_steps():
    # a benchmark at a fixed timestep, or a single-step model: the calls per step stay bounded
    tracker = StepTracker()
    events = _events(tracker, [500.0] * 10)
    assert events[:MAX_CALLS_PER_STEP] == [(0, k, k == 0) for k in range(MAX_CALLS_PER_STEP)]
    assert max(call for _, call, _ in events) == MAX_CALLS_PER_STEP - 1
    assert [step for step, _, _ in events] == [k // MAX_CALLS_PER_STEP for k in range(10)]
    # once a step has shown its calls (split CFG: 2), a third call at the same timestep is a new step
    tracker = StepTracker()
    assert _events(tracker, [1000.0, 1000.0, 800.0, 800.0, 800.0]) == [
        (0, 0, True), (0, 1, False), (1, 0, False), (1, 1, False), (2, 0, False)]


def test_a_first_step_with_an_extra_call_is_reported():
    tracker = StepTracker()
    _events(tracker, [1000.0, 1000.0, 800.0])
    assert tracker.extra_first_step_calls == 0  # not known before the second step completes
    _events(tracker, [600.0])
    assert tracker.first_step_calls == [2, 1] and tracker.extra_first_step_calls == 1


def test_a_timestep_moving_against_the_direction_starts_a_new_video():
    tracker = StepTracker()
    events = _events(tracker, [1000.0, 500.0, 0.0, 1000.0, 500.0])
    assert events == [(0, 0, True), (1, 0, False), (2, 0, False), (0, 0, True), (1, 0, False)]
    # counting up: a drop starts a new video, the next rise continues it
    tracker = StepTracker()
    assert _events(tracker, [0.0, 10.0, 20.0, 5.0, 15.0]) == [
        (0, 0, True), (1, 0, False), (2, 0, False), (0, 0, True), (1, 0, False)]


def test_the_second_video_may_run_in_the_other_direction():
    # the direction is learnt per video from its first two distinct values
    tracker = StepTracker()
    events = _events(tracker, [1000.0, 500.0, 600.0, 700.0, 800.0])
    assert events == [(0, 0, True), (1, 0, False), (0, 0, True), (1, 0, False), (2, 0, False)]
    assert tracker.direction == 1


def test_without_a_timestep_every_call_is_a_step():
    tracker = StepTracker()
    assert _events(tracker, [None, None, None]) == [(0, 0, True), (1, 0, False), (2, 0, False)]
    assert tracker.steps_seen == 3


def test_reset_starts_over():
    tracker = StepTracker()
    _events(tracker, [1000.0, 1000.0, 500.0])
    tracker.reset()
    assert (tracker.step, tracker.call_index, tracker.last_timestep, tracker.direction, tracker.steps_seen) == (
        -1, 0, None, 0, 0)
    # after the reset, 500 -> 1000 (a rise) is not measured against the old downward direction
    assert _events(tracker, [500.0, 1000.0]) == [(0, 0, True), (1, 0, False)]
    tracker.reset()
    assert tracker.observe(None) == StepEvent(0, 0, True)


def test_steps_seen_counts_steps_over_videos_until_reset():
    tracker = StepTracker()
    _events(tracker, [1000.0, 1000.0, 500.0, 500.0, 1000.0, 1000.0])  # 2 steps, then a new video
    assert tracker.steps_seen == 3
    tracker.reset()
    assert tracker.steps_seen == 0


@st.composite
def _monotone_calls(draw):
    values = draw(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30, unique=True))
    descending = draw(st.booleans())
    values = sorted(values, reverse=descending)
    repeats = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=len(values), max_size=len(values)))
    return values, repeats


@given(_monotone_calls())
def test_any_strictly_monotone_sequence_with_repeats_counts_steps_and_calls(calls):
    values, repeats = calls
    repeats = [repeats[0]] * len(values)  # a pipeline makes the same number of calls every step
    tracker = StepTracker()
    timesteps = [float(v) for v, k in zip(values, repeats) for _ in range(k)]
    expected = [(step, call, step == 0 and call == 0) for step, k in enumerate(repeats) for call in range(k)]
    assert _events(tracker, timesteps) == expected
    assert tracker.steps_seen == len(values)


# ---------------------------------------------------------------------- read_timestep


def test_read_timestep_of_tensors_numbers_and_others():
    assert read_timestep(torch.tensor(999.0)) == 999.0
    assert read_timestep(torch.tensor([750.0, 1.0, 2.0])) == 750.0  # the maximum
    # per-token timesteps (image-to-video: conditioning tokens at 0) read as the maximum
    assert read_timestep(torch.tensor([[0, 4], [0, 4]])) == 4.0
    assert read_timestep(torch.tensor([[3, 4], [5, 6]])) == 6.0
    assert read_timestep(torch.tensor([12], dtype=torch.int64)) == 12.0
    assert read_timestep(torch.tensor([0.5], dtype=torch.bfloat16)) == 0.5
    assert read_timestep(7) == 7.0 and isinstance(read_timestep(7), float)
    assert read_timestep(2.25) == 2.25
    assert read_timestep(torch.empty(0)) is None
    assert read_timestep(torch.empty(2, 0)) is None
    assert read_timestep("1000") is None
    assert read_timestep(None) is None
    assert read_timestep([1000.0]) is None


# ---------------------------------------------------------------------- graphs


def _graph(*names: str, values=None) -> torch.fx.GraphModule:
    """A graph whose inputs are placeholders named ``names``, returning the first input."""
    graph = torch.fx.Graph()
    nodes = [graph.placeholder(name) for name in names]
    for node, value in zip(nodes, values or [torch.zeros(1)] * len(nodes)):
        node.meta["example_value"] = value
    graph.output(nodes[0])
    return torch.fx.GraphModule(torch.nn.Module(), graph)


def test_find_timestep_input_by_placeholder_name():
    assert find_timestep_input(_graph("l_hidden_states_", "l_encoder_hidden_states_", "l_kwargs_timestep_")) == 2
    assert find_timestep_input(_graph("l_timestep_", "l_hidden_states_")) == 0
    assert find_timestep_input(_graph("l_hidden_states_", "l_t_")) is None
    # the first match wins
    assert find_timestep_input(_graph("l_x_", "l_timestep_", "l_timesteps_")) == 1


def test_find_timestep_input_skips_non_tensor_example_values():
    # a Python scalar input (e.g. a SymFloat/int) is not the tensor timestep; a missing value is accepted
    gm = _graph("l_x_", "l_timestep_scale_", "l_timestep_", values=[torch.zeros(1), 3, None])
    assert find_timestep_input(gm) == 2


class _TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden_states) * timestep[:, None]


class _TimestepEmbedderFirst(nn.Module):
    """Uses a module named ``timestep_embedder`` before it touches the timestep input."""

    def __init__(self) -> None:
        super().__init__()
        self.timestep_embedder = nn.Linear(1, 4)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.timestep_embedder(hidden_states[:, :1]) * timestep[:, None]


def _dynamo_graph(model: nn.Module, *args: torch.Tensor) -> tuple[torch.fx.GraphModule, list]:
    recorded: list = []

    def recorder(gm: torch.fx.GraphModule, example_inputs):
        recorded.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(model, backend=recorder, dynamic=False)(*args)
    finally:
        torch._dynamo.reset()
    assert len(recorded) == 1
    return recorded[0]


@pytest.fixture(scope="module")
def tiny_graph():
    return _dynamo_graph(_TinyModel(), torch.randn(2, 4), torch.tensor([1000.0, 1000.0]))


def test_find_timestep_input_in_a_dynamo_graph(tiny_graph):
    gm, example_inputs = tiny_graph
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    position = find_timestep_input(gm)
    assert position is not None and names[position] == "l_timestep_"
    assert torch.equal(example_inputs[position], torch.tensor([1000.0, 1000.0]))


def test_find_timestep_input_is_not_fooled_by_a_timestep_module_parameter():
    gm, example_inputs = _dynamo_graph(_TimestepEmbedderFirst(), torch.randn(2, 4), torch.tensor([500.0, 500.0]))
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    assert "l_self_modules_timestep_embedder_parameters_weight_" in names  # lifted as an input
    position = find_timestep_input(gm)
    assert position is not None and names[position] == "l_timestep_"


def test_step_signal_reads_the_timestep_argument(tiny_graph):
    gm, example_inputs = tiny_graph
    signal = StepSignal(gm)
    assert signal.has_timestep
    position = signal.timestep_position
    events = []
    for value in (1000.0, 1000.0, 800.0, 600.0):
        args = list(example_inputs)
        args[position] = torch.tensor([value, value])
        events.append(signal.observe(args))
    assert [(e.step, e.call_index, e.new_video) for e in events] == [
        (0, 0, True), (0, 1, False), (1, 0, False), (2, 0, False)]


def test_step_signal_on_a_hand_built_graph_reads_the_right_position():
    signal = StepSignal(_graph("l_hidden_states_", "l_kwargs_timestep_", "l_encoder_hidden_states_"))
    assert signal.timestep_position == 1
    hidden, text = torch.zeros(1), torch.full((1,), 5.0)  # the other inputs would move the other way
    assert signal.observe([hidden, torch.tensor(900.0), text]) == StepEvent(0, 0, True)
    assert signal.observe([hidden + 5, torch.tensor(900.0), text - 5]) == StepEvent(0, 1, False)
    assert signal.observe([hidden + 10, torch.tensor(700.0), text - 10]) == StepEvent(1, 0, False)
    assert signal.observe([hidden + 20, torch.tensor(700.0), text - 20]) == StepEvent(1, 1, False)


def test_step_signal_without_timestep_counts_calls():
    signal = StepSignal(_graph("l_hidden_states_", "l_encoder_hidden_states_"))
    assert not signal.has_timestep and signal.timestep_position is None
    args = [torch.zeros(1), torch.zeros(1)]
    assert [signal.observe(args).step for _ in range(3)] == [0, 1, 2]


def test_step_signal_shares_the_tracker_only_with_a_timestep_input():
    shared = StepTracker()
    with_timestep = StepSignal(_graph("l_hidden_states_", "l_timestep_"), tracker=shared)
    assert with_timestep.tracker is shared
    without = StepSignal(_graph("l_hidden_states_"), tracker=shared)
    assert without.tracker is not shared and isinstance(without.tracker, StepTracker)
    assert StepSignal(_graph("l_timestep_")).tracker is not shared  # default: a new one

    # a recompiled graph sharing the tracker continues the step count
    again = StepSignal(_graph("l_timestep_", "l_hidden_states_"), tracker=shared)
    assert with_timestep.observe([torch.zeros(1), torch.tensor(1000.0)]) == StepEvent(0, 0, True)
    assert again.observe([torch.tensor(900.0), torch.zeros(1)]) == StepEvent(1, 0, False)
    # the graph without a timestep kept its own tracker: its first call is step 0
    assert without.observe([torch.zeros(1)]) == StepEvent(0, 0, True)
    assert shared.step == 1
