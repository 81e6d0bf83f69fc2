"""Regional compilation under asymrnr: each repeated block compiled once, the grid from the model.

``compile_repeated_blocks(transformer, options={...})`` is diffusers'
``transformer.compile_repeated_blocks(backend="asymrnr", options={...})`` plus the layout hook
(:mod:`asymrnr_compile.regional.hooks`) that tells the block graphs what they cannot see: the
video grid, the step, and which block instance is running. It also works for models that declare
no ``_repeated_blocks`` (CogVideoX, Mochi, the bundled reference DiT): the registry names their
block classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.regional.hooks import apply_token_layout_hook
from asymrnr_compile.regional.input_layouts import InputLayout, input_layout_of
from asymrnr_compile.runtime.forward_context import BlockCall, EnterBlock

#: Backend name of ``torch.compile(backend="asymrnr")``.
BACKEND_NAME = "asymrnr"


def repeated_block_classes(model: torch.nn.Module, layout: InputLayout | None = None) -> tuple[str, ...]:
    """The class names of ``model``'s repeated blocks: its own ``_repeated_blocks`` (diffusers),
    else ``layout.repeated_blocks`` (default layout: the registry entry of its class).

    Raises:
        ValueError: neither names a block class.
        TypeError: ``layout`` is not an :class:`InputLayout`.
    """
    if layout is not None and not isinstance(layout, InputLayout):
        raise TypeError(f"layout must be an InputLayout, got {type(layout).__name__}")
    declared = getattr(model, "_repeated_blocks", None)
    if declared:
        return tuple(declared)
    layout = layout if layout is not None else input_layout_of(model)
    if not layout.repeated_blocks:
        raise ValueError(f"{type(model).__name__} declares no _repeated_blocks and its InputLayout names none; "
                         "pass layout=InputLayout(..., repeated_blocks=('BlockClass',))")
    return layout.repeated_blocks


def compile_repeated_blocks(model: torch.nn.Module, options: Mapping[str, Any] | None = None, *,
                            backend: Any = BACKEND_NAME, layout: InputLayout | None = None,
                            dynamic: bool | None = False, **compile_kwargs: Any) -> torch.nn.Module:
    """Compile each repeated block of ``model`` with the asymrnr backend, and hook the model so
    the blocks learn the grid and the step from its calls. Returns ``model`` (compiled in place).

    Args:
        model: the whole transformer (e.g. ``pipe.transformer``).
        options: asymrnr options (``AsymRnRConfig`` keys), checked now; with the string backend
            every block shares one backend (``asymrnr_compile.last_backend()`` reports them all).
            Default None (the defaults).
        backend: ``"asymrnr"`` (default) or an :class:`~asymrnr_compile.AsymRnRBackend` (then
            no ``options``).
        layout: how the model's call gives the video grid; default the registry entry of its
            class.
        dynamic: ``torch.compile``'s ``dynamic``. Default False: a graph with symbolic shapes is
            left unreduced.
        **compile_kwargs: other ``torch.compile`` arguments (``fullgraph``, ``mode``...).

    Raises:
        ValueError: a bad option (named), options with a backend object, no registered layout,
            no repeated block class, or no module of those classes in ``model``.
        TypeError: ``model`` is not an ``nn.Module``, ``layout`` not an :class:`InputLayout`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layout is not None and not isinstance(layout, InputLayout):
        raise TypeError(f"layout must be an InputLayout, got {type(layout).__name__}")
    from asymrnr_compile.backend import AsymRnRBackend

    if isinstance(backend, AsymRnRBackend):
        if options:
            raise ValueError("pass either options or an AsymRnRBackend (which has its config), not both")
        timestep_arg = backend.config.timestep_arg
    elif backend == BACKEND_NAME:
        try:
            timestep_arg = AsymRnRConfig.from_options(options).timestep_arg
        except (ValueError, TypeError) as error:
            raise type(error)(f"compile_repeated_blocks(options=...): {error}") from None
        if options:
            compile_kwargs["options"] = options
    else:
        raise ValueError(f"backend must be {BACKEND_NAME!r} or an AsymRnRBackend, got {backend!r}")
    layout = layout if layout is not None else input_layout_of(model)
    classes = repeated_block_classes(model, layout)
    blocks = [(path, module) for path, module in model.named_modules() if type(module).__name__ in classes]
    if not blocks:
        raise ValueError(f"no module of the repeated block classes {classes} in {type(model).__name__}")
    apply_token_layout_hook(model, layout, timestep_arg=timestep_arg)
    for path, block in blocks:
        block.compile(backend=backend, dynamic=dynamic, **compile_kwargs)
        # each call says which block instance runs (``skip_blocks`` is matched against it)
        block._compiled_call_impl = EnterBlock(block._compiled_call_impl, BlockCall.from_path(path))
    return model


__all__ = ["BACKEND_NAME", "compile_repeated_blocks", "repeated_block_classes"]
