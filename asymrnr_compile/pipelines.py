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

A step cache (``step_cache=``: diffusers' first-block cache, TaylorSeer, FasterCache or pyramid
attention broadcast, or cache-dit's DBCache with an optional calibrator) is enabled on every
transformer before it is compiled, and needs ``regional=True``: the caches decide per step in
eager code, so a whole-model compile breaks the graph at their decision and no graph holds both
the patch embedding (where asymrnr finds the video grid) and an attention; compiled block by
block, the layout hook gives every block the grid and the model call's step. The steps at which
the cache skips blocks keep their place in asymrnr's matching windows (the step is the pipeline's,
not the count of a block's calls), and the cache's state is cleared at the start of every
pipeline call. The blocks whose output change the cache compares to decide (its probe: the
first-block cache's first block, DBCache's first ``Fn_compute_blocks``) are left unreduced by
default (``exact_probe_blocks``), so that the cache skips the steps it would skip alone.

How the call is wrapped: the pipeline object's class is replaced by a subclass of it with the
same name whose ``__call__`` opens the scope (Python looks ``__call__`` up on the class, so an
instance attribute would not be called); :func:`disable_asymrnr` puts the original class back
and uncompiles the transformers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from asymrnr_compile.backend import AsymRnRBackend
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.runtime.video_scope import VideoScope, video

logger = logging.getLogger("asymrnr_compile")

#: Attribute of an enabled pipeline holding its :class:`PipelineIntegration`.
INTEGRATION_ATTRIBUTE = "_asymrnr_integration"
#: Components whose names start with this are the denoisers compiled (``transformer``,
#: ``transformer_2``).
TRANSFORMER_PREFIX = "transformer"
#: The diffusers cache configs ``step_cache`` accepts (``transformer.enable_cache(config)``),
#: by class name in ``diffusers.hooks``.
DIFFUSERS_STEP_CACHES = ("FirstBlockCacheConfig", "TaylorSeerCacheConfig", "FasterCacheConfig",
                         "PyramidAttentionBroadcastConfig")
#: The cache-dit cache configs ``step_cache`` accepts (alone, or in a :class:`CacheDiTConfig`).
CACHE_DIT_STEP_CACHES = ("DBCacheConfig",)
#: What ``step_cache`` may be, for the error message.
STEP_CACHE_ALLOWED = (f"None, a diffusers cache config ({', '.join(DIFFUSERS_STEP_CACHES)}), a cache-dit "
                      f"{' or '.join(CACHE_DIT_STEP_CACHES)}, or asymrnr_compile.CacheDiTConfig(cache, calibrator)")


@dataclass(frozen=True)
class CacheDiTConfig:
    """cache-dit's step cache for :func:`enable_asymrnr` (``step_cache=``): its cache config and,
    optionally, a calibrator, as ``cache_dit.enable_cache(transformer, cache_config=cache,
    calibrator_config=calibrator)`` takes them. A bare ``DBCacheConfig`` is the same without a
    calibrator.

    Attributes:
        cache: a ``cache_dit.DBCacheConfig`` (which steps skip the middle blocks:
            ``Fn_compute_blocks``, ``residual_diff_threshold``, ``max_warmup_steps``...).
        calibrator: a ``cache_dit.TaylorSeerCalibratorConfig`` (or another
            ``cache_dit.CalibratorConfig``) predicting the skipped blocks' residual; None
            (default): the last residual is reused.
    """

    cache: Any
    calibrator: Any = None

    def __post_init__(self) -> None:
        if _cache_kind(self.cache) != "cache-dit":
            raise TypeError(f"CacheDiTConfig.cache must be a cache-dit {' or '.join(CACHE_DIT_STEP_CACHES)}, "
                            f"got {type(self.cache).__name__}")
        if self.calibrator is not None:
            import cache_dit

            if not isinstance(self.calibrator, cache_dit.CalibratorConfig):
                raise TypeError(f"CacheDiTConfig.calibrator must be a cache_dit CalibratorConfig (e.g. "
                                f"TaylorSeerCalibratorConfig) or None, got {type(self.calibrator).__name__}")


def _cache_kind(step_cache: Any) -> Literal["diffusers", "cache-dit"] | None:
    """``"diffusers"`` or ``"cache-dit"`` for a config ``step_cache`` accepts, else None. Neither
    package is imported unless the object comes from it."""
    module = type(step_cache).__module__ or ""
    name = type(step_cache).__name__
    if module.split(".")[0] == "diffusers" and name in DIFFUSERS_STEP_CACHES:
        import diffusers.hooks

        return "diffusers" if isinstance(step_cache, getattr(diffusers.hooks, name)) else None
    if module.split(".")[0] == "cache_dit" and name in CACHE_DIT_STEP_CACHES:
        import cache_dit

        return "cache-dit" if isinstance(step_cache, getattr(cache_dit, name)) else None
    return None


def _step_cache_kind(step_cache: Any) -> Literal["diffusers", "cache-dit"] | None:
    """What ``enable_asymrnr``'s ``step_cache`` is: :func:`_cache_kind`, and ``"cache-dit"`` for a
    :class:`CacheDiTConfig`."""
    return "cache-dit" if isinstance(step_cache, CacheDiTConfig) else _cache_kind(step_cache)


def _enable_step_cache(module: torch.nn.Module, step_cache: Any, kind: str) -> None:
    """Enable ``step_cache`` of ``kind`` (``"diffusers"`` or ``"cache-dit"``, from
    :func:`_step_cache_kind`) on one transformer."""
    if kind == "cache-dit":
        import cache_dit

        cache, calibrator = (step_cache.cache, step_cache.calibrator) if isinstance(step_cache, CacheDiTConfig) \
            else (step_cache, None)
        cache_dit.enable_cache(module, cache_config=cache, calibrator_config=calibrator)
        return
    if not callable(getattr(module, "enable_cache", None)):
        raise TypeError(f"step_cache: diffusers' cache hooks attach to a diffusers model (CacheMixin.enable_cache); "
                        f"{type(module).__name__} has no enable_cache")
    module.enable_cache(step_cache)


#: diffusers' name of the hook on the first-block cache's leader block (the block whose output
#: change decides whether the others run), ``diffusers.hooks.first_block_cache._FBC_LEADER_BLOCK_HOOK``.
FIRST_BLOCK_CACHE_LEADER_HOOK = "fbc_leader_block_hook"


def step_cache_probe_blocks(module: torch.nn.Module, step_cache: Any, kind: str,
                            blocks: torch.nn.ModuleList | None = None) -> tuple[str, ...]:
    """Module paths of the blocks whose output ``step_cache`` (enabled on ``module``) compares
    between steps to decide whether to skip the others: the first-block cache's leader block;
    DBCache's first ``Fn_compute_blocks`` blocks (of the first block list cache-dit's adapter
    names, or of ``blocks``: the list a ``cache_dit.BlockAdapter`` was given, for a model
    cache-dit has no registered adapter for). ``()`` for the caches that decide by a schedule
    (TaylorSeer, FasterCache, pyramid attention broadcast) and when the blocks cannot be found."""
    if kind == "diffusers":
        if type(step_cache).__name__ != "FirstBlockCacheConfig":
            return ()
        return tuple(name for name, sub in module.named_modules()
                     if getattr(sub, "_diffusers_hook", None) is not None
                     and sub._diffusers_hook.get_hook(FIRST_BLOCK_CACHE_LEADER_HOOK) is not None)
    cache = step_cache.cache if isinstance(step_cache, CacheDiTConfig) else step_cache
    if blocks is None:
        import cache_dit

        blocks = getattr(cache_dit.get_adapter(module), "blocks", None)
        if isinstance(blocks, (list, tuple)) and blocks and isinstance(blocks[0], torch.nn.ModuleList):
            blocks = blocks[0]  # several block lists: the first decides
    if not isinstance(blocks, torch.nn.ModuleList):
        return ()
    probes = list(blocks)[: cache.Fn_compute_blocks]
    paths = {id(sub): name for name, sub in module.named_modules()}
    return tuple(paths[id(block)] for block in probes if id(block) in paths)


def with_probe_blocks(config: AsymRnRConfig, probes: tuple[str, ...]) -> AsymRnRConfig:
    """``config`` with ``probes`` added to its ``skip_blocks`` (those not already named)."""
    added = tuple(path for path in probes if path not in config.skip_blocks)
    return dataclasses.replace(config, skip_blocks=(*config.skip_blocks, *added)) if added else config


def _clear_step_cache(module: torch.nn.Module, kind: str) -> None:
    """Forget the step cache's state of ``module`` (a new video)."""
    if kind == "cache-dit":
        import cache_dit

        cache_dit.refresh_context(module)
    else:
        module._reset_stateful_cache()


def _disable_step_cache(module: torch.nn.Module, kind: str) -> None:
    if kind == "cache-dit":
        import cache_dit

        cache_dit.disable_cache(module)
    else:
        module.disable_cache()


@dataclass
class PipelineIntegration:
    """What :func:`enable_asymrnr` did to a pipeline, to undo it.

    Attributes:
        backend: the backend every transformer of the pipeline was compiled with.
        original_class: the pipeline's class before.
        transformers: the names of the compiled components.
        regional: compiled block by block.
        step_cache: the step cache enabled on the transformers (``enable_asymrnr``'s
            ``step_cache``), or None.
        step_cache_kind: ``"diffusers"`` or ``"cache-dit"`` with a step cache, else None.
        probe_blocks: the step cache's probe blocks left unreduced (``exact_probe_blocks``),
            module paths per transformer name; empty otherwise.
        original_config: the backend's config before the probe blocks were added to it (put
            back by :func:`disable_asymrnr`), or None when it was not changed.
    """

    backend: AsymRnRBackend
    original_class: type
    transformers: tuple[str, ...]
    regional: bool
    step_cache: Any = None
    step_cache_kind: str | None = None
    probe_blocks: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    original_config: AsymRnRConfig | None = None

    def clear_step_cache(self, pipe: Any) -> None:
        """Forget the step cache's state of every transformer of ``pipe`` (a new video)."""
        if self.step_cache_kind is None:
            return
        for name in self.transformers:
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                _clear_step_cache(module, self.step_cache_kind)


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
        integration = getattr(self, INTEGRATION_ATTRIBUTE, None)
        if isinstance(integration, PipelineIntegration):  # the step cache starts the video clean too
            integration.clear_step_cache(self)
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
                   step_cache: Any = None, exact_probe_blocks: bool = True, **compile_kwargs: Any) -> AsymRnRBackend:
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
        step_cache: a step cache enabled on every transformer before compiling (see the module
            docstring): a diffusers config ``transformer.enable_cache`` takes
            (:data:`DIFFUSERS_STEP_CACHES`: ``FirstBlockCacheConfig(threshold=0.05)``...), a
            cache-dit ``DBCacheConfig``, or a :class:`CacheDiTConfig` (a ``DBCacheConfig`` and a
            calibrator such as ``TaylorSeerCalibratorConfig``). Needs ``regional=True``. Default
            None: no step cache. :func:`disable_asymrnr` removes it.
        exact_probe_blocks: with a step cache that decides from some blocks' output change (the
            first-block cache's first block, DBCache's first ``Fn_compute_blocks``:
            :func:`step_cache_probe_blocks`), leave those blocks unreduced (added to the config's
            ``skip_blocks``), so that the cache compares exact outputs and skips the steps it would
            skip alone. Reduced, their output changes also by asymrnr's new matchings, and the cache
            skips fewer steps (measured on the 1024-token reference model with DBCache 0.12: 6 of 20
            steps instead of 10; docs/comparing_accelerators.md). Default True. With ``backend=``,
            the backend's config is replaced by one with those blocks added (before it compiles
            anything).
        **compile_kwargs: other ``torch.compile`` arguments (``fullgraph``, ``mode``...).

    Raises:
        TypeError: ``pipe`` is not a pipeline, ``options`` not a mapping or config, ``backend``
            not an AsymRnRBackend, ``regional`` not a bool, ``step_cache`` not one of the configs
            above (or a diffusers cache on a transformer that is no diffusers model).
        ValueError: a bad option (named), both ``options`` and ``backend``, the pipeline already
            enabled, no transformer in it, a ``step_cache`` without ``regional=True``, or probe
            blocks to leave exact with a ``backend`` that has compiled graphs already.
    """
    if getattr(pipe, INTEGRATION_ATTRIBUTE, None) is not None:
        raise ValueError("asymrnr is already enabled on this pipeline; call disable_asymrnr(pipe) first")
    if not isinstance(regional, bool):
        raise TypeError(f"regional must be a bool, got {regional!r}")
    if not isinstance(exact_probe_blocks, bool):
        raise TypeError(f"exact_probe_blocks must be a bool, got {exact_probe_blocks!r}")
    cache_kind = None
    if step_cache is not None:
        cache_kind = _step_cache_kind(step_cache)
        if cache_kind is None:
            raise TypeError(f"step_cache must be {STEP_CACHE_ALLOWED}; got {type(step_cache).__name__}")
        if not regional:
            raise ValueError(
                "step_cache needs regional=True: a step cache decides per step in eager code, so a whole-model "
                "compile breaks the graph at its decision and no graph holds both the video grid and an attention "
                "(asymrnr would reduce nothing); compiled block by block, every block is reduced")
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
    probe_blocks: dict[str, tuple[str, ...]] = {}
    for name, module in transformers.items():
        if step_cache is not None:
            _enable_step_cache(module, step_cache, cache_kind)
            found = step_cache_probe_blocks(module, step_cache, cache_kind) if exact_probe_blocks else ()
            if found:
                probe_blocks[name] = found
    probes = tuple(dict.fromkeys(path for paths in probe_blocks.values() for path in paths))
    exact = with_probe_blocks(backend.config, probes)
    if exact != backend.config:
        if backend.graphs:
            for module in transformers.values():  # leave the pipeline as it was
                _disable_step_cache(module, cache_kind)
            raise ValueError(f"exact_probe_blocks: the step cache's probe blocks {probes} would be added to the "
                             "backend's skip_blocks, but the backend has compiled graphs already; pass a fresh "
                             "backend, or exact_probe_blocks=False")
        logger.info("asymrnr: leaving the step cache's probe blocks %s unreduced (exact_probe_blocks)", probes)
        original_config, backend.config = backend.config, exact
    else:
        original_config = None
    for module in transformers.values():
        if regional:
            from asymrnr_compile.regional import compile_repeated_blocks

            compile_repeated_blocks(module, backend=backend, dynamic=dynamic, **compile_kwargs)
        else:
            module.compile(backend=backend, dynamic=dynamic, **compile_kwargs)
    original = type(pipe)
    setattr(pipe, INTEGRATION_ATTRIBUTE, PipelineIntegration(backend, original, tuple(transformers), regional,
                                                             step_cache, cache_kind, probe_blocks, original_config))
    pipe.__class__ = _scoped_class(original)
    return backend


def disable_asymrnr(pipe: Any) -> bool:
    """Undo :func:`enable_asymrnr`: the pipeline's class back, its transformers (and blocks)
    uncompiled, the layout hooks and the step cache removed, the backend's config as it was.
    Returns whether it was enabled."""
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
        if integration.step_cache_kind is not None:
            _disable_step_cache(module, integration.step_cache_kind)
    if integration.original_config is not None:  # the probe blocks added by exact_probe_blocks
        integration.backend.config = integration.original_config
    pipe.__class__ = integration.original_class
    delattr(pipe, INTEGRATION_ATTRIBUTE)
    return True


__all__ = ["CacheDiTConfig", "PipelineIntegration", "disable_asymrnr", "enable_asymrnr", "pipeline_transformers",
           "step_cache_probe_blocks", "with_probe_blocks"]
