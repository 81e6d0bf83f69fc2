"""Which graphs are recompiles of an earlier one of the same sampling loop (outside a video
scope, a recompile mid-video continues the video's steps and matchings, see
:class:`~asymrnr_compile.runtime.video_state.VideoStates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import CodeType
from typing import Any

import torch

from asymrnr_compile.plan.select_sites import SiteReduction


def video_state_key(example_inputs: Sequence[Any], reductions: Sequence[SiteReduction], *,
                     regional: bool) -> tuple[CodeType | None, tuple[Any, ...]]:
    """What makes a graph a recompile of an earlier one of the same sampling loop: the code
    object Dynamo is compiling (the same for every recompile of a function), and then the
    input shapes and the reduced sites with their kept counts. ``(None, key)`` outside a Dynamo
    compile (the backend called directly): nothing is shared.

    Outside a video scope, a recompile mid-video (a guard failed: a new stride, a Python flag)
    then continues the video's steps and matchings instead of starting at step 0 with a matching
    of its own. Inside a scope the scope holds the step, and this is not needed."""
    shapes = tuple(tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                   for value in example_inputs)
    sites = tuple((r.site.index, r.site.video_tokens, tuple(sorted(r.num_keep.items()))) for r in reductions)
    return compiling_code(), (regional, shapes, sites)


def compiling_code() -> CodeType | None:
    """The code object Dynamo is compiling now, or None (not inside a Dynamo compile)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        translator = InstructionTranslator.current_tx()
    except (ImportError, AttributeError, IndexError, AssertionError):
        return None
    code = getattr(translator, "f_code", None)
    return code if isinstance(code, CodeType) else None


def has_compiled_entries(code: CodeType) -> bool:
    """Whether Dynamo's cache holds compiled entries for ``code``: a compile while it does is a
    recompile (a guard failed); without any, the first compile since Dynamo started or since
    ``torch._dynamo.reset()`` (nothing of an earlier video may be continued then)."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    except ImportError:  # another torch: never share rather than share a stale state
        return False
    return bool(_debug_get_cache_entry_list(code))
