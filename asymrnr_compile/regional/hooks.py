"""The layout hook: each call of the whole model tells its compiled blocks the grid and the step.

:func:`apply_token_layout_hook` puts a forward pre-hook and a forward hook on a transformer. For
the duration of each call, the pre-hook opens a
:class:`~asymrnr_compile.runtime.forward_context.ForwardContext` with

- the video token grid, from the video argument's shape and the config's patch sizes
  (:func:`~asymrnr_compile.regional.input_layouts.token_grid`; registry data, no model code read),
  and the number of text tokens;
- the step signal: the timestep argument, read once per call as a float (its maximum: per-token
  timesteps). On a CUDA tensor this waits for the device once per call, as whole-model
  compilation does;
- the step of the call, counted over the model's calls (one
  :class:`~asymrnr_compile.runtime.steps.StepTracker` per model and thread), and the video it
  belongs to. The blocks read this step rather than counting their own calls: a step cache that
  skips the blocks at some steps (diffusers' first-block cache and TaylorSeer, cache-dit's DBCache)
  leaves the model's step count, and so the blocks' matching windows, where they are. Inside an open
  video scope (:func:`asymrnr_compile.video`) the call's timestep also advances the scope's count
  when nothing sets its step, for the same reason.

The forward hook closes it, also when the call raised (``always_call=True``). While Dynamo
traces the model (whole-model ``torch.compile`` of a hooked model) the hooks do nothing.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.regional.input_layouts import InputLayout, input_layout_of, text_tokens, token_grid
from asymrnr_compile.runtime.forward_context import ForwardContext, close_forward, open_forward
from asymrnr_compile.runtime.steps import StepTracker, read_timestep
from asymrnr_compile.runtime.video_scope import current_video
from asymrnr_compile.vocabulary import DEFAULT_TIMESTEP_ARGS

logger = logging.getLogger("asymrnr_compile")

#: Attribute of a hooked model holding its :class:`TokenLayoutHook`.
HOOK_ATTRIBUTE = "_asymrnr_token_layout_hook"
#: Numbers of the videos the hooks see, unique in the process (``ForwardContext.video``).
_VIDEO_NUMBERS = itertools.count()


class TokenLayoutHook:
    """The hooks :func:`apply_token_layout_hook` puts on one model (see the module docstring).

    Attributes:
        layout: the model's :class:`~asymrnr_compile.regional.input_layouts.InputLayout`.
        timestep_args: the argument names read for the step signal (the first present wins).
        calls: model calls that opened a context.
    """

    def __init__(self, model: torch.nn.Module, layout: InputLayout, timestep_args: Sequence[str]) -> None:
        self.layout = layout
        self.timestep_args = tuple(timestep_args)
        self.calls = 0
        self.block_offsets: dict[str, int] = {}  # shared by the model's calls (ForwardContext.enter_block)
        self._config = getattr(model, "config", None)
        # Only to name arguments passed by position (diffusers pipelines pass keywords).
        self._signature = inspect.signature(model.forward)
        self._local = threading.local()
        self._warned = False
        self._handles = [
            model.register_forward_pre_hook(self._open, with_kwargs=True),
            model.register_forward_hook(self._close, with_kwargs=True, always_call=True),
        ]

    def remove(self) -> None:
        """Take the hooks off the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if not args:
            return dict(kwargs)
        try:
            return dict(self._signature.bind_partial(*args, **kwargs).arguments)
        except TypeError:  # the model will say what is wrong with its arguments
            return dict(kwargs)

    def context_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ForwardContext:
        """The :class:`ForwardContext` of a model call with these arguments.

        Raises:
            ValueError: the grid cannot be read from the arguments (see ``token_grid``).
        """
        arguments = self._arguments(args, kwargs)
        grid = token_grid(self.layout, self._config, arguments)
        timestep = next((read_timestep(arguments[name]) for name in self.timestep_args
                         if arguments.get(name) is not None), None)
        return ForwardContext(DeclaredLayout(grid, text_tokens(self.layout, arguments)), timestep,
                              block_offsets=self.block_offsets)

    def _open(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.compiler.is_compiling():
            return
        stack = self._stack()
        try:
            context: ForwardContext | None = self.context_of(args, kwargs)
        except ValueError as error:  # never break the model: its blocks run unreduced
            context = None
            if not self._warned:
                self._warned = True
                logger.warning("asymrnr: the layout hook of %s cannot read the video grid (%s); its compiled "
                               "blocks run unreduced", type(module).__name__, error)
        stack.append(context)
        if context is not None:
            self._count_step(context)
            self.calls += 1
            open_forward(context)

    def _count_step(self, context: ForwardContext) -> None:
        """Give ``context`` the step of this model call (see the module docstring)."""
        scope = current_video()
        if scope is not None:  # the scope counts steps over every call of the video, skipped blocks or not
            scope.step_of(context.timestep)
        self._observe(context)

        def restart() -> None:
            self._local.tracker = StepTracker()
            self._observe(context)

        context.restart = restart

    def _observe(self, context: ForwardContext) -> None:
        tracker = getattr(self._local, "tracker", None)
        if tracker is None:
            tracker = self._local.tracker = StepTracker()
        event = tracker.observe(context.timestep)
        if event.new_video or getattr(self._local, "video", None) is None:
            self._local.video = next(_VIDEO_NUMBERS)
        context.event, context.video = event, self._local.video
        context.first_step_calls = tuple(tracker.first_step_calls[:2])

    def _close(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if torch.compiler.is_compiling():
            return
        stack = self._stack()
        if stack:
            context = stack.pop()
            if context is not None:
                close_forward(context)

    def _stack(self) -> list[ForwardContext | None]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack


def apply_token_layout_hook(model: torch.nn.Module, layout: InputLayout | None = None, *,
                            timestep_arg: str | None = None) -> TokenLayoutHook:
    """Put the layout hook on ``model`` (replacing one already there) and return it.

    Args:
        model: the whole transformer (its repeated blocks are compiled separately).
        layout: how its call gives the video grid; default: the registry entry of its class
            (:data:`~asymrnr_compile.regional.input_layouts.INPUT_LAYOUTS`).
        timestep_arg: the argument carrying the timestep; default ``timestep`` or
            ``timesteps`` (as ``AsymRnRConfig.timestep_arg``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``layout`` not an ``InputLayout`` or
            ``timestep_arg`` not a string.
        ValueError: no layout given and none registered for the model's class.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layout is None:
        layout = input_layout_of(model)
    elif not isinstance(layout, InputLayout):
        raise TypeError(f"layout must be an InputLayout, got {type(layout).__name__}")
    if timestep_arg is not None and not isinstance(timestep_arg, str):
        raise TypeError(f"timestep_arg must be a string, got {type(timestep_arg).__name__}")
    remove_token_layout_hook(model)
    hook = TokenLayoutHook(model, layout, (timestep_arg,) if timestep_arg else DEFAULT_TIMESTEP_ARGS)
    setattr(model, HOOK_ATTRIBUTE, hook)
    return hook


def remove_token_layout_hook(model: torch.nn.Module) -> bool:
    """Take the layout hook off ``model``; returns whether there was one."""
    hook = getattr(model, HOOK_ATTRIBUTE, None)
    if not isinstance(hook, TokenLayoutHook):
        return False
    hook.remove()
    delattr(model, HOOK_ATTRIBUTE)
    return True


__all__ = ["HOOK_ATTRIBUTE", "TokenLayoutHook", "apply_token_layout_hook", "remove_token_layout_hook"]
