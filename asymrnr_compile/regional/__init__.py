"""Regional compilation: each repeated transformer block compiled once, reduced like the whole model.

- :mod:`~asymrnr_compile.regional.compile`: :func:`compile_repeated_blocks`, the one-line form
  (diffusers' ``compile_repeated_blocks(backend="asymrnr")`` plus the layout hook).
- :mod:`~asymrnr_compile.regional.hooks`: :func:`apply_token_layout_hook`, the forward hooks
  that tell the block graphs the grid, the step and the block instance of each model call.
- :mod:`~asymrnr_compile.regional.input_layouts`: :class:`InputLayout` and the registry of how
  each transformer class's call gives its video grid.

See ``docs/regional_compilation.md``.
"""

from asymrnr_compile.regional.compile import compile_repeated_blocks, repeated_block_classes
from asymrnr_compile.regional.hooks import TokenLayoutHook, apply_token_layout_hook, remove_token_layout_hook
from asymrnr_compile.regional.input_layouts import INPUT_LAYOUTS, InputLayout, input_layout_of, token_grid

__all__ = ["INPUT_LAYOUTS", "InputLayout", "TokenLayoutHook", "apply_token_layout_hook", "compile_repeated_blocks",
           "input_layout_of", "remove_token_layout_hook", "repeated_block_classes", "token_grid"]
