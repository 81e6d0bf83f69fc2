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
  not the bundled ReferenceDiT.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from asymrnr_compile.config import AsymRnRConfig

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
    """

    fn: Callable[..., torch.Tensor]
    reset: Callable[[], None] = _no_reset
    backend: Any = None

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
    """

    make_config: Callable[[Callable[[], float]], Any]
    uncond_first: bool = False
    asymrnr: AsymRnRConfig | None = None

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
        diffusers_model.enable_cache(self.make_config(lambda: current["timestep"]))
        backend = None
        if not compile:
            if self.asymrnr is not None:
                raise ValueError("asymrnr runs only compiled: build(model, compile=False) of a stack with asymrnr")
            compiled = wrapper
        elif self.asymrnr is None:
            compiled = torch.compile(wrapper, backend="inductor", fullgraph=False, dynamic=False,
                                     isolate_recompiles=True)
        else:
            from asymrnr_compile.backend import AsymRnRBackend
            from asymrnr_compile.regional import compile_repeated_blocks

            backend = AsymRnRBackend(self.asymrnr)
            compile_repeated_blocks(diffusers_model, backend=backend)
            compiled = wrapper

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
