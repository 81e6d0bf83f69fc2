"""Model instances: which one makes a call, and values kept per instance.

Dynamo shares compiled code per code object, so two models of one class (Wan 2.2's two experts,
a model loaded in place of a deleted one) can run one compiled graph; their weights come in as
different tensors. A model instance is known by its first lifted parameter object
(:func:`weights_of`), held weakly so that nothing here keeps weights alive.

:class:`PerModelInstance` keeps one value per (group, model instance), where the group is what
else the caller keys by (a block instance, a graph). A parameter object seen for the first time
takes over the value of its group whose parameter object is gone, if there is one: offloading
hooks (accelerate's sequential CPU offload) re-create the parameters for every call, and the
model must still continue its video. Two live models keep two values. Used by the video states
outside a scope (:class:`~asymrnr_compile.runtime.video_state.VideoStates`) and by the video scope
(:class:`~asymrnr_compile.runtime.video_scope.VideoScope`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
import torch.fx

V = TypeVar("V")

#: Key part of a value kept for an unknown model (no parameter object): one value for all.
UNKNOWN_MODEL = 0

#: Marks a lifted parameter's placeholder: Dynamo names it after the module path,
#: ``L_self_modules_<path>_parameters_<name>_``.
PARAMETER_PLACEHOLDER_MARK = "_parameters_"


def find_weights_input(gm: torch.fx.GraphModule) -> int | None:
    """Position among the graph's inputs of its first lifted parameter (the model's weights come
    in as inputs under Dynamo's ``inline_inbuilt_nn_modules``), or None (no lifted parameter:
    e.g. weights frozen into the graph)."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        if PARAMETER_PLACEHOLDER_MARK in str(node.target) and isinstance(node.meta.get("example_value"), torch.Tensor):
            return position
    return None


def weights_of(args: Sequence[Any], position: int | None) -> torch.Tensor | None:
    """Which model instance makes this call: its first lifted parameter (two models of one class
    running one graph pass different parameter objects; known by identity, not by storage, so
    that tensor subclasses without storage, e.g. quantised weights, work too), None when
    unknown."""
    if position is None or position >= len(args) or not isinstance(args[position], torch.Tensor):
        return None
    return args[position]


@dataclass(eq=False)
class _Held(Generic[V]):
    """A value and the parameter object (held weakly) of the model instance it belongs to; None:
    an unknown model."""

    model: weakref.ref[Any] | None
    value: V

    def holds(self, model: object | None) -> bool:
        return self.model is None if model is None else (self.model is not None and self.model() is model)

    def model_is_gone(self) -> bool:
        return self.model is not None and self.model() is None


class PerModelInstance(Generic[V]):
    """One value per ``(group, model instance)``, the model held weakly (see the module
    docstring). Not thread-safe: callers lock or keep one per thread."""

    def __init__(self) -> None:
        self._held: dict[tuple[Hashable, int], _Held[V]] = {}

    def get(self, group: Hashable, model: object | None, make: Callable[[], V] | None = None) -> V:
        """The value of ``group`` for model instance ``model`` (its parameter object; None:
        unknown, one value for all). New ``model`` objects take over the value of ``group``
        whose model is gone (of several gone, the most recently made or taken over; the others
        are dropped), else get ``make()``.

        Raises:
            KeyError: nothing to return or take over and no ``make``.
        """
        key = (group, UNKNOWN_MODEL if model is None else id(model))
        held = self._held.get(key)
        if held is not None and held.holds(model):
            return held.value
        taken: _Held[V] | None = None
        if model is not None:  # insertion order: the last gone entry is the most recently used
            gone = [k for k, entry in self._held.items() if k[0] == group and entry.model_is_gone()]
            if gone:
                taken = self._held[gone[-1]]
                for stale in gone:
                    del self._held[stale]
        if taken is not None:
            value = taken.value
        elif make is not None:
            value = make()
        else:
            raise KeyError(f"no value for group {group!r} and this model instance")
        self._held[key] = _Held(None if model is None else weakref.ref(model), value)
        return value

    def items(self) -> Iterator[tuple[Hashable, V]]:
        """``(group, value)`` of every value kept (a model instance may be gone)."""
        return ((key[0], held.value) for key, held in list(self._held.items()))

    def clear(self) -> None:
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)
