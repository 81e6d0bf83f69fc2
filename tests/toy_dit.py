"""A small joint-attention video DiT without RoPE, whose blocks admit h reduction.

The reference DiT hard-codes its token count in a view and applies per-token RoPE tables, so
the analysis (rightly) refuses h there; this model uses ``view(B, -1, H, d)`` and no per-token
side inputs, like diffusers' CogVideoX attention processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, HEADS, BLOCKS, TEXT, TEXT_DIM = 32, 2, 2, 8, 16
LATENT = (4, 2, 16, 16)  # C, F, H, W; patch (1, 2, 2) -> grid 2x8x8 = 128 tokens
GRID = (2, 8, 8)


class ToyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.mlp = nn.Sequential(nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, 2 * HIDDEN), nn.GELU(),
                                 nn.Linear(2 * HIDDEN, HIDDEN))

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm(torch.cat([text, video], dim=1))
        batch = tokens.shape[0]
        q, k, v = (proj(tokens).view(batch, -1, HEADS, HIDDEN // HEADS).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        attention = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, HIDDEN)
        out = self.to_out(attention)
        text = text + out[:, :TEXT]
        video = video + out[:, TEXT:]
        return video + self.mlp(video), text


class ToyDiT(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.patch = nn.Conv3d(LATENT[0], HIDDEN, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text = nn.Linear(TEXT_DIM, HIDDEN)
        self.time = nn.Linear(1, HIDDEN)
        self.blocks = nn.ModuleList(ToyBlock() for _ in range(BLOCKS))
        self.out = nn.Linear(HIDDEN, LATENT[0] * 4)
        torch.random.set_rng_state(generator_state)
        self.eval()

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = hidden_states.shape
        video = self.patch(hidden_states).flatten(2).transpose(1, 2)
        video = video + self.time(timestep[:, None] / 1000.0)[:, None]
        text = self.text(encoder_hidden_states)
        for block in self.blocks:
            video, text = block(video, text)
        out = self.out(video).view(b, f, h // 2, w // 2, c, 2, 2)
        return out.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, f, h, w)


def toy_inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    from asymrnr_lab.models import synthetic_latents

    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": synthetic_latents((batch, *LATENT), seed=seed),
        "encoder_hidden_states": torch.randn(batch, TEXT, TEXT_DIM, generator=generator),
        "timestep": torch.full((batch,), 500.0),
    }
