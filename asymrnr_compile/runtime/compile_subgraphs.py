"""Compilation subgraph by subgraph with Inductor: a graph split at its attention calls
(:func:`~asymrnr_compile.passes.split_at_attention.split_at_attention`), every attention subgraph
and every subgraph between them compiled on its own, once per distinct code and input layout, and
shared between variants. (Not regional compilation, :mod:`asymrnr_compile.regional`, which
compiles one transformer block per graph.)

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

from asymrnr_compile.passes.split_at_attention import split_at_attention

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


#: The Inductor option a ``torch.compile`` mode turns on for CUDA graphs ("reduce-overhead",
#: "max-autotune").
CUDAGRAPHS_OPTION = "triton.cudagraphs"


def mode_uses_cudagraphs(mode: str | None) -> bool:
    """Whether ``torch.compile(mode=...)`` asks Inductor for CUDA graphs."""
    from torch._inductor import list_mode_options

    return bool(mode) and bool(list_mode_options(mode).get(CUDAGRAPHS_OPTION))


def inductor_compiler(gm: torch.fx.GraphModule, mode: str | None = None, *, cudagraphs: bool = True) -> Compiler:
    """``compile_fx`` for ``gm`` and for graphs derived from it (rewrites, subgraphs).

    Dynamo hands a backend a tracing context holding its fake-tensor mode, and ``compile_fx``
    traces with it. The runtime compiles variants and subgraphs later, at call time, where no such
    context exists: ``compile_fx`` would then make a fake mode without a shape environment, in
    which (1) ops with data-dependent output shapes (``nonzero``, as in Mochi's attention over
    its unpadded text) cannot be traced, and (2) Inductor's FX graph cache is bypassed ("No
    shape env"), so identical subgraphs of different blocks and variants never hit it. Outside a
    tracing context the returned function therefore compiles under Dynamo's fake mode (taken
    from the graph's example values), with the inputs made fake with static shapes (the graph
    was captured with ``dynamic=False``). ``mode`` (e.g. ``"max-autotune"``) is forwarded to
    Inductor for these compilations only; with ``cudagraphs=False`` without the CUDA graphs it
    may ask for (:func:`mode_uses_cudagraphs`).

    Every subgraph is also made cacheable by AOTAutograd's cache, so that a warm start (a new
    process with the same Inductor cache) skips AOT tracing as well as Inductor: the subgraphs'
    placeholders get the example values AOTAutograd checks for (:func:`_describe_placeholders`),
    and this package's graph functions are marked cacheable (:func:`_cacheable_ops`).
    """
    from torch._guards import TracingContext, tracing
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    mode_patches = dict(list_mode_options(mode)) if mode else {}
    if not cudagraphs:  # explicitly off: also overrides a global torch._inductor.config setting
        mode_patches[CUDAGRAPHS_OPTION] = False
    patches = {**mode_patches, "unsafe_marked_cacheable_functions": {
        **torch._inductor.config.unsafe_marked_cacheable_functions, **_cacheable_ops()}}
    fake_mode = _dynamo_fake_mode(gm)
    if fake_mode is None or fake_mode.shape_env is None:
        return functools.partial(compile_fx, config_patches=patches)

    def compile_graph(graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        if TracingContext.try_get() is not None:  # inside Dynamo's backend call
            _describe_placeholders(graph, example_inputs)
            return compile_fx(graph, list(example_inputs), config_patches=patches)
        with tracing(TracingContext(fake_mode)):
            fake_inputs = [fake_mode.from_tensor(x, static_shapes=True) if isinstance(x, torch.Tensor) else x
                           for x in example_inputs]
            _describe_placeholders(graph, fake_inputs)
            return compile_fx(graph, fake_inputs, config_patches=patches)

    return compile_graph


@functools.lru_cache(maxsize=1)
def _cacheable_ops() -> dict[str, str]:
    """The functions of :mod:`asymrnr_compile.ops` that rewritten graphs call (``reduce_tokens``,
    ``ReductionIndices``...), each mapped to a hash of the ops package's source.

    AOTAutograd's cache bypasses a graph that calls a Python function it does not know (its
    behaviour is not in the cache key). Inductor's ``unsafe_marked_cacheable_functions`` names
    such functions with a key that goes into the cache key instead: the hash of every source file
    of the package, so that any change to the ops invalidates the cached graphs that call them.
    """
    import hashlib
    from pathlib import Path

    from asymrnr_compile import ops

    digest = hashlib.sha256()
    for path in sorted(Path(ops.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    key = f"asymrnr_compile.ops/{digest.hexdigest()[:32]}"
    names = {}
    for name in ops.__all__:
        value = getattr(ops, name)
        module = getattr(value, "__module__", None) or ""
        if callable(value) and module.startswith("asymrnr_compile.ops") and hasattr(value, "__name__"):
            names[f"{module}.{value.__name__}"] = key
    return names


def _describe_placeholders(graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Give ``graph``'s placeholders that have none the example value (a fake tensor) of their
    input. Placeholders that carry a value made by a rewrite pass have none, and AOTAutograd's
    cache bypasses a graph calling a method on a node without one ("Unsupported call_method")."""
    from torch._subclasses.fake_tensor import FakeTensor

    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    for node, value in zip(placeholders, example_inputs):
        if "example_value" not in node.meta and isinstance(value, FakeTensor):
            node.meta["example_value"] = value


def _input_signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type,
                value.requires_grad)
    return ("value", type(value).__name__, value if isinstance(value, (int, float, bool)) else None)


class SubgraphCompiler:
    """Compiles subgraphs with Inductor, once per distinct code and input layout.

    Variants share the subgraphs between their attention calls (that code is the same in every
    variant), so only the attention subgraphs of a new plan are compiled. Structurally identical
    subgraphs of different blocks also hit Inductor's FX graph cache.

    Attributes:
        compiled: the compiled functions, by ``(code, input signature)``.
        seconds: total time spent compiling.
        reused: how many times an already compiled subgraph was handed out again.
    """

    def __init__(self, compile_graph: Compiler) -> None:
        self.compile_graph = compile_graph
        self.compiled: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = {}
        self.seconds = 0.0
        self.reused = 0

    def get(self, subgraph: torch.fx.GraphModule, args: Sequence[Any]) -> Callable[..., Any]:
        """The compiled function of ``subgraph`` for inputs laid out like ``args``."""
        key = (subgraph.code, tuple(_input_signature(a) for a in args))
        fn = self.compiled.get(key)
        if fn is None:
            start = time.perf_counter()
            fn = self.compiled[key] = self.compile_graph(subgraph, list(args))
            self.seconds += time.perf_counter() - start
        else:
            self.reused += 1
        return fn


class CompiledSubgraph(torch.nn.Module):
    """Stands in for one submodule of a split graph; compiles it on its first call."""

    def __init__(self, subgraph: torch.fx.GraphModule, compiler: SubgraphCompiler) -> None:
        super().__init__()
        self.subgraph = subgraph
        self.compiler = compiler
        self.fn: Callable[..., Any] | None = None

    def forward(self, *args: Any) -> Any:
        if self.fn is None:
            self.fn = self.compiler.get(self.subgraph, args)
        return self.fn(*args)


def compile_subgraphs(gm: torch.fx.GraphModule, compiler: SubgraphCompiler) -> torch.fx.GraphModule:
    """``gm`` split at its attention calls into subgraphs
    (:func:`~asymrnr_compile.passes.split_at_attention.split_at_attention`), each compiled by
    ``compiler`` on its first call. Returns the driver: same inputs and outputs as ``gm``."""
    split = split_at_attention(gm)
    for name in [*split.attention_submodules, *split.between_submodules]:
        setattr(split.driver, name, CompiledSubgraph(getattr(split.driver, name), compiler))
    return split.driver
