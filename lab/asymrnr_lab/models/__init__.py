"""The bundled reference video DiT: a small CogVideoX-like model with seeded weights, and
structured seeded inputs for it.

It is the demo's default model and the main fixture of the tests. Presets: ``"tiny"`` (unit
tests), ``"small"`` (backend tests), ``"attention"`` (attention-dominated, like real video DiTs;
the default).
"""

from __future__ import annotations

from asymrnr_lab.models.config import PRESETS, ReferenceDiTConfig
from asymrnr_lab.models.inputs import reference_inputs, synthetic_latents
from asymrnr_lab.models.reference_dit import ReferenceDiT, build_reference_model

__all__ = [
    "PRESETS",
    "ReferenceDiT",
    "ReferenceDiTConfig",
    "build_reference_model",
    "reference_inputs",
    "synthetic_latents",
]
