"""The step signal: which denoising step, and which call within it, a call of the model is.

The timestep is one of the model's arguments (``timestep`` or ``timesteps`` by default, or the
name given as ``AsymRnRConfig.timestep_arg``), found among the graph's inputs by the name Dynamo
gives an argument (``L_timestep_``, or ``L_kwargs_timestep_`` when passed through ``**kwargs``);
parameters and buffers are never taken for it, whatever their names. A new value is a new step;
the same value again is another call of the same step (pipelines that run cond and uncond as two
calls); a value that moves against the video's direction starts a new video. A timestep with more
than one value (image-to-video pipelines pass one per token, conditioning tokens at 0) is read
as its maximum. Without a timestep input every call is a step. The backend's runtime and the
profiler read steps the same way, through :class:`StepSignal`.

The number of calls per step is learned from the first step of a video; a timestep repeated
more often than that (a benchmark at a fixed timestep, a single-step model) starts a new step, so
the matching cache stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from asymrnr_compile.vocabulary import DEFAULT_TIMESTEP_ARGS

MAX_CALLS_PER_STEP = 4
"""Calls with one timestep value counted as one step before a video's first step has shown how
many calls a step has (split CFG makes 2; a warm-up call at the first timestep one more)."""


@dataclass(frozen=True)
class StepEvent:
    """Where a call falls in the sampling loop.

    Attributes:
        step: denoising step index within the current video (0-based).
        call_index: which call within the step (0 = first; pipelines that run cond and uncond
            as two calls with the same timestep make a 1).
        new_video: this call starts a new video (first call, or the timestep jumped back up).
    """

    step: int
    call_index: int
    new_video: bool


class StepTracker:
    """Turns successive timestep values into steps.

    A change of timestep value starts a new step; the same value again is another call of the
    same step. Samplers move the timestep monotonically, but not always the same way: most count
    down (1000 -> 0), Mochi's pipeline counts up (0 -> 1000, its scheduler inverts the sigmas).
    The direction of a video is taken from its first two distinct values; a value that moves
    against it starts a new video. Without a timestep (``None``) every call is a step.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the current video: the next call is step 0 of a new one."""
        self.step = -1
        self.call_index = 0
        self.last_timestep: float | None = None
        self.direction = 0  # +1 counting up, -1 counting down, 0 not known yet
        self.steps_seen = 0
        # Calls of each completed step of the current video, for its first two steps only.
        self.first_step_calls: list[int] = []

    @property
    def calls_per_step(self) -> int:
        """The most calls one step of the current video may have: those of its last completed
        step among the first two, or :data:`MAX_CALLS_PER_STEP` before one has completed."""
        return self.first_step_calls[-1] if self.first_step_calls else MAX_CALLS_PER_STEP

    def observe(self, timestep: float | None) -> StepEvent:
        """The step event of a call with this timestep value (None: no timestep input)."""
        new_video = self.step < 0
        if timestep is None:
            self.step += 1
            self.call_index = 0
        elif self.last_timestep is None:
            new_video = True
            self.step, self.call_index, self.direction = 0, 0, 0
            self.first_step_calls = []
        elif timestep == self.last_timestep:
            if self.call_index + 1 < self.calls_per_step:
                self.call_index += 1
            else:  # repeated more often than a step has calls: a new step at the same timestep
                self._next_step()
        else:
            direction = 1 if timestep > self.last_timestep else -1
            if self.direction not in (0, direction):
                new_video = True
                self.step, self.call_index, self.direction = 0, 0, 0
                self.first_step_calls = []
            else:
                self.direction = direction
                self._next_step()
        self.last_timestep = timestep
        if self.call_index == 0:
            self.steps_seen += 1
        return StepEvent(self.step, self.call_index, new_video)

    def _next_step(self) -> None:
        if len(self.first_step_calls) < 2:
            self.first_step_calls.append(self.call_index + 1)
        self.step += 1
        self.call_index = 0

    @property
    def extra_first_step_calls(self) -> int:
        """How many more calls the video's first step had than its second (0 when they agree or
        are not known yet): the first step also counted calls that were not part of the video,
        such as a warm-up call at the first timestep."""
        if len(self.first_step_calls) < 2:
            return 0
        return max(0, self.first_step_calls[0] - self.first_step_calls[1])


def timestep_placeholder_names(arg_names: Sequence[str]) -> tuple[str, ...]:
    """The placeholder names Dynamo gives these arguments: ``L_<name>_`` when passed by name or
    position, ``L_kwargs_<name>_`` when the model takes them through ``**kwargs``."""
    return tuple(f"{prefix}{name}_" for name in arg_names for prefix in ("L_", "L_kwargs_"))


def find_timestep_input(gm: torch.fx.GraphModule, arg_names: Sequence[str] = DEFAULT_TIMESTEP_ARGS) -> int | None:
    """Position of the timestep among the graph's inputs, or None.

    The timestep is the tensor input for one of the model's arguments ``arg_names`` (the first
    name that is present wins). Lifted parameters and buffers are never taken for it: their
    placeholders are named after the module path (``L_self_modules_timestep_embedder_...``).
    """
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    position_of = {str(node.target).lower(): position for position, node in enumerate(placeholders)}
    for wanted in timestep_placeholder_names(arg_names):
        position = position_of.get(wanted.lower())
        if position is None:
            continue
        value = placeholders[position].meta.get("example_value")
        if value is None or isinstance(value, torch.Tensor):
            return position
    return None


def constant_timestep_argument(arg_names: Sequence[str] = DEFAULT_TIMESTEP_ARGS) -> str | None:
    """The timestep argument Dynamo is tracing as a Python number, or None.

    Called inside a backend call: a Python-number argument is baked into the graph as a constant
    and guarded on, so every new value recompiles the model (until Dynamo's recompile limit,
    after which it runs eagerly). Read from the guards of the frame being compiled.
    """
    from torch._guards import TracingContext

    context = TracingContext.try_get()
    if context is None or context.guards_context is None:
        return None
    sources = {f"L[{name!r}]": name for name in arg_names} | {f"L['kwargs'][{name!r}]": name for name in arg_names}
    for guard in context.guards_context.dynamo_guards:
        name = sources.get(guard.name)
        if name is not None and guard.create_fn_name() in ("CONSTANT_MATCH", "EQUALS_MATCH"):
            return name
    return None


def read_timestep(value: Any) -> float | None:
    """The timestep of a call as a Python float, or None if it is not one. A tensor with several
    values (one per batch element, or one per token in image-to-video pipelines, where the
    conditioning tokens stay at 0) is read as its maximum: the value that moves with the step."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().max().item()) if value.numel() else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


class StepSignal:
    """Reads the step of every call of one captured graph.

    Args:
        gm: the Dynamo graph (its timestep input is found once, :func:`find_timestep_input`).
        tracker: a tracker to share with other graphs of the same model (a recompiled graph then
            continues the step count instead of restarting it); only shared when ``gm`` has a
            timestep input. Default: a new one.
        arg_names: the model arguments that may carry the timestep. Default
            :data:`DEFAULT_TIMESTEP_ARGS`.
    """

    def __init__(self, gm: torch.fx.GraphModule, tracker: StepTracker | None = None,
                 arg_names: Sequence[str] = DEFAULT_TIMESTEP_ARGS) -> None:
        self.timestep_position = find_timestep_input(gm, arg_names)
        shared = tracker is not None and self.timestep_position is not None
        self.tracker: StepTracker = tracker if tracker is not None and shared else StepTracker()

    @property
    def has_timestep(self) -> bool:
        return self.timestep_position is not None

    def read(self, args: Sequence[Any]) -> float | None:
        """The timestep of a call with these graph inputs (None without a timestep input)."""
        return read_timestep(args[self.timestep_position]) if self.timestep_position is not None else None

    def observe(self, args: Sequence[Any]) -> StepEvent:
        """The step event of a call with these graph inputs."""
        return self.tracker.observe(self.read(args))
