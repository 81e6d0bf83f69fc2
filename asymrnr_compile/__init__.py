"""asymrnr_compile: AsymRnR token reduction for video diffusion transformers, as a
``torch.compile`` backend (``torch.compile(model, backend="asymrnr", options={...})``).

Public API: :class:`AsymRnRConfig`, :class:`AsymRnRBackend`, :class:`AsymRnRReport`,
:func:`last_backend`, :class:`MatchingRecord` (what an ``on_matching`` observer receives),
:class:`Schedule`, :func:`profile` (redundancy profiling),
:class:`RedundancyProfile`, :func:`calibrate` (a schedule for a target speedup),
:func:`compile_repeated_blocks` (regional compilation: each repeated block compiled once, the
grid and step from the model's calls; :func:`apply_token_layout_hook`, :class:`InputLayout`),
:func:`video` (a video scope: one video's steps and matchings, :class:`VideoScope`),
:func:`enable_asymrnr` / :func:`disable_asymrnr` (a diffusers pipeline compiled with asymrnr,
each pipeline call one video scope; ``step_cache=`` stacks a step cache, :class:`CacheDiTConfig`
for cache-dit's with a calibrator). They load
lazily, so that ``import asymrnr_compile.ops`` stays light.
Importing this package does not register the backend: the ``torch_dynamo_backends`` entry point
does (registering twice would raise "duplicate name" in torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AsymRnRBackend": "asymrnr_compile.backend",
    "AsymRnRReport": "asymrnr_compile.backend",
    "last_backend": "asymrnr_compile.backend",
    "MatchingRecord": "asymrnr_compile.runtime",
    "AsymRnRConfig": "asymrnr_compile.config",
    "Schedule": "asymrnr_compile.plan.schedule",
    "profile": "asymrnr_compile.profiling",
    "RedundancyProfile": "asymrnr_compile.profiling",
    "calibrate": "asymrnr_compile.profiling",
    "compile_repeated_blocks": "asymrnr_compile.regional",
    "apply_token_layout_hook": "asymrnr_compile.regional",
    "InputLayout": "asymrnr_compile.regional",
    "video": "asymrnr_compile.runtime.video_scope",
    "VideoScope": "asymrnr_compile.runtime.video_scope",
    "enable_asymrnr": "asymrnr_compile.pipelines",
    "disable_asymrnr": "asymrnr_compile.pipelines",
    "CacheDiTConfig": "asymrnr_compile.pipelines",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asymrnr_compile' has no attribute {name!r}")
