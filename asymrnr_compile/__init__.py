"""asymrnr_compile: AsymRnR token reduction for video diffusion transformers, as a
``torch.compile`` backend.

Public API only; see the submodules for details.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
