"""What a compiled block learns from the whole model's call: grid, step signal, which block it is.

Under regional compilation each repeated transformer block is compiled on its own, and one
compiled graph serves every block of its class. The block graph cannot see the model's input:
not the video grid (it has no patch embedding), not the timestep (blocks get a time embedding),
not which block is calling it. A forward pre-hook on the whole model
(:mod:`asymrnr_compile.regional.hooks`) opens a :class:`ForwardContext` for the duration of each
model call; the backend reads it when it analyses a block graph, and the runtime on every call:

- ``layout``: the video token grid (and text length) of this call, from the model's input;
- ``timestep``: the step signal of this call, read once from the model's timestep argument;
- :meth:`ForwardContext.claim_sites`: the position of a graph call's first attention among all
  attention calls of the model call so far. Blocks run in a fixed order, so this offset names
  the block instance (its matching cache, splits and seeds) and equals the global index the same
  attention has under whole-model compilation. A named block (see ``block``) starts from the
  place it had in the first call that ran it, so the blocks after the ones a step cache skipped
  keep their indices (:meth:`ForwardContext.enter_block`).
- ``block``: the block instance running now (its module path and index), set by
  :class:`EnterBlock`, the wrapper :func:`~asymrnr_compile.compile_repeated_blocks` puts around
  each block's compiled call: what ``skip_blocks`` is matched against.

Contexts are per thread (two threads calling one model each have their own) and nest (a model
called inside another model's forward restores the outer context on exit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.analysis.site_names import block_of_path
from asymrnr_compile.runtime.steps import StepEvent


@dataclass(frozen=True)
class BlockCall:
    """Which block instance of the model a compiled block call is.

    Attributes:
        path: the block's module path in the model (``"transformer_blocks.3"``), as
            ``AttentionSite.block`` names it under whole-model compilation.
        index: the integer in that path (``3``), as ``AttentionSite.block_index``; None when the
            path has none.
    """

    path: str
    index: int | None

    @classmethod
    def from_path(cls, path: str) -> BlockCall:
        """The block of the module at ``path``: up to and including its first integer part, as
        the analysis names the block of a node (``"blocks.3.attn"`` -> ``("blocks.3", 3)``)."""
        block, index = block_of_path(path)
        return cls(path, None) if block is None else cls(block, index)

    def is_in(self, blocks: tuple[int | str, ...]) -> bool:
        """Whether ``blocks`` (``AsymRnRConfig.skip_blocks``: indices and module paths) names this one."""
        return any((isinstance(block, int) and not isinstance(block, bool) and block == self.index)
                   or (isinstance(block, str) and block == self.path) for block in blocks)


@dataclass(eq=False)
class ForwardContext:
    """One call of the whole model, as its compiled blocks see it.

    Attributes:
        layout: the declared video layout of this call (grid ``(F, H, W)`` and text tokens).
        timestep: the step signal of this call (the timestep argument read as a float, its
            maximum for per-token timesteps), or None when the model call had none.
        sites_seen: attention calls claimed so far in this model call (see :meth:`claim_sites`).
        event: the step of this model call, counted over the model's calls (the layout hook's
            :class:`~asymrnr_compile.runtime.steps.StepTracker`), or None. Blocks read it instead
            of counting their own calls: a step cache that skips blocks at some steps (diffusers'
            first-block cache, cache-dit's DBCache) must not shift their steps and matching windows.
        video: which video of the model this call belongs to (a number unique in the process, new
            whenever ``event.new_video``), or None with ``event``.
        first_step_calls: calls of the video's first two steps, once known (``StepTracker``):
            more in the first than the second means a warm-up call at the first timestep.
        restart: makes this call the first of a new video in the hook's count (after
            ``backend.reset()``), updating ``event`` and ``video``; None without a hook.
        block: the block instance whose compiled call runs now (:class:`EnterBlock`), or None
            (between blocks, or blocks compiled without the wrapper).
        block_offsets: the global index of the first attention of each named block, by block path,
            learned in the first model call that ran the block (the layout hook shares one dict
            over the model's calls; see :meth:`enter_block`). Default: a new dict.
        blocks_entered: the block paths entered in this model call.
    """

    layout: DeclaredLayout
    timestep: float | None = None
    sites_seen: int = field(default=0)
    event: StepEvent | None = None
    video: int | None = None
    first_step_calls: tuple[int, ...] = ()
    restart: Callable[[], None] | None = field(default=None, repr=False)
    block: BlockCall | None = None
    block_offsets: dict[str, int] = field(default_factory=dict, repr=False)
    blocks_entered: set[str] = field(default_factory=set, repr=False)

    def enter_block(self, block: BlockCall) -> None:
        """``block`` starts running: its attention calls are numbered from the place the block
        had when it first ran, not from the count of this call. A step cache that skips the
        middle blocks of a call (cache-dit's DBCache with ``Bn_compute_blocks > 0``) then leaves
        the blocks after them at their own global indices, matching caches and splits, as a
        whole-model graph numbers them. The first run of a block (and a second run of a block in
        the same model call) continues the count."""
        known = self.block_offsets.get(block.path)
        if known is not None and block.path not in self.blocks_entered:
            self.sites_seen = known
        elif known is None:
            self.block_offsets[block.path] = self.sites_seen
        self.blocks_entered.add(block.path)
        self.block = block

    def claim_sites(self, count: int) -> int:
        """Record that a graph with ``count`` attention calls runs now; returns the global index
        of its first one (the number claimed before it in this model call)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        offset = self.sites_seen
        self.sites_seen += count
        return offset


_local = threading.local()


def current_forward() -> ForwardContext | None:
    """The calling thread's innermost open :class:`ForwardContext`, or None outside any."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def open_forward(context: ForwardContext) -> None:
    """Make ``context`` the calling thread's current one (until :func:`close_forward`)."""
    if not isinstance(context, ForwardContext):
        raise TypeError(f"context must be a ForwardContext, got {type(context).__name__}")
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(context)


def close_forward(context: ForwardContext) -> None:
    """Close ``context`` and any context opened after it and left open (a model call that
    raised before its own close); a context that is not open is ignored."""
    stack = getattr(_local, "stack", None)
    if stack and any(open_ is context for open_ in stack):
        while stack:
            if stack.pop() is context:
                break


class ClaimSites:
    """A graph compiled unchanged inside a model call (e.g. a text-only token refiner compiled
    regionally): it runs as compiled and still claims its ``count`` attention calls in the
    current model call, so that the blocks after it get the same global site indices as under
    whole-model compilation.

    Args:
        fn: the compiled graph.
        count: its attention (SDPA) calls.
        owner: an object to keep alive as long as this graph is (the backend). Default None.
        on_outputs: called with the outputs of every call (the backend records those that carry
            video tokens into a later graph). Default None.
    """

    def __init__(self, fn: Callable[..., Any], count: int, owner: object | None = None,
                 on_outputs: Callable[[Any], None] | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        if on_outputs is not None and not callable(on_outputs):
            raise TypeError(f"on_outputs must be callable, got {type(on_outputs).__name__}")
        self.fn = fn
        self.count = count
        self.owner = owner
        self.on_outputs = on_outputs

    def __call__(self, *args: Any) -> Any:
        context = current_forward()
        if context is not None:
            context.claim_sites(self.count)
        outputs = self.fn(*args)
        if self.on_outputs is not None:
            self.on_outputs(outputs)
        return outputs


class EnterBlock:
    """A block's compiled call that says which block it is: for its duration the current
    :class:`ForwardContext`'s ``block`` is ``block`` (the previous value is restored after, also
    when the call raises), and its attention calls are numbered from the block's own place
    (:meth:`ForwardContext.enter_block`). Outside a model call it only calls ``fn``.

    Args:
        fn: the block's compiled call (``module._compiled_call_impl``).
        block: the block instance.
    """

    def __init__(self, fn: Callable[..., Any], block: BlockCall) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(block, BlockCall):
            raise TypeError(f"block must be a BlockCall, got {type(block).__name__}")
        self.fn = fn
        self.block = block

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        context = current_forward()
        if context is None:
            return self.fn(*args, **kwargs)
        previous = context.block
        context.enter_block(self.block)
        try:
            return self.fn(*args, **kwargs)
        finally:
            context.block = previous


@contextmanager
def forward_scope(context: ForwardContext) -> Iterator[ForwardContext]:
    """``with forward_scope(ctx):`` opens ``ctx`` for the block, and closes it even on error."""
    open_forward(context)
    try:
        yield context
    finally:
        close_forward(context)


__all__ = ["BlockCall", "ClaimSites", "EnterBlock", "ForwardContext", "close_forward", "current_forward",
           "forward_scope", "open_forward"]
