"""The video scope: one video being sampled, with its steps, and per model its matchings.

AsymRnR's matching cache (paper Sec. 3.4) and its schedules are indexed by the denoising step of
a video. Inside a scope the runtime reads the step from the scope, not from guesses::

    import asymrnr_compile

    compiled = torch.compile(model, backend="asymrnr")
    with asymrnr_compile.video(num_steps=len(timesteps)) as video:
        for step, t in enumerate(timesteps):
            video.set_step(step)                  # optional: else each new timestep is a new step
            noise_pred = compiled(latents, t, text)
            ...

A scope holds

- **one step counter for the video**: set by the loop (:meth:`VideoScope.set_step`,
  :meth:`VideoScope.next_step`; the diffusers pipeline integration advances it on every
  ``scheduler.step``), or, when nothing sets it, counted from the timestep inside the scope: a
  new value is a new step, the same value again another call of the same step. Every model
  called inside the scope sees this one count: Wan 2.2's ``transformer_2``, taking over in the
  middle of a video, continues at the pipeline's step instead of starting at 0 (so
  ``warmup_steps``, schedules and matching windows are read at the global step);
- **one video state per compiled graph, block instance and model instance**
  (:class:`~asymrnr_compile.runtime.video_state.VideoState`: its matching cache and splits), made
  fresh on first use: two experts keep their own matchings, and nothing from an earlier video,
  a warm-up call made before the scope, or another scope leaks in. A model instance is known by
  its first parameter object, held weakly; a model whose parameters offloading hooks re-create
  for every call continues its state (:meth:`VideoScope.state_for`,
  :class:`~asymrnr_compile.runtime.model_instances.PerModelInstance`).

Scopes live in a :class:`contextvars.ContextVar`: an asyncio task or a thread started with a
copied context (``contextvars.copy_context().run``, ``asyncio.to_thread``) sees the scope it was
started in, and two tasks or threads sampling two videos in two scopes never share steps or
matchings. Outside any scope the runtime falls back to reading steps from the timestep alone
(:mod:`asymrnr_compile.runtime.steps`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from asymrnr_compile.runtime.model_instances import PerModelInstance
from asymrnr_compile.runtime.steps import StepEvent


@dataclass(eq=False)
class _CallCounter:
    """Which call of the current step a (graph, block instance, model) makes."""

    step: int = -1
    call_index: int = 0

    def event(self, step: int) -> StepEvent:
        new_video = self.step < 0
        if step == self.step:
            self.call_index += 1
        else:
            self.step, self.call_index = step, 0
        return StepEvent(step, self.call_index, new_video)


@dataclass(eq=False)
class _ScopeEntry:
    """A video state in a scope: its graph (held, so that its id stays unique), the state and
    its call counter (kept per model instance by :class:`PerModelInstance`)."""

    owner: Any
    state: Any
    counter: _CallCounter


@dataclass(eq=False)
class VideoScope:
    """One video (see the module docstring). Open one with :func:`video`.

    Attributes:
        num_steps: denoising steps of the video, if known (used by schedules made for another
            step count, like ``AsymRnRConfig.num_steps``; a scope's value wins). None: unknown.
        step: the current step (0-based) once set or counted; -1 before the first.
        explicit: the step is set by the loop or the pipeline (:meth:`set_step`), not counted
            from timesteps.
    """

    num_steps: int | None = None
    step: int = -1
    explicit: bool = False
    _last_timestep: float | None = field(default=None, repr=False)
    # per (id(graph), block instance) and model instance
    _states: PerModelInstance[_ScopeEntry] = field(default_factory=PerModelInstance, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.num_steps is not None and (isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int)
                                           or self.num_steps < 1):
            raise ValueError(f"num_steps must be an int >= 1 or None, got {self.num_steps!r}")

    # -- the step ---------------------------------------------------------------------------

    def set_step(self, step: int) -> None:
        """Declare the current denoising step (0-based) of the video; from now on steps come
        only from here, never from the timestep."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self.step, self.explicit = step, True

    def next_step(self) -> int:
        """Advance to the next step (the first call makes it step 0 if none was set); returns it."""
        self.set_step(self.step + 1 if self.explicit else 0)
        return self.step

    def step_of(self, timestep: float | None) -> int | None:
        """The video's step for a call with this timestep: the declared one, or counted from the
        timestep values seen in the scope; None when neither tells (no timestep, nothing set)."""
        with self._lock:
            if self.explicit:
                return self.step
            if timestep is None:
                return None
            if timestep != self._last_timestep:
                self._last_timestep = timestep
                self.step += 1
            return self.step

    # -- states ---------------------------------------------------------------------------------

    def state_for(self, owner: Any, offset: int, model: Any, make: Any) -> Any:
        """The video state of graph ``owner`` (a runtime), block instance ``offset`` and model
        instance ``model`` (its first parameter object, or None), made with ``make()`` on first
        use.

        ``model`` is held weakly (the scope never keeps weights alive). A parameter object seen
        for the first time takes over the state of this graph and block instance whose parameter
        object is gone, if there is one: offloading hooks (accelerate's sequential CPU offload)
        re-create the parameters for every call, and the model must still continue its video.
        Two live models keep two states."""
        with self._lock:
            return self._entry(owner, offset, model, make).state

    def _entry(self, owner: Any, offset: int, model: Any, make: Any = None) -> _ScopeEntry:
        try:
            return self._states.get((id(owner), offset), model,
                                    None if make is None else lambda: _ScopeEntry(owner, make(), _CallCounter()))
        except KeyError:
            raise KeyError("no video state for this graph, block instance and model: call state_for first") from None

    def event_for(self, owner: Any, offset: int, model: Any, timestep: float | None,
                  fallback_step: int) -> StepEvent:
        """The step event of one call: the video's step (``fallback_step``, the caller's own
        count, when the scope cannot tell) and which call of that step this (graph, block
        instance, model) makes."""
        step = self.step_of(timestep)
        with self._lock:
            return self._entry(owner, offset, model).counter.event(fallback_step if step is None else step)

    def states_of(self, owner: Any) -> list[Any]:
        """The video states graph ``owner`` made in this scope."""
        with self._lock:
            return [entry.state for (graph, _), entry in self._states.items() if graph == id(owner)]

    def close(self) -> None:
        """Drop every state (the video is over)."""
        with self._lock:
            self._states.clear()


_current: contextvars.ContextVar[VideoScope | None] = contextvars.ContextVar("asymrnr_video", default=None)


def current_video() -> VideoScope | None:
    """The innermost open :class:`VideoScope` of the calling context, or None."""
    return _current.get()


@contextmanager
def video(num_steps: int | None = None) -> Iterator[VideoScope]:
    """``with video(num_steps=...) as scope:`` samples one video inside a fresh scope (see the
    module docstring); the scope's states are dropped on exit, also on error. Scopes nest: an
    inner one is a video of its own.

    Args:
        num_steps: the video's denoising steps, if known (schedules made for another step count
            read step ``j`` at progress ``j / (num_steps - 1)``). Default None.

    Raises:
        ValueError: ``num_steps`` is not an int >= 1 or None.
    """
    scope = VideoScope(num_steps=num_steps)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
        scope.close()


__all__ = ["VideoScope", "current_video", "video"]
