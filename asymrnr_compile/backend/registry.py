"""The string form, ``torch.compile(model, backend="asymrnr", options=...)``: :func:`asymrnr` is
the function the ``torch_dynamo_backends`` entry point registers (``asymrnr_compile.backend:asymrnr``),
:func:`last_backend` the backend it used most recently.

This package must not call ``torch._dynamo.register_backend("asymrnr")``: the entry point
registers it, and a second registration raises "duplicate name".
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx

from asymrnr_compile.backend.driver import AsymRnRBackend
from asymrnr_compile.config import AsymRnRConfig

# The string form: one backend per options object, alive as long as a graph it compiled is (the
# runtimes hold it); so torch._dynamo.reset() frees backends, their graphs and device caches.
_string_form_backends: weakref.WeakValueDictionary[int, AsymRnRBackend] = weakref.WeakValueDictionary()
_last_backend: list[weakref.ref[AsymRnRBackend]] = []


def asymrnr(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
            options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
    """The backend behind ``torch.compile(..., backend="asymrnr", options=...)``.

    All graphs compiled with the same ``options`` object share one :class:`AsymRnRBackend` (so all
    ``options=None`` compilations share one; use an :class:`AsymRnRBackend` object per model for
    separate reports); :func:`last_backend` returns the one used most recently. Options are
    validated on the first call, when Dynamo hands over the first graph; errors name the option.
    """
    backend = _string_form_backends.get(id(options))
    if backend is None or backend.options is not options:
        try:
            config = AsymRnRConfig.from_options(options)
        except (ValueError, TypeError) as error:
            raise type(error)(f"torch.compile(backend='asymrnr', options=...): {error}") from None
        backend = AsymRnRBackend(config)
        backend.options = options  # held, so id(options) stays unique while the backend lives
        _string_form_backends[id(options)] = backend
    _last_backend[:] = [weakref.ref(backend)]
    return backend(gm, example_inputs, mode=mode)


def last_backend() -> AsymRnRBackend:
    """The backend that served the most recent ``backend="asymrnr"`` compilation."""
    backend = _last_backend[0]() if _last_backend else None
    if backend is None:
        raise RuntimeError('no model compiled with backend="asymrnr" is alive in this process (none was compiled, '
                           "or torch._dynamo.reset() released it)")
    return backend
