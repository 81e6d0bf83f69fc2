"""The runtime: what runs when the compiled model is called.

- :mod:`~asymrnr_compile.runtime.steps`: timestep -> denoising step, call in step, new video.
- :mod:`~asymrnr_compile.runtime.matching_cache`: matchings kept for a cache window, and the
  :class:`~asymrnr_compile.runtime.matching_cache.MatchingRecord` an observer receives.
- :mod:`~asymrnr_compile.runtime.compile_subgraphs`: Inductor compilation of a graph split at
  its attention calls, subgraph by subgraph, shared by variants (and by the profiler).
- :mod:`~asymrnr_compile.runtime.video_scope`: the video scope, one video's step counter and
  states, set by the loop or a pipeline (:func:`~asymrnr_compile.runtime.video_scope.video`).
- :mod:`~asymrnr_compile.runtime.video_state`: one caller's :class:`VideoState` (steps,
  matchings, splits) and the :class:`VideoStates` of a graph's callers outside a video scope.
- :mod:`~asymrnr_compile.runtime.model_instances`: which model instance makes a call (its first
  parameter object).
- :mod:`~asymrnr_compile.runtime.plan_call`: the :class:`ReductionPlan` of one call.
- :mod:`~asymrnr_compile.runtime.token_splits`: the dst/src splits and the extra inputs of a variant.
- :mod:`~asymrnr_compile.runtime.variants`: :class:`CompiledVariant`, one per distinct plan, and
  the fallback (the graph compiled unchanged).
- :mod:`~asymrnr_compile.runtime.runtime`: :class:`AsymRnRRuntime`, the callable returned to
  Dynamo: one compiled variant per distinct plan.
"""

from asymrnr_compile.runtime.matching_cache import MatchingCache, MatchingRecord
from asymrnr_compile.runtime.runtime import AsymRnRRuntime
from asymrnr_compile.runtime.steps import StepEvent, StepSignal, StepTracker
from asymrnr_compile.runtime.variants import CompiledVariant
from asymrnr_compile.runtime.video_scope import VideoScope, current_video, video

__all__ = ["AsymRnRRuntime", "CompiledVariant", "MatchingCache", "MatchingRecord", "StepEvent", "StepSignal",
           "StepTracker", "VideoScope", "current_video", "video"]
