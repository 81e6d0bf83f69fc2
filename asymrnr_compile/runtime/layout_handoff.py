"""The tensors a compiled graph returned that carry video tokens, with their layouts.

One :class:`LayoutHandoff` per backend: every graph the backend compiled records, on each call,
its outputs that hold video tokens (:func:`~asymrnr_compile.analysis.graph_outputs.video_output_layouts`);
a graph Dynamo compiles later (after a graph break) looks its real example inputs up to learn where
their video tokens are (:func:`~asymrnr_compile.analysis.graph_outputs.handed_off_seeds`). Tensors
are held weakly: a record disappears with its tensor.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from asymrnr_compile.analysis.token_layout import Layout


class LayoutHandoff:
    """Video layouts of recently returned graph outputs, by tensor (weakly held)."""

    def __init__(self) -> None:
        # by identity: a tensor's == is elementwise, so a WeakKeyDictionary cannot hold tensors
        self._layouts: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._lock = threading.Lock()

    def record(self, outputs: Any, layouts: Mapping[int, Layout]) -> None:
        """Remember ``layouts[k]`` for output ``k`` of a graph call (a tuple or list of outputs)."""
        if not layouts or not isinstance(outputs, Sequence):
            return
        with self._lock:
            for index, layout in layouts.items():
                if index < len(outputs) and isinstance(outputs[index], torch.Tensor):
                    self._layouts[outputs[index]] = layout

    def layout_of(self, tensor: torch.Tensor) -> Layout | None:
        """The recorded layout of ``tensor``, or None."""
        with self._lock:
            return self._layouts.get(tensor)

    def reset(self) -> None:
        with self._lock:
            self._layouts.clear()

    def __len__(self) -> int:
        return len(self._layouts)


__all__ = ["LayoutHandoff"]
