"""Regional compilation with Inductor: every attention region and every segment between them is
compiled on its own, once per distinct code and input layout, and shared between variants.

Used by the backend's runtime (one driver per compiled variant) and by the profiler (one driver
per profiled graph). :func:`inductor_compiler` makes the ``compile_fx`` call that works both
inside Dynamo's backend call and later, at call time, when a new variant is needed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from asymrnr_compile.passes.split_attention_regions import split_attention_regions

Compiler = Callable[[torch.fx.GraphModule, Sequence[Any]], Callable[..., Any]]
"""Compiles a graph module for given example inputs (``compile_fx``)."""


def _dynamo_fake_mode(gm: torch.fx.GraphModule) -> Any:
    """The fake-tensor mode Dynamo traced ``gm`` with (from the nodes' example values), or None."""
    from torch._subclasses.fake_tensor import FakeTensor

    for node in gm.graph.nodes:
        value = node.meta.get("example_value", node.meta.get("val"))
        if isinstance(value, FakeTensor):
            return value.fake_mode
    return None


def inductor_compiler(gm: torch.fx.GraphModule, mode: str | None = None) -> Compiler:
    """``compile_fx`` for ``gm`` and for graphs derived from it (rewrites, regions).

    Dynamo hands a backend a tracing context holding its fake-tensor mode, and ``compile_fx``
    traces with it. The runtime compiles variants and regions later, at call time, where no such
    context exists: ``compile_fx`` would then make a fake mode without a shape environment, in
    which (1) ops with data-dependent output shapes (``nonzero``, as in Mochi's attention over
    its unpadded text) cannot be traced, and (2) Inductor's FX graph cache is bypassed ("No
    shape env"), so identical regions of different blocks and variants never hit it. Outside a
    tracing context the returned function therefore compiles under Dynamo's fake mode (taken
    from the graph's example values), with the inputs made fake with static shapes (the graph
    was captured with ``dynamic=False``). ``mode`` (e.g. ``"max-autotune"``) is forwarded to
    Inductor for these compilations only.
    """
    from torch._guards import TracingContext, tracing
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    patches = list_mode_options(mode) if mode else None
    fake_mode = _dynamo_fake_mode(gm)
    if fake_mode is None or fake_mode.shape_env is None:
        return functools.partial(compile_fx, config_patches=patches)

    def compile_graph(graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        if TracingContext.try_get() is not None:  # inside Dynamo's backend call
            return compile_fx(graph, list(example_inputs), config_patches=patches)
        with tracing(TracingContext(fake_mode)):
            fake_inputs = [fake_mode.from_tensor(x, static_shapes=True) if isinstance(x, torch.Tensor) else x
                           for x in example_inputs]
            return compile_fx(graph, fake_inputs, config_patches=patches)

    return compile_graph


def _input_signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type,
                value.requires_grad)
    return ("value", type(value).__name__, value if isinstance(value, (int, float, bool)) else None)


class RegionCompiler:
    """Compiles graph regions with Inductor, once per distinct code and input layout.

    Variants share their segments (the code between attention regions is the same in every
    variant), so only the attention regions of a new plan are compiled. Structurally identical
    segments of different blocks also hit Inductor's FX graph cache.

    Attributes:
        seconds: total time spent compiling.
        reused: how many times an already compiled region was handed out again.
    """

    def __init__(self, compile_graph: Compiler) -> None:
        self.compile_graph = compile_graph
        self.compiled: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = {}
        self.seconds = 0.0
        self.reused = 0

    def get(self, region: torch.fx.GraphModule, args: Sequence[Any]) -> Callable[..., Any]:
        """The compiled function of ``region`` for inputs laid out like ``args``."""
        key = (region.code, tuple(_input_signature(a) for a in args))
        fn = self.compiled.get(key)
        if fn is None:
            start = time.perf_counter()
            fn = self.compiled[key] = self.compile_graph(region, list(args))
            self.seconds += time.perf_counter() - start
        else:
            self.reused += 1
        return fn


class CompiledRegion(torch.nn.Module):
    """Stands in for one submodule of a split graph; compiles it on its first call."""

    def __init__(self, region: torch.fx.GraphModule, compiler: RegionCompiler) -> None:
        super().__init__()
        self.region = region
        self.compiler = compiler
        self.fn: Callable[..., Any] | None = None

    def forward(self, *args: Any) -> Any:
        if self.fn is None:
            self.fn = self.compiler.get(self.region, args)
        return self.fn(*args)


def compile_regions(gm: torch.fx.GraphModule, compiler: RegionCompiler) -> torch.fx.GraphModule:
    """``gm`` split into attention regions and segments
    (:func:`~asymrnr_compile.passes.split_attention_regions.split_attention_regions`), each
    compiled by ``compiler`` on its first call. Returns the driver: same inputs and outputs as
    ``gm``."""
    split = split_attention_regions(gm)
    for name in [*split.attention_submodules, *split.segment_submodules]:
        setattr(split.driver, name, CompiledRegion(getattr(split.driver, name), compiler))
    return split.driver
