"""Ways to run a trained text-to-video model's transformer, for comparing accelerators on it.

An :class:`Accelerator` builds, from a model of the synthetic task, an
:class:`AcceleratedTransformer`: a callable with the transformer's keyword signature
``(hidden_states (B, 3, F, H, W), encoder_hidden_states (B, T, D), timestep (B,))``, plus a
``reset()`` to call before each new batch of videos. Three kinds:

- :class:`PlainInductor`: ``torch.compile(model.transformer, backend="inductor")``, the baseline
  of every speedup;
- :class:`AsymRnR`: ``torch.compile(model.transformer, backend=AsymRnRBackend(config))``;
- :class:`DiffusersCache`: one of diffusers' training-free cache hooks (first-block cache,
  pyramid attention broadcast, FasterCache, TaylorSeer; :func:`first_block_cache` and friends
  build them) enabled on a copy of the model's diffusers transformer, then compiled with
  Inductor as a whole (``fullgraph=False``: the hooks break the graph on purpose) or, stacked with
  asymrnr, block by block with :func:`asymrnr_compile.compile_repeated_blocks`. The hooks need a
  transformer of a diffusers class: the CogVideoX text-to-video model (``arch="cogvideox"``),
  not the bundled ReferenceDiT;
- :class:`CacheDiT`: cache-dit's DBCache (optional dependency ``asymrnr-lab[cachedit]``), alone
  or with its TaylorSeer calibrator (:func:`dbcache`, :func:`cache_dit_taylorseer`), on a copy of
  the model's transformer, compiled with Inductor as a whole (``fullgraph=False``). It attaches
  to both model kinds: to CogVideoX's diffusers transformer through ``cache_dit.enable_cache``
  (cache-dit's registered CogVideoX adapter) and to the bundled ReferenceDiT through a
  ``cache_dit.BlockAdapter`` naming its blocks. Stacked with asymrnr (``asymrnr=``), the blocks
  are compiled with :func:`asymrnr_compile.compile_repeated_blocks` instead, as for
  :class:`DiffusersCache`.

Every accelerator compiles with ``isolate_recompiles=True``: Dynamo caches compiled code per code
object, shared by every ``torch.compile`` of the same class, and ``backend="inductor"`` wrappers
compare equal, so without it a plain Inductor transformer ran the graph-broken code compiled for
a hooked copy (its guards pass for the unhooked model) once a hook row had run: in one process
with the hook rows, the baseline was 12-18% slower than alone and every speedup against it was
inflated.

Each call of a hooked transformer runs inside ``cache_context("cond_uncond")`` and tells the
hooks the current timestep (on the [0, 1000] scale, ``sigma * 1000``), as ``CogVideoXPipeline``
does; ``reset()`` clears the hooks' state, as a pipeline does at the end of a call.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.pipelines import step_cache_probe_blocks, with_probe_blocks

#: diffusers' name for the cache context its CogVideoX pipeline runs the batched cond/uncond call in.
CACHE_CONTEXT = "cond_uncond"


def _no_reset() -> None:
    return None


@dataclass
class AcceleratedTransformer:
    """A transformer ready to sample with.

    Attributes:
        fn: the transformer's keyword signature; returns what ``model.transformer`` returns.
        reset: call before each new batch of videos (clears state that must not carry over).
        backend: the asymrnr backend inside, if any (its report gives the cost model's ideal).
        stats: for a step cache that counts its own work (:class:`CacheDiT`), a callable returning
            ``{"steps": model calls since the last reset, "cached_steps": [indices of the calls
            whose middle blocks were skipped], "residual_diffs": {call index: the relative change
            the cache decided on}}``; None (default) otherwise.
    """

    fn: Callable[..., torch.Tensor]
    reset: Callable[[], None] = _no_reset
    backend: Any = None
    stats: Callable[[], dict[str, Any]] | None = None

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(**inputs)


class Accelerator(Protocol):
    """Builds an :class:`AcceleratedTransformer` from a text-to-video model of the synthetic task."""

    def build(self, model: torch.nn.Module) -> AcceleratedTransformer: ...


@dataclass(frozen=True)
class Eager:
    """``model.transformer`` as it is (no compile): the same math as :class:`PlainInductor`."""

    def build(self, model: torch.nn.Module) -> AcceleratedTransformer:
        return AcceleratedTransformer(model.transformer)


@dataclass(frozen=True)
class PlainInductor:
    """``torch.compile(model.transformer, backend="inductor", dynamic=False)``."""

    def build(self, model: torch.nn.Module) -> AcceleratedTransformer:
        return AcceleratedTransformer(torch.compile(model.transformer, backend="inductor", dynamic=False,
                                                    isolate_recompiles=True))


@dataclass(frozen=True)
class AsymRnR:
    """``torch.compile(model.transformer, backend=AsymRnRBackend(config), dynamic=False)``.

    ``reset`` does nothing: the backend's runtime starts a new video by itself when the timestep
    rises again, and clearing it between batches would change nothing but the timing.
    """

    config: AsymRnRConfig

    def build(self, model: torch.nn.Module) -> AcceleratedTransformer:
        from asymrnr_compile.backend import AsymRnRBackend

        backend = AsymRnRBackend(self.config)
        return AcceleratedTransformer(torch.compile(model.transformer, backend=backend, dynamic=False,
                                                    isolate_recompiles=True), backend=backend)


@dataclass(frozen=True)
class DiffusersCache:
    """One of diffusers' cache hooks on a copy of the model's diffusers transformer.

    Attributes:
        make_config: given a callable returning the current timestep (float, [0, 1000]), the
            hook's diffusers config (e.g. ``FirstBlockCacheConfig(threshold=0.1)``).
        uncond_first: the hook expects the batched CFG call as ``[uncond, cond]`` (diffusers'
            pipelines' order; FasterCache computes only the second half on the steps it skips the
            unconditional branch) while this project's sampler batches ``[cond, uncond]``: the
            halves are swapped around the call.
        asymrnr: also reduce tokens with asymrnr (this config), compiling the repeated blocks
            with :func:`asymrnr_compile.compile_repeated_blocks` (a whole-model compile breaks
            the graph at the hooks, so no graph would hold both the grid and an attention site).
            None (default): compile the whole transformer with plain Inductor, ``fullgraph=False``.
        exact_probe_blocks: with ``asymrnr``, leave the hook's probe block (the first-block
            cache's first block; :func:`asymrnr_compile.pipelines.step_cache_probe_blocks`)
            unreduced, as ``enable_asymrnr`` does by default. Default True.
    """

    make_config: Callable[[Callable[[], float]], Any]
    uncond_first: bool = False
    asymrnr: AsymRnRConfig | None = None
    exact_probe_blocks: bool = True

    def build(self, model: torch.nn.Module, *, compile: bool = True) -> AcceleratedTransformer:
        """The hooked copy, compiled (default) or eager (``compile=False``: e.g. to count its
        FLOPs with ``torch.utils.flop_counter.FlopCounterMode``, which compiled code bypasses)."""
        wrapper = copy.deepcopy(model.transformer)
        diffusers_model = getattr(wrapper, "model", None)
        if diffusers_model is None or not hasattr(diffusers_model, "enable_cache"):
            raise TypeError(
                f"diffusers' cache hooks need a transformer of a diffusers class (a model of "
                f"arch='cogvideox'); this model's transformer is {type(model.transformer).__name__}")
        current = {"timestep": float("nan")}
        config = self.make_config(lambda: current["timestep"])
        diffusers_model.enable_cache(config)
        probes = step_cache_probe_blocks(diffusers_model, config, "diffusers") if self.exact_probe_blocks else ()
        compiled, backend = _compile_cached(wrapper, diffusers_model, self.asymrnr, compile, probes)

        def run(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
            current["timestep"] = float(timestep.reshape(-1)[0])
            if self.uncond_first:
                hidden_states, encoder_hidden_states, timestep = (
                    _swap_halves(t) for t in (hidden_states, encoder_hidden_states, timestep))
            with diffusers_model.cache_context(CACHE_CONTEXT):
                out = compiled(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                               timestep=timestep)
            return _swap_halves(out) if self.uncond_first else out

        def reset() -> None:
            # what a diffusers pipeline does at the end of every call (maybe_free_model_hooks)
            diffusers_model._reset_stateful_cache()
            if backend is not None:
                backend.reset()

        return AcceleratedTransformer(run, reset, backend)


def _compile_cached(wrapper: torch.nn.Module, blocks_owner: torch.nn.Module, asymrnr: AsymRnRConfig | None,
                    compile: bool, probe_blocks: tuple[str, ...] = ()) -> tuple[Callable[..., Any], Any]:
    """A step-cached transformer ``wrapper``, compiled: ``(callable, asymrnr backend or None)``.
    ``probe_blocks``: module paths in ``blocks_owner`` added to asymrnr's ``skip_blocks`` (the
    cache's probe blocks, left exact).

    Eager when ``compile`` is False (no asymrnr then: it runs only compiled); with Inductor as a
    whole (``fullgraph=False``: the cache's hooks break the graph on purpose) when ``asymrnr`` is
    None; else the repeated blocks of ``blocks_owner`` compiled alone with an asymrnr backend
    (:func:`asymrnr_compile.compile_repeated_blocks`), since a whole-model compile broken at the
    hooks leaves no graph holding both the grid and an attention site."""
    if not compile:
        if asymrnr is not None:
            raise ValueError("asymrnr runs only compiled: build(model, compile=False) of a stack with asymrnr")
        return wrapper, None
    if asymrnr is None:
        return torch.compile(wrapper, backend="inductor", fullgraph=False, dynamic=False,
                             isolate_recompiles=True), None
    from asymrnr_compile.backend import AsymRnRBackend
    from asymrnr_compile.regional import compile_repeated_blocks

    backend = AsymRnRBackend(with_probe_blocks(asymrnr, probe_blocks))
    compile_repeated_blocks(blocks_owner, backend=backend)
    return wrapper, backend


def _swap_halves(batch: torch.Tensor) -> torch.Tensor:
    """``[a, b] -> [b, a]`` along dim 0 (an even batch)."""
    first, second = batch.chunk(2)
    return torch.cat([second, first])


def first_block_cache(threshold: float) -> DiffusersCache:
    """diffusers' ``FirstBlockCacheConfig(threshold)``: when the first block's output residual
    changed by less than ``threshold`` (relative, mean absolute) since the last full step, reuse
    the last step's residual of the other blocks."""
    def make(_timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=threshold)

    return DiffusersCache(make)


def pyramid_attention_broadcast(skip_range: int, timestep_range: tuple[int, int] = (100, 800)) -> DiffusersCache:
    """diffusers' ``PyramidAttentionBroadcastConfig``: within ``timestep_range`` (on [0, 1000]),
    reuse each block's spatial attention output, recomputing it every ``skip_range`` steps (the
    values of diffusers' CogVideoX example: 2 and (100, 800))."""
    def make(timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=skip_range,
                                               spatial_attention_timestep_skip_range=timestep_range,
                                               current_timestep_callback=timestep)

    return DiffusersCache(make)


#: FasterCache's attention weight in diffusers' example (``attention_weight_callback``).
FASTER_CACHE_ATTENTION_WEIGHT = 0.3


def faster_cache(skip_range: int) -> DiffusersCache:
    """diffusers' ``FasterCacheConfig`` with the timestep ranges of its CogVideoX example, the
    spatial attention and the unconditional branch recomputed every ``skip_range`` steps
    (diffusers' example: 2)."""
    def make(timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import FasterCacheConfig

        return FasterCacheConfig(
            spatial_attention_block_skip_range=skip_range, spatial_attention_timestep_skip_range=(-1, 681),
            low_frequency_weight_update_timestep_range=(99, 641),
            high_frequency_weight_update_timestep_range=(-1, 301),
            unconditional_batch_skip_range=skip_range, unconditional_batch_timestep_skip_range=(-1, 781),
            attention_weight_callback=lambda _: FASTER_CACHE_ATTENTION_WEIGHT,
            current_timestep_callback=timestep, tensor_format="BFCHW")

    return DiffusersCache(make, uncond_first=True)


def taylorseer(cache_interval: int, disable_before_step: int = 3) -> DiffusersCache:
    """diffusers' ``TaylorSeerCacheConfig`` in lite mode: after ``disable_before_step`` full steps,
    compute the blocks every ``cache_interval`` steps and predict the output projection's input by
    a first-order Taylor expansion in between. (The default module patterns match no module of
    CogVideoX, whose attention modules are ``attn1``; lite mode's do.)"""
    def make(_timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(cache_interval=cache_interval, disable_cache_before_step=disable_before_step,
                                     max_order=1, taylor_factors_dtype=torch.float32, use_lite_mode=True)

    return DiffusersCache(make)


#: cache-dit's log level while this module imports it, unless ``CACHE_DIT_LOG_LEVEL`` is set: its
#: default ("info") logs every adapter, block and context it creates.
CACHE_DIT_LOG_LEVEL = "warning"
#: ``max_cached_steps`` / ``max_continuous_cached_steps`` value meaning "no limit" (cache-dit's -1).
NO_LIMIT = -1
#: Compute blocks ahead of the cache decision by default: the first block, as the first-block
#: cache does (cache-dit's default of 8 is more than the synthetic models' 4 blocks).
DEFAULT_COMPUTE_FIRST = 1
#: Full steps of every video before DBCache may skip one (cache-dit's default is 8 of 28+).
DEFAULT_WARMUP_STEPS = 4
#: Full steps beyond its order that cache-dit's TaylorSeer needs before it predicts: its state of
#: a stream is created at the first full step, after that step's counter advanced, so it counts
#: one step behind the context; it takes the first difference only at its own step 2
#: (``TaylorSeerState.derivative``: ``current_step > 1``), i.e. the video's step 3, and the n-th at
#: step n + 2. With fewer full steps the first skipped steps reuse the last residual as DBCache.
TAYLORSEER_EXTRA_WARMUP = 3


def _import_cache_dit():
    """``import cache_dit`` at :data:`CACHE_DIT_LOG_LEVEL` (unless ``CACHE_DIT_LOG_LEVEL`` is set);
    an ImportError naming the extra when it is not installed."""
    quiet = "CACHE_DIT_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["CACHE_DIT_LOG_LEVEL"] = CACHE_DIT_LOG_LEVEL
    try:
        import cache_dit
    except ImportError as error:
        raise ImportError("the cache-dit rows need cache-dit: pip install -e './lab[cachedit]'") from error
    if quiet:  # imported earlier (at its default level), its loggers exist already
        level = getattr(logging, CACHE_DIT_LOG_LEVEL.upper())
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if name.startswith("cache_dit") and isinstance(logger, logging.Logger):
                logger.setLevel(level)
    return cache_dit


def _check_int(name: str, value: object, minimum: int, *, allow: tuple[int, ...] = ()) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum and value not in allow:
        also = "".join(f" or {v}" for v in allow)
        raise ValueError(f"{name} must be >= {minimum}{also}, got {value}")


@dataclass(frozen=True)
class CacheDiT:
    """cache-dit's DBCache (Dual Block Cache), optionally with its TaylorSeer calibrator, on a copy
    of the model's transformer.

    Every model call runs the first ``compute_first`` blocks, then compares their output residual
    with the last full step's (relative mean absolute difference); under ``threshold`` the middle
    blocks are skipped and their last residual is reused (or, with ``taylorseer_order``, predicted
    by a Taylor expansion over the last full steps), then the last ``compute_last`` blocks run.
    The video and text streams are cached alike (both blocks' outputs, ``ForwardPattern.Pattern_0``).
    The batched CFG call counts as one step (``enable_separate_cfg=False``, as cache-dit sets for
    CogVideoX, whose pipeline batches CFG too).

    Attaches to the CogVideoX model's diffusers transformer (``cache_dit.enable_cache`` on
    ``model.transformer.model``; cache-dit's registered adapter for ``CogVideoX*``) and to the
    bundled :class:`~asymrnr_lab.models.ReferenceDiT` (a ``cache_dit.BlockAdapter`` over its
    ``blocks``); both in cache-dit's transformer-only mode, whose context persists across calls:
    ``reset()`` refreshes it (``cache_dit.refresh_context``), and so does a call whose timestep is
    above the previous call's (a new video started without a reset). ``stats()`` of the built
    transformer reports the steps skipped since the last reset.

    Attributes:
        threshold: DBCache's ``residual_diff_threshold`` (>= 0; 0 caches nothing).
        compute_first: ``Fn_compute_blocks`` (>= 1, default :data:`DEFAULT_COMPUTE_FIRST`).
        compute_last: ``Bn_compute_blocks`` (>= 0, default 0); ``compute_first + compute_last``
            must not exceed the model's blocks.
        warmup_steps: ``max_warmup_steps``: the first steps of every video always compute (>= 1,
            default :data:`DEFAULT_WARMUP_STEPS`).
        max_cached_steps: at most this many skipped steps per video (default :data:`NO_LIMIT`).
        max_continuous_cached_steps: at most this many skipped steps in a row (default
            :data:`NO_LIMIT`).
        taylorseer_order: None (default): reuse the last residual; n >= 1: cache-dit's
            ``TaylorSeerCalibratorConfig(taylorseer_order=n)`` predicts it.
        asymrnr: also reduce tokens with asymrnr (this config), compiling the repeated blocks
            with :func:`asymrnr_compile.compile_repeated_blocks` (a whole-model compile breaks the
            graph at cache-dit's per-step decision, so no graph would hold both the grid and an
            attention site); the steps cache-dit skips keep their place in asymrnr's matching
            windows (the layout hook counts the model's calls). None (default): Inductor, whole.
        exact_probe_blocks: with ``asymrnr``, leave the first ``compute_first`` blocks (whose
            output change DBCache compares) unreduced, as ``enable_asymrnr`` does by default, so
            that the cache skips the steps it skips alone. Default True.
    """

    threshold: float
    compute_first: int = DEFAULT_COMPUTE_FIRST
    compute_last: int = 0
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    max_cached_steps: int = NO_LIMIT
    max_continuous_cached_steps: int = NO_LIMIT
    taylorseer_order: int | None = None
    asymrnr: AsymRnRConfig | None = None
    exact_probe_blocks: bool = True

    def __post_init__(self) -> None:
        if self.asymrnr is not None and not isinstance(self.asymrnr, AsymRnRConfig):
            raise TypeError(f"asymrnr must be an AsymRnRConfig or None, got {type(self.asymrnr).__name__}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"threshold must be a float, got {type(self.threshold).__name__}")
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        _check_int("compute_first", self.compute_first, 1)
        _check_int("compute_last", self.compute_last, 0)
        _check_int("warmup_steps", self.warmup_steps, 1)
        _check_int("max_cached_steps", self.max_cached_steps, 0, allow=(NO_LIMIT,))
        _check_int("max_continuous_cached_steps", self.max_continuous_cached_steps, 1, allow=(NO_LIMIT,))
        if self.taylorseer_order is not None:
            _check_int("taylorseer_order", self.taylorseer_order, 1)
            needed = self.taylorseer_order + TAYLORSEER_EXTRA_WARMUP
            if self.warmup_steps < needed:
                raise ValueError(
                    f"TaylorSeer of order {self.taylorseer_order} needs warmup_steps >= {needed}, got "
                    f"{self.warmup_steps}: cache-dit's calibrator takes its first difference at a video's step 3, "
                    f"so with fewer full steps the first skipped steps reuse the last residual as plain DBCache")

    def configs(self) -> tuple[Any, Any]:
        """cache-dit's ``(DBCacheConfig, TaylorSeerCalibratorConfig or None)`` of these settings."""
        cache_dit = _import_cache_dit()
        cache = cache_dit.DBCacheConfig(
            Fn_compute_blocks=self.compute_first, Bn_compute_blocks=self.compute_last,
            residual_diff_threshold=float(self.threshold), max_warmup_steps=self.warmup_steps,
            max_cached_steps=self.max_cached_steps, max_continuous_cached_steps=self.max_continuous_cached_steps,
            enable_separate_cfg=False)
        calibrator = None if self.taylorseer_order is None else cache_dit.TaylorSeerCalibratorConfig(
            taylorseer_order=self.taylorseer_order)
        return cache, calibrator

    def build(self, model: torch.nn.Module, *, compile: bool = True) -> AcceleratedTransformer:
        """The cached copy, compiled with Inductor (default, ``fullgraph=False``: cache-dit decides
        per step in eager code) or eager (``compile=False``, e.g. for ``FlopCounterMode``).

        Raises ImportError without cache-dit, TypeError for a transformer that is neither a
        diffusers model cache-dit has an adapter for nor a ReferenceDiT (:func:`cache_dit_problem`
        says which), and ValueError when ``compute_first + compute_last`` exceeds its blocks.
        """
        from asymrnr_lab.models import ReferenceDiT

        cache_dit = _import_cache_dit()
        problem = cache_dit_problem(model)
        if problem:
            raise TypeError(problem)
        wrapper = copy.deepcopy(model.transformer)
        if isinstance(wrapper, ReferenceDiT):
            target, blocks = wrapper, wrapper.blocks
            attach: Any = cache_dit.BlockAdapter(transformer=wrapper, blocks=wrapper.blocks,
                                                 forward_pattern=cache_dit.ForwardPattern.Pattern_0,
                                                 check_forward_pattern=True, has_separate_cfg=False)
        else:
            target = attach = wrapper.model
            blocks = cache_dit.get_adapter(target).blocks
        if self.compute_first + self.compute_last > len(blocks):
            raise ValueError(
                f"compute_first + compute_last ({self.compute_first} + {self.compute_last}) exceeds the "
                f"model's {len(blocks)} blocks")
        cache, calibrator = self.configs()
        cache_dit.enable_cache(attach, cache_config=cache, calibrator_config=calibrator)
        probes: tuple[str, ...] = ()
        if self.exact_probe_blocks:  # a BlockAdapter's blocks are named; an adapter's found by cache-dit
            probes = step_cache_probe_blocks(target, cache, "cache-dit", blocks=blocks if target is wrapper else None)
        compiled, backend = _compile_cached(wrapper, target, self.asymrnr, compile, probes)
        last = {"timestep": float("inf")}

        def context() -> Any:
            (name,) = target._context_names
            return target._context_manager.get_context(name)

        def reset() -> None:
            cache_dit.refresh_context(target)
            last["timestep"] = float("inf")
            if backend is not None:
                backend.reset()

        def run(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
            now = float(timestep.reshape(-1)[0])
            if now > last["timestep"]:
                reset()
            last["timestep"] = now
            return compiled(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                            timestep=timestep)

        def stats() -> dict[str, Any]:
            current = context()
            return {"steps": current.transformer_executed_steps, "cached_steps": current.get_cached_steps(),
                    "residual_diffs": {int(step): diff for step, diff in current.get_residual_diffs().items()}}

        return AcceleratedTransformer(run, reset, backend, stats=stats)


def cache_dit_problem(model: torch.nn.Module) -> str:
    """Why :class:`CacheDiT` cannot attach to ``model``'s transformer; ``""`` when it can.

    It attaches to a :class:`~asymrnr_lab.models.ReferenceDiT` (through a ``BlockAdapter``) and to
    a wrapper whose ``.model`` is a diffusers transformer cache-dit has a registered adapter for
    (CogVideoX's, through ``cache_dit.enable_cache``); it needs cache-dit installed.
    """
    from asymrnr_lab.models import ReferenceDiT

    try:
        cache_dit = _import_cache_dit()
    except ImportError as error:
        return str(error)
    transformer = model.transformer
    if isinstance(transformer, ReferenceDiT):
        return ""
    inner = getattr(transformer, "model", None)
    if isinstance(inner, torch.nn.Module) and cache_dit.BlockAdapterRegister.is_supported(inner):
        return ""
    around = "" if inner is None else f" around {type(inner).__name__}"
    return (f"cache-dit attaches to a ReferenceDiT or to a diffusers transformer it has an adapter for "
            f"(arch='cogvideox'); this model's transformer is {type(transformer).__name__}{around}")


def dbcache(threshold: float, warmup_steps: int = DEFAULT_WARMUP_STEPS, **settings: Any) -> CacheDiT:
    """cache-dit's DBCache alone, ``F1B0`` by default: after ``warmup_steps`` full steps, skip the
    blocks after the first while the first block's output residual changed by less than
    ``threshold`` since the last full step. ``settings``: the other fields of :class:`CacheDiT`."""
    return CacheDiT(threshold, warmup_steps=warmup_steps, **settings)


def cache_dit_taylorseer(order: int, threshold: float, warmup_steps: int | None = None,
                         **settings: Any) -> CacheDiT:
    """cache-dit's DBCache with its TaylorSeer calibrator of ``order``: DBCache decides which
    steps to skip (``threshold``, ``warmup_steps``: see :func:`dbcache`), and on those a Taylor
    expansion over the last full steps predicts the skipped blocks' residual instead of reusing
    the last one. ``warmup_steps`` None (default): :data:`DEFAULT_WARMUP_STEPS` or the
    ``order + TAYLORSEER_EXTRA_WARMUP`` the calibrator needs, whichever is more. ``settings``: the
    other fields of :class:`CacheDiT`."""
    if warmup_steps is None:
        warmup_steps = max(DEFAULT_WARMUP_STEPS, order + TAYLORSEER_EXTRA_WARMUP) if isinstance(order, int) \
            else DEFAULT_WARMUP_STEPS
    return CacheDiT(threshold, warmup_steps=warmup_steps, taylorseer_order=order, **settings)

