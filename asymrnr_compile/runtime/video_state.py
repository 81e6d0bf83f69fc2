"""One caller's video state (steps, matchings, splits), and the states of a graph's callers
outside a video scope.

Inside a video scope (:mod:`~asymrnr_compile.runtime.video_scope`) the scope holds the states;
outside one, each runtime reads them from its :class:`VideoStates`.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import torch

from asymrnr_compile import ops
from asymrnr_compile.runtime.matching_cache import MatchingCache
from asymrnr_compile.runtime.model_instances import PerModelInstance
from asymrnr_compile.runtime.steps import StepTracker
from asymrnr_compile.vocabulary import Feature

#: ``VideoState.video`` after :meth:`VideoState.reset`: the next model call starts a new video.
RESET_VIDEO = -1


@dataclass(eq=False)
class VideoState:
    """What one caller's sampling loop builds up: its steps, matchings and splits.

    Each thread calling a compiled model has its own (two threads sampling two videos through one
    model do not share steps or matchings); compiled variants are shared. Under regional
    compilation each block instance has its own too, named by ``site_offset``: the global index
    of its first attention call in the model call (0 for a whole-model graph), which the split
    seeds add to the graph's own site indices.

    Attributes:
        tracker: timestep -> step of this caller (outside a video scope).
        cache: the matchings kept for their cache window.
        splits: per ``(site index, feature)`` the ``(window, split)`` drawn last
            (:mod:`~asymrnr_compile.runtime.token_splits`).
        matching_steps: the steps of the current video at which a matching was computed.
        site_offset: global index of the block instance's first attention call. Default 0.
        video: under regional compilation outside a video scope, the model call's video
            (``ForwardContext.video``) this state holds; :data:`RESET_VIDEO` after :meth:`reset`;
            None otherwise.
        forgot_warmup_call: the matchings computed on a warm-up call were dropped in this video.
    """

    tracker: StepTracker = field(default_factory=StepTracker)
    cache: MatchingCache = field(default_factory=MatchingCache)
    splits: dict[tuple[int, Feature], tuple[int, ops.TokenSplit]] = field(default_factory=dict)
    matching_steps: list[int] = field(default_factory=list)
    site_offset: int = 0
    video: int | None = None
    forgot_warmup_call: bool = False

    def reset(self) -> None:
        """A new video: forget steps, matchings and splits."""
        self.tracker.reset()
        self.video = RESET_VIDEO
        self.new_video()

    def new_video(self) -> None:
        self.cache.reset()
        self.splits.clear()
        self.matching_steps.clear()
        self.forgot_warmup_call = False


class VideoStates:
    """The video states of one sampling loop's callers: one :class:`VideoState` per calling
    thread, block instance (``offset``) and model instance (``weights``), all reachable for
    :meth:`reset` and reports.

    Model instances: Dynamo shares compiled code per code object, so a second model of the same
    class compiled with equal ``backend="asymrnr"`` options runs this graph too (its guards pass);
    its weights come in as other tensors. Keyed by them, each model keeps its own steps and
    matchings (Wan 2.2's ``transformer_2`` taking over mid-window computes its own matching
    instead of reusing the first transformer's).

    A runtime owns one; the runtimes of the graphs Dynamo compiles again for the same code (a
    recompile mid-video, after a guard failed) share it, so the new graph continues the video's
    steps and reuses its matchings instead of starting over at step 0.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[VideoState] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self, offset: int, weights: torch.Tensor | None = None) -> VideoState:
        """The calling thread's state of block instance ``offset`` of the model whose first lifted
        parameter is ``weights`` (:func:`~asymrnr_compile.runtime.model_instances.weights_of`;
        None: unknown, one state for all; made on first use).

        A model instance is known by that parameter object, held weakly, so that two live models
        keep two states. A parameter object seen for the first time takes over the state at this
        block instance whose parameter is gone, if there is one
        (:class:`~asymrnr_compile.runtime.model_instances.PerModelInstance`): the same model whose
        parameters offloading hooks re-create for every call (accelerate's sequential offload),
        or a model loaded in place of a deleted one (whose first call, a timestep rise, starts a
        new video). Other states whose parameters are gone are dropped then.
        """
        states: PerModelInstance[VideoState] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = PerModelInstance()
        return states.get(offset, weights, lambda: self._make(offset))

    def _make(self, offset: int) -> VideoState:
        state = VideoState(site_offset=offset)
        with self._lock:
            self._all.add(state)
        return state

    def all(self) -> list[VideoState]:
        """Every live state, of every thread and block instance."""
        with self._lock:
            return list(self._all)

    def reset(self) -> None:
        """Start a new video: every state forgets its steps and cached matchings."""
        for state in self.all():
            state.reset()
