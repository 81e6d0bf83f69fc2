"""Small models with attention layouts the diffusers models do not cover.

Every model takes a latent video ``x (B, C, F, H, W)`` (and, where it has text, ``text
(B, T, D)``) and returns a tensor. Sizes are tiny so that capturing a graph takes ~1 s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

B, C, FRAMES, HEIGHT, WIDTH = 2, 4, 4, 8, 8
PATCH = 2
#: Token grid of the Conv3d patch embeddings below: (F, H/2, W/2).
GRID = (FRAMES, HEIGHT // PATCH, WIDTH // PATCH)
N_VIDEO = GRID[0] * GRID[1] * GRID[2]
DIM, HEADS = 16, 2
HEAD_DIM = DIM // HEADS
TEXT = 6


def video_input() -> torch.Tensor:
    return torch.randn(B, C, FRAMES, HEIGHT, WIDTH)


def text_input() -> torch.Tensor:
    return torch.randn(B, TEXT, DIM)


class PatchEmbed3d(nn.Module):
    """Conv3d with kernel = stride = (1, 2, 2): (B, C, F, H, W) -> (B, N, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv3d(C, DIM, (1, PATCH, PATCH), stride=(1, PATCH, PATCH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Separate q/k/v projections, heads ``(B', H, L, d)``, SDPA, output projection."""

    def __init__(self, is_causal: bool = False) -> None:
        super().__init__()
        self.to_q = nn.Linear(DIM, DIM)
        self.to_k = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)
        self.to_out = nn.Linear(DIM, DIM)
        self.is_causal = is_causal

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b = x.shape[0]
        q = self.to_q(x).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.to_k(context).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        v = self.to_v(context).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, DIM))


class LatteStyle(nn.Module):
    """Per-frame spatial attention (frames in the batch) then temporal attention (tokens of
    one position across the 4 frames in the sequence)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.spatial = Attention()
        self.temporal = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)  # (B, F*H*W, D)
        f, hw = GRID[0], GRID[1] * GRID[2]
        spatial = tokens.reshape(B * f, hw, DIM)
        spatial = spatial + self.spatial(spatial)
        temporal = spatial.reshape(B, f, hw, DIM).permute(0, 2, 1, 3).reshape(B * hw, f, DIM)
        temporal = temporal + self.temporal(temporal)
        return temporal.reshape(B, hw, f, DIM).permute(0, 2, 1, 3).reshape(B, f * hw, DIM)


class FusedQKV(nn.Module):
    """One Linear(D, 3D) for q, k and v, split by reshape/permute/unbind (timm style)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        b = tokens.shape[0]
        qkv = self.qkv(tokens).reshape(b, -1, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, -1, DIM))


class TextLastMasked(nn.Module):
    """Joint attention with text *last*, a key padding mask, and flattened heads
    ``(B * H, L, d)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.text_proj = nn.Linear(DIM, DIM)
        self.attn_q = nn.Linear(DIM, DIM)
        self.attn_k = nn.Linear(DIM, DIM)
        self.attn_v = nn.Linear(DIM, DIM)
        self.attn_out = nn.Linear(DIM, DIM)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        video = self.embed(x)
        joint = torch.cat([video, self.text_proj(text)], dim=1)  # (B, N + T, D)
        b, length, _ = joint.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, HEADS, HEAD_DIM).transpose(1, 2).reshape(b * HEADS, -1, HEAD_DIM)

        q, k, v = heads(self.attn_q(joint)), heads(self.attn_k(joint)), heads(self.attn_v(joint))
        keep = torch.cat([torch.ones(b, N_VIDEO, dtype=torch.bool), text_mask], dim=1)
        mask = keep.repeat_interleave(HEADS, dim=0).unsqueeze(1)  # (B * H, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.reshape(b, HEADS, -1, HEAD_DIM).transpose(1, 2).reshape(b, -1, DIM)
        out = self.attn_out(out)
        return out[:, :-TEXT]


class FramesInBatchCross(nn.Module):
    """Per-frame Conv2d patch embedding (frames folded into the batch, then unfolded into the
    token axis) followed by self-attention and cross-attention to text."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(C, DIM, PATCH, stride=PATCH)
        self.attn1 = Attention()
        self.attn2 = Attention()

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        tokens = self.proj(frames).flatten(2).transpose(1, 2)  # (B * F, h * w, D)
        tokens = tokens.unflatten(0, (b, f)).flatten(1, 2)  # (B, F * h * w, D)
        tokens = tokens + self.attn1(tokens)
        return tokens + self.attn2(tokens, text)


class Causal(nn.Module):
    """Self-attention over video tokens with ``is_causal=True``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.attn = Attention(is_causal=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.embed(x))


class HandWritten(nn.Module):
    """Attention written as matmul, softmax, matmul: no SDPA node."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.qkv = nn.Linear(DIM, 3 * DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.embed(x)).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / HEAD_DIM**0.5, dim=-1)
        return weights @ v


class TorchMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` on video tokens."""

    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        return self.mha(tokens, tokens, tokens, need_weights=self.need_weights)[0]


class NoAttention(nn.Module):
    """Patch embedding and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(x))


class LoopedBlocks(nn.Module):
    """One attention module called three times in a Python loop (unrolled by Dynamo)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        for _ in range(3):
            tokens = tokens + self.attn(tokens)
        return tokens


class CoordinateRope(nn.Module):
    """Tokens given already patchified (B, N, D), positions only in a RoPE table built from a
    (f, h, w) coordinate meshgrid (LTX-Video style), applied to q and (unless ``rope_keys`` is
    False) k."""

    def __init__(self, rope_keys: bool = True) -> None:
        super().__init__()
        self.attn = Attention()
        self.freqs = nn.Parameter(torch.randn(3, HEAD_DIM // 2), requires_grad=False)
        self.rope_keys = rope_keys

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        f, h, w = GRID
        coords = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
        positions = torch.stack(coords, dim=-1).flatten(0, 2).float()  # (N, 3)
        angles = (positions @ self.freqs).repeat_interleave(2, dim=-1)  # (N, d)
        cos, sin = angles.cos(), angles.sin()
        b = tokens.shape[0]
        attn = self.attn

        def rope(x: torch.Tensor) -> torch.Tensor:
            real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
            return x * cos + torch.stack((-imag, real), dim=-1).flatten(-2) * sin

        q = rope(attn.to_q(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2))
        k = attn.to_k(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        k = rope(k) if self.rope_keys else k
        v = attn.to_v(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return attn.to_out(out.transpose(1, 2).reshape(b, -1, DIM))


def token_input() -> torch.Tensor:
    """Already patchified video tokens (B, N, D) for :class:`CoordinateRope`."""
    return torch.randn(B, N_VIDEO, DIM)


class LeakyProjection(nn.Module):
    """Self-attention whose query projection is also read outside the attention (so the
    tokens cannot be reduced before the projections)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed3d()
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        b = tokens.shape[0]
        attn = self.attn
        projected = attn.to_q(tokens)
        q = projected.view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        k = attn.to_k(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        v = attn.to_v(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, DIM)
        return attn.to_out(out) + projected
