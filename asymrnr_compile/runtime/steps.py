"""The step signal: which denoising step, and which call within it, a call of the model is.

The timestep is a graph input (a placeholder whose name contains ``timestep``). A new value is a
new step; the same value again is another call of the same step (pipelines that run cond and
uncond as two calls); a value that moves against the video's direction starts a new video.
Without a timestep input every call is a step. The backend's runtime and the profiler read steps
the same way, through :class:`StepSignal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

TIMESTEP_NAME = "timestep"
"""A graph input whose placeholder name contains this (case-insensitive) is the step signal."""


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

    def observe(self, timestep: float | None) -> StepEvent:
        """The step event of a call with this timestep value (None: no timestep input)."""
        new_video = self.step < 0
        if timestep is None:
            self.step += 1
            self.call_index = 0
        elif self.last_timestep is None:
            new_video = True
            self.step, self.call_index, self.direction = 0, 0, 0
        elif timestep == self.last_timestep:
            self.call_index += 1
        else:
            direction = 1 if timestep > self.last_timestep else -1
            if self.direction not in (0, direction):
                new_video = True
                self.step, self.call_index, self.direction = 0, 0, 0
            else:
                self.direction = direction
                self.step += 1
                self.call_index = 0
        self.last_timestep = timestep
        if self.call_index == 0:
            self.steps_seen += 1
        return StepEvent(self.step, self.call_index, new_video)


def find_timestep_input(gm: torch.fx.GraphModule) -> int | None:
    """Position of the timestep among the graph's inputs (a placeholder named like it), or None."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        if TIMESTEP_NAME in node.name.lower():
            value = node.meta.get("example_value")
            if value is None or isinstance(value, torch.Tensor):
                return position
    return None


def read_timestep(value: Any) -> float | None:
    """The timestep of a call as a Python float (first element), or None if it is not one."""
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0].item()) if value.numel() else None
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
    """

    def __init__(self, gm: torch.fx.GraphModule, tracker: StepTracker | None = None) -> None:
        self.timestep_position = find_timestep_input(gm)
        shared = tracker is not None and self.timestep_position is not None
        self.tracker: StepTracker = tracker if tracker is not None and shared else StepTracker()

    @property
    def has_timestep(self) -> bool:
        return self.timestep_position is not None

    def observe(self, args: Sequence[Any]) -> StepEvent:
        """The step event of a call with these graph inputs."""
        timestep = read_timestep(args[self.timestep_position]) if self.timestep_position is not None else None
        return self.tracker.observe(timestep)
