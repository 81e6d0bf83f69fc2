"""What every text-to-video model of the synthetic task shares: a caption-token embedding table
(the "text encoder", run once per prompt) in front of a video transformer (the compiled part).

:class:`CaptionedVideoModel` is the base of
:class:`~asymrnr_lab.synthetic.model.TextToVideoDiT` (the bundled ReferenceDiT) and
:class:`~asymrnr_lab.synthetic.cogvideox.TextToVideoCogVideoX` (a diffusers
``CogVideoXTransformer3DModel``); each only builds its :attr:`transformer`.
"""

from __future__ import annotations

import torch
from torch import nn

from asymrnr_compile._validate import check_choice

#: What the transformer's output means. ``"velocity"``: the flow velocity ``noise - x_0``, what
#: the sampler steps with. ``"sample"``: the clean video ``x_0`` itself ("x-prediction", Li & He
#: 2025, *Back to Basics: Let Denoising Generative Models Denoise*), turned into a velocity by
#: :func:`~asymrnr_lab.synthetic.model.velocity_from_sample`. A pixel-space model with
#: 48-96-value patches and a 128-wide trunk learns clean flat-coloured shapes far faster than it
#: learns to pass noise through.
PREDICTIONS = ("velocity", "sample")


class CaptionedVideoModel(nn.Module):
    """Caption ids ``(B, T)`` -> embeddings ``(B, T, text_dim)`` -> :attr:`transformer`.

    ``forward(hidden_states (B, 3, F, H, W), token_ids (B, T) int64, timestep (B,) float)``
    returns the flow velocity ``noise - x_0`` ``(B, 3, F, H, W)`` whatever :attr:`prediction`
    the transformer was trained for (see :data:`PREDICTIONS`); sample through
    :func:`~asymrnr_lab.synthetic.model.as_velocity_model` ``(transformer, model.prediction)``.
    :meth:`embed_text` gives the text embeddings the sampler passes to :attr:`transformer`.

    Subclasses call ``super().__init__`` (which creates the token table first, so that a seeded
    build draws the table's weights before the transformer's) and then set :attr:`transformer`:
    a module with the keyword signature ``(hidden_states, encoder_hidden_states, timestep)``, a
    ``.config`` and a ``.proj_out`` (whose weight gives the dtype and device).

    Args:
        vocab_size: rows of the token table (>= 1).
        text_dim: width of a caption token's embedding.
        prediction: one of :data:`PREDICTIONS`.
    """

    transformer: nn.Module

    def __init__(self, vocab_size: int, text_dim: int, prediction: str = "velocity") -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.token_embed = nn.Embedding(vocab_size, text_dim)

    @property
    def config(self):
        """The transformer's config."""
        return self.transformer.config

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> ``(B, T, text_dim)`` in the transformer's dtype."""
        return self.token_embed(token_ids).to(self.transformer.proj_out.weight.dtype)

    def forward(
        self, hidden_states: torch.Tensor, token_ids: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        from asymrnr_lab.synthetic.model import as_velocity_model

        velocity = as_velocity_model(self.transformer, self.prediction)
        return velocity(
            hidden_states=hidden_states,
            encoder_hidden_states=self.embed_text(token_ids),
            timestep=timestep,
        )
