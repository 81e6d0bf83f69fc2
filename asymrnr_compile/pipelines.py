"""asymrnr on a diffusers pipeline: one call, and every pipeline call is one video.

::

    import asymrnr_compile

    backend = asymrnr_compile.enable_asymrnr(pipe)            # or (pipe, {"q_ratio": 0.4}, regional=True)
    video = pipe(prompt, num_inference_steps=50).frames[0]     # one video scope per call
    print(backend.report())

:func:`enable_asymrnr` compiles the pipeline's transformers (``transformer``, and Wan 2.2's
``transformer_2``: every component whose name starts with ``transformer``) in place with one
:class:`~asymrnr_compile.AsymRnRBackend`, whole or block by block
(:func:`~asymrnr_compile.compile_repeated_blocks`), and makes every call of the pipeline run
inside a video scope (:mod:`asymrnr_compile.runtime.video_scope`):

- the scope opens when the call starts and closes when it returns or raises, so every video
  starts clean, whatever warm-up calls, earlier videos or errors came before;
- the step is the pipeline's own: 0 at the start of the call, one more after every
  ``pipe.scheduler.step(...)`` (the scheduler the call uses, also one swapped in after enabling).
  Both Wan 2.2 experts therefore see the pipeline's global step (``transformer_2`` continues at
  the step where it takes over; ``warmup_steps``, schedules and matching windows read that
  step) while each keeps its own matchings;
- ``num_inference_steps``, when passed by name, is the scope's step count (schedules made for
  another step count are read at the video's progress).

How the call is wrapped: the pipeline object's class is replaced by a subclass of it with the
same name whose ``__call__`` opens the scope (Python looks ``__call__`` up on the class, so an
instance attribute would not be called); :func:`disable_asymrnr` puts the original class back
and uncompiles the transformers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from asymrnr_compile.backend import AsymRnRBackend
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.runtime.video_scope import VideoScope, video

#: Attribute of an enabled pipeline holding its :class:`PipelineIntegration`.
INTEGRATION_ATTRIBUTE = "_asymrnr_integration"
#: Components whose names start with this are the denoisers compiled (``transformer``,
#: ``transformer_2``).
TRANSFORMER_PREFIX = "transformer"


@dataclass
class PipelineIntegration:
    """What :func:`enable_asymrnr` did to a pipeline, to undo it.

    Attributes:
        backend: the backend every transformer of the pipeline was compiled with.
        original_class: the pipeline's class before.
        transformers: the names of the compiled components.
        regional: compiled block by block.
    """

    backend: AsymRnRBackend
    original_class: type
    transformers: tuple[str, ...]
    regional: bool


def pipeline_transformers(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's denoisers: its components named ``transformer*`` that are modules."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, Mapping):
        raise TypeError(f"pipe must be a diffusers pipeline (with .components), got {type(pipe).__name__}")
    return {name: module for name, module in components.items()
            if name.startswith(TRANSFORMER_PREFIX) and isinstance(module, torch.nn.Module)}


@contextmanager
def _counting_scheduler_steps(scheduler: Any, scope: VideoScope) -> Iterator[None]:
    """For the block: every ``scheduler.step(...)`` call advances ``scope`` by one step."""
    if scheduler is None or not callable(getattr(scheduler, "step", None)):
        yield
        return
    had_own = "step" in vars(scheduler)
    original = scheduler.step

    @functools.wraps(original)
    def step(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        scope.set_step(scope.step + 1)
        return out

    scheduler.step = step
    try:
        yield
    finally:
        if had_own:
            scheduler.step = original
        else:
            del scheduler.step


def _call_in_video_scope(call: Any) -> Any:
    """``__call__`` of an enabled pipeline: the original one inside a video scope."""

    @functools.wraps(call)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        num_steps = kwargs.get("num_inference_steps")
        valid = isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps >= 1
        with video(num_steps if valid else None) as scope:
            scope.set_step(0)
            with _counting_scheduler_steps(getattr(self, "scheduler", None), scope):
                return call(self, *args, **kwargs)

    return __call__


@functools.cache
def _scoped_class(cls: type) -> type:
    """A subclass of pipeline class ``cls``, of the same name, whose calls are video scopes."""
    return type(cls.__name__, (cls,), {"__call__": _call_in_video_scope(cls.__call__), "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "_asymrnr_scoped": True})


def enable_asymrnr(pipe: Any, options: Mapping[str, Any] | AsymRnRConfig | None = None, *,
                   backend: AsymRnRBackend | None = None, regional: bool = False, dynamic: bool | None = False,
                   **compile_kwargs: Any) -> AsymRnRBackend:
    """Compile ``pipe``'s transformers with asymrnr and make each pipeline call one video scope
    (see the module docstring). Returns the backend (``backend.report()`` after a call).

    Args:
        pipe: a diffusers pipeline with at least one ``transformer*`` component.
        options: asymrnr options (``AsymRnRConfig`` fields, or a config). Default None: the
            defaults.
        backend: an :class:`~asymrnr_compile.AsymRnRBackend` to use instead of ``options``.
        regional: compile each repeated block alone (diffusers' regional compilation, with the
            layout hook; :func:`~asymrnr_compile.compile_repeated_blocks`) instead of each
            transformer whole. Default False.
        dynamic: ``torch.compile``'s ``dynamic``. Default False (symbolic shapes are left
            unreduced).
        **compile_kwargs: other ``torch.compile`` arguments (``fullgraph``, ``mode``...).

    Raises:
        TypeError: ``pipe`` is not a pipeline, ``options`` not a mapping or config, ``backend``
            not an AsymRnRBackend, ``regional`` not a bool.
        ValueError: a bad option (named), both ``options`` and ``backend``, the pipeline already
            enabled, or no transformer in it.
    """
    if getattr(pipe, INTEGRATION_ATTRIBUTE, None) is not None:
        raise ValueError("asymrnr is already enabled on this pipeline; call disable_asymrnr(pipe) first")
    if not isinstance(regional, bool):
        raise TypeError(f"regional must be a bool, got {regional!r}")
    transformers = pipeline_transformers(pipe)
    if not transformers:
        raise ValueError(f"{type(pipe).__name__} has no transformer component (names starting with "
                         f"{TRANSFORMER_PREFIX!r}) to compile; components: {sorted(pipe.components)}")
    if backend is not None:
        if options is not None:
            raise ValueError("pass either options or a backend (which has its config), not both")
        if not isinstance(backend, AsymRnRBackend):
            raise TypeError(f"backend must be an AsymRnRBackend, got {type(backend).__name__}")
    else:
        config = options if isinstance(options, AsymRnRConfig) else AsymRnRConfig.from_options(options)
        backend = AsymRnRBackend(config)
    for module in transformers.values():
        if regional:
            from asymrnr_compile.regional import compile_repeated_blocks

            compile_repeated_blocks(module, backend=backend, dynamic=dynamic, **compile_kwargs)
        else:
            module.compile(backend=backend, dynamic=dynamic, **compile_kwargs)
    original = type(pipe)
    setattr(pipe, INTEGRATION_ATTRIBUTE, PipelineIntegration(backend, original, tuple(transformers), regional))
    pipe.__class__ = _scoped_class(original)
    return backend


def disable_asymrnr(pipe: Any) -> bool:
    """Undo :func:`enable_asymrnr`: the pipeline's class back, its transformers (and blocks)
    uncompiled, the layout hooks removed. Returns whether it was enabled."""
    integration = getattr(pipe, INTEGRATION_ATTRIBUTE, None)
    if not isinstance(integration, PipelineIntegration):
        return False
    from asymrnr_compile.regional.hooks import remove_token_layout_hook

    for name in integration.transformers:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for submodule in module.modules():  # nn.Module.compile() sets _compiled_call_impl
            if getattr(submodule, "_compiled_call_impl", None) is not None:
                submodule._compiled_call_impl = None
        remove_token_layout_hook(module)
    pipe.__class__ = integration.original_class
    delattr(pipe, INTEGRATION_ATTRIBUTE)
    return True


__all__ = ["PipelineIntegration", "disable_asymrnr", "enable_asymrnr", "pipeline_transformers"]
