"""A small CogVideoX-like video diffusion transformer, the project's reference model.

Layout of the forward pass (shapes for batch ``B``, width ``D``, ``H`` heads of ``d`` channels,
``T`` text tokens, ``N = F' * H' * W'`` video tokens)::

    hidden_states (B, C, F, H, W) -> Conv3d(kernel = stride = patch) -> (B, D, F', H', W')
        -> flatten(2).transpose(1, 2) -> video (B, N, D)            row-major (f, h, w) order
        [+ fixed 3-D sin-cos positions (N, D) when ``config.absolute_positions``]
    encoder_hidden_states (B, T, text_dim) -> Linear -> text (B, T, D)
    timestep (B,) -> sinusoidal (256) -> Linear, SiLU, Linear -> c (B, D)
    per block ``blocks.<i>``:
        adaLN: SiLU, Linear(D, 6D) on c -> shift/scale/gate for attention and MLP
        LayerNorm (no affine) + modulate, text and video alike
        attn (``blocks.<i>.attn``): cat([text, video], dim=1) (B, T+N, D) -> to_q/to_k/to_v
            -> view (B, L, H, d) -> transpose(1, 2) (B, H, L, d) -> RMSNorm(d) on q, k
            -> 3-D RoPE on the video part of q and k -> F.scaled_dot_product_attention(q, k, v)
            -> transpose(1, 2) -> reshape (B, L, D) -> to_out -> split into text, video
        gated residual; LayerNorm + modulate -> MLP (D -> mlp_ratio * D, GELU(tanh), -> D)
        -> gated residual, text and video alike
    final: LayerNorm + modulate (shift/scale from c) -> Linear(D, pt*ph*pw*C_out) on video
        -> unpatchify -> (B, C_out, F, H, W)

Everything is static-shape: the grid sizes are Python ints taken from tensor shapes, so the
RoPE tables trace to ``arange`` arithmetic and the model captures with
``torch.compile(fullgraph=True)`` without graph breaks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asymrnr_lab.models.config import DEFAULT_PRESET, ReferenceDiTConfig, resolve_config

#: Channels of the sinusoidal timestep embedding (half cosines, half sines).
TIMESTEP_FREQ_DIM = 256
#: Longest period of the sinusoidal timestep embedding.
TIMESTEP_MAX_PERIOD = 10000.0
#: Epsilon of the LayerNorms and the QK RMSNorms.
NORM_EPS = 1e-6
#: adaLN modulation chunks per block: shift, scale, gate for attention, then for the MLP.
BLOCK_MODULATION_CHUNKS = 6
#: adaLN modulation chunks of the final layer: shift, scale.
FINAL_MODULATION_CHUNKS = 2
#: Standard deviation of the adaLN modulation weights, times ``1 / sqrt(hidden_size)``. Not
#: zero (as DiT's training init is), so that random weights give a non-trivial model, but small
#: enough that shifts, scales and gates stay around 0.1-0.3 and activations stay well-behaved
#: through the blocks.
ADALN_INIT_GAIN = 0.5
#: Shares of the head dimension given to the RoPE axes (t, h, w); rounded to even, the last
#: axis takes the remainder.
ROPE_AXIS_SHARES = (1 / 4, 3 / 8, 3 / 8)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Split ``head_dim`` (even, >= 8) over the RoPE axes (t, h, w).

    Roughly ``d/4, 3d/8, 3d/8``, each even and >= 2; e.g. 64 -> (16, 24, 24), 32 -> (8, 12, 12).
    """
    dim_t = max(2, 2 * round(head_dim * ROPE_AXIS_SHARES[0] / 2))
    dim_h = max(2, 2 * round(head_dim * ROPE_AXIS_SHARES[1] / 2))
    dim_w = head_dim - dim_t - dim_h
    if dim_w < 2:
        dim_h = head_dim - dim_t - 2
        dim_w = 2
    return dim_t, dim_h, dim_w


def _axis_angles(
    grid: tuple[int, int, int],
    axis_dims: tuple[int, int, int],
    theta: float,
    device: torch.device | None,
) -> list[torch.Tensor]:
    """Per axis ``(t, h, w)``: angles ``(N, axis_dim / 2)`` = token coordinate x frequencies
    ``theta ** (-2i / axis_dim)``, tokens in row-major ``(f, h, w)`` order (float32)."""
    coords = torch.meshgrid(
        *(torch.arange(n, device=device, dtype=torch.float32) for n in grid), indexing="ij"
    )
    angles = []
    for pos, dim in zip(coords, axis_dims):
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
        )
        angles.append(pos.reshape(-1, 1) * inv_freq)
    return angles


def rope_3d_tables(
    grid: tuple[int, int, int],
    head_dim: int,
    theta: float,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin tables of the 3-D rotary embedding for a token grid.

    Args:
        grid: ``(F', H', W')`` as Python ints.
        head_dim: ``d``; split over the axes by :func:`rope_axis_dims`.
        theta: RoPE base.

    Returns:
        ``(cos, sin)``, each ``(N, d)`` with ``N = F' * H' * W'`` in row-major ``(f, h, w)``
        order; channel pairs ``(2i, 2i+1)`` share one angle (interleaved layout).
    """
    angles = _axis_angles(grid, rope_axis_dims(head_dim), theta, device)
    angle = torch.cat(angles, dim=-1).repeat_interleave(2, dim=-1)  # (N, d)
    return angle.cos().to(dtype), angle.sin().to(dtype)


def sincos_3d_embedding(
    grid: tuple[int, int, int],
    dim: int,
    theta: float,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed 3-D sin-cos position embedding ``(N, dim)`` of a token grid (row-major ``(f, h, w)``).

    ``dim`` (even, >= 8) is split over the axes like the RoPE (:func:`rope_axis_dims`); an axis
    of ``a`` channels gets ``a / 2`` frequencies ``theta ** (-2i / a)``, sines then cosines.
    Added to the video tokens when ``ReferenceDiTConfig.absolute_positions`` is set.
    """
    angles = _axis_angles(grid, rope_axis_dims(dim), theta, device)
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=-1).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (..., N, d) by the angles of ``cos``/``sin`` (N, d)."""
    x_real, x_imag = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((-x_imag, x_real), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def timestep_sinusoids(timestep: torch.Tensor, dim: int = TIMESTEP_FREQ_DIM) -> torch.Tensor:
    """Sinusoidal embedding of ``timestep`` (B,) -> (B, dim) float32, ``[cos, sin]``."""
    half = dim // 2
    exponent = -math.log(TIMESTEP_MAX_PERIOD) * torch.arange(
        half, device=timestep.device, dtype=torch.float32
    ) / half
    args = timestep.float().unsqueeze(-1) * torch.exp(exponent)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: ``x (B, L, D) * (1 + scale (B, D)) + shift (B, D)``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedding(nn.Module):
    """Sinusoidal timestep embedding followed by ``Linear, SiLU, Linear``: (B,) -> (B, D)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(TIMESTEP_FREQ_DIM, hidden_size)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoids(timestep).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(emb)))


class JointAttention(nn.Module):
    """Joint text-video attention, text first (CogVideoX layout).

    ``forward(hidden_states (B, N, D), encoder_hidden_states (B, T, D), rope_cos (N, d),
    rope_sin (N, d)) -> (video (B, N, D), text (B, T, D))``.
    """

    def __init__(self, config: ReferenceDiTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        if config.qk_norm:
            self.norm_q: nn.Module = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
            self.norm_k: nn.Module = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
        else:
            self.norm_q = nn.Identity()
            self.norm_k = nn.Identity()
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        rope_cos: torch.Tensor,
        rope_sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_len = encoder_hidden_states.shape[1]
        hs = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # (B, L, D)
        batch, length, dim = hs.shape

        q = self.to_q(hs).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.to_k(hs).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.to_v(hs).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        q = self.norm_q(q)
        k = self.norm_k(k)

        q = torch.cat([q[:, :, :text_len], apply_rope(q[:, :, text_len:], rope_cos, rope_sin)], 2)
        k = torch.cat([k[:, :, :text_len], apply_rope(k[:, :, text_len:], rope_cos, rope_sin)], 2)

        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(batch, length, dim)
        out = self.to_out(out)
        text_out, video_out = out.split([text_len, length - text_len], dim=1)
        return video_out, text_out


class FeedForward(nn.Module):
    """``Linear(D, mlp_hidden), GELU(tanh), Linear(mlp_hidden, D)`` on (B, L, D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """One adaLN transformer block with joint attention; text and video share the modulation.

    ``forward(hidden_states (B, N, D), encoder_hidden_states (B, T, D), temb (B, D),
    rope_cos (N, d), rope_sin (N, d)) -> (video (B, N, D), text (B, T, D))``.
    """

    def __init__(self, config: ReferenceDiTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, BLOCK_MODULATION_CHUNKS * dim))
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=False)
        self.attn = JointAttention(config)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=False)
        self.mlp = FeedForward(dim, config.mlp_hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rope_cos: torch.Tensor,
        rope_sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(temb).chunk(
            BLOCK_MODULATION_CHUNKS, dim=-1
        )
        gate_a = gate_a.unsqueeze(1)
        gate_m = gate_m.unsqueeze(1)

        attn_video, attn_text = self.attn(
            modulate(self.norm1(hidden_states), shift_a, scale_a),
            modulate(self.norm1(encoder_hidden_states), shift_a, scale_a),
            rope_cos,
            rope_sin,
        )
        hidden_states = hidden_states + gate_a * attn_video
        encoder_hidden_states = encoder_hidden_states + gate_a * attn_text

        hidden_states = hidden_states + gate_m * self.mlp(
            modulate(self.norm2(hidden_states), shift_m, scale_m)
        )
        encoder_hidden_states = encoder_hidden_states + gate_m * self.mlp(
            modulate(self.norm2(encoder_hidden_states), shift_m, scale_m)
        )
        return hidden_states, encoder_hidden_states


class ReferenceDiT(nn.Module):
    """Small CogVideoX-like video DiT (see the module docstring for the layout).

    ``forward(hidden_states (B, C, F, H, W), encoder_hidden_states (B, T, text_dim),
    timestep (B,) float) -> (B, C_out, F, H, W)``. ``F, H, W`` must be multiples of the patch
    size; ``T`` and the latent size may differ from the config defaults. Build seeded weights
    with :func:`build_reference_model`; the constructor uses PyTorch's default initialisation
    and the global RNG.
    """

    def __init__(self, config: ReferenceDiTConfig) -> None:
        super().__init__()
        if not isinstance(config, ReferenceDiTConfig):
            raise ValueError(f"config must be a ReferenceDiTConfig, got {type(config).__name__}")
        self.config = config
        dim = config.hidden_size
        self.patch_embed = nn.Conv3d(
            config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_proj = nn.Linear(config.text_dim, dim)
        self.time_embed = TimestepEmbedding(dim)
        self.text_pool_proj = nn.Linear(dim, dim) if config.pooled_text else None
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_blocks))
        self.norm_out = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=False)
        self.adaln_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, FINAL_MODULATION_CHUNKS * dim))
        self.proj_out = nn.Linear(dim, math.prod(config.patch_size) * config.output_channels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
    ) -> torch.Tensor:
        cfg = self.config
        self._check_inputs(hidden_states, encoder_hidden_states)
        batch, _, frames, height, width = hidden_states.shape
        pt, ph, pw = cfg.patch_size
        grid = (frames // pt, height // ph, width // pw)

        video = self.patch_embed(hidden_states).flatten(2).transpose(1, 2)  # (B, N, D)
        if cfg.absolute_positions:
            video = video + sincos_3d_embedding(
                grid, cfg.hidden_size, cfg.rope_theta, device=video.device, dtype=video.dtype
            )
        text = self.text_proj(encoder_hidden_states)  # (B, T, D)
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)
        temb = self.time_embed(timestep)  # (B, D)
        if self.text_pool_proj is not None:
            temb = temb + self.text_pool_proj(text.mean(dim=1))

        rope_cos, rope_sin = rope_3d_tables(
            grid, cfg.head_dim, cfg.rope_theta, device=video.device, dtype=video.dtype
        )
        for block in self.blocks:
            video, text = block(video, text, temb, rope_cos, rope_sin)

        shift, scale = self.adaln_out(temb).chunk(FINAL_MODULATION_CHUNKS, dim=-1)
        out = self.proj_out(modulate(self.norm_out(video), shift, scale))  # (B, N, p * C_out)
        out = out.view(batch, *grid, cfg.output_channels, pt, ph, pw)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C_out, F', pt, H', ph, W', pw)
        return out.reshape(batch, cfg.output_channels, frames, height, width)

    def _check_inputs(
        self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> None:
        cfg = self.config
        if hidden_states.dim() != 5 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(
                f"hidden_states must be (B, {cfg.in_channels}, F, H, W), "
                f"got {tuple(hidden_states.shape)}"
            )
        for name, size, p in zip(("F", "H", "W"), hidden_states.shape[2:], cfg.patch_size):
            if size % p:
                raise ValueError(
                    f"hidden_states {name} must be a multiple of the patch size {p}, got {size}"
                )
        if (
            encoder_hidden_states.dim() != 3
            or encoder_hidden_states.shape[0] != hidden_states.shape[0]
            or encoder_hidden_states.shape[2] != cfg.text_dim
        ):
            raise ValueError(
                f"encoder_hidden_states must be (B={hidden_states.shape[0]}, T, {cfg.text_dim}), "
                f"got {tuple(encoder_hidden_states.shape)}"
            )


@torch.no_grad()
def _init_weights(model: ReferenceDiT, generator: torch.Generator) -> None:
    """Initialise every parameter of ``model`` (on CPU, float32) from ``generator``.

    Projections: Xavier-uniform weights, zero biases. adaLN modulation weights:
    normal with std ``ADALN_INIT_GAIN / sqrt(D)`` (small but not zero). Norm weights: ones.
    """
    dim = model.config.hidden_size
    adaln_linears = {id(block.adaln[1]) for block in model.blocks} | {id(model.adaln_out[1])}
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            if id(module) in adaln_linears:
                std = ADALN_INIT_GAIN / math.sqrt(dim)
                nn.init.normal_(module.weight, std=std, generator=generator)
            else:
                nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm) and module.weight is not None:
            nn.init.ones_(module.weight)


def build_reference_model(
    preset: str | ReferenceDiTConfig = DEFAULT_PRESET,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> ReferenceDiT:
    """Build a :class:`ReferenceDiT` with seeded random weights, in eval mode.

    Weights are drawn on CPU in float32 from a private ``torch.Generator`` seeded with ``seed``,
    then moved to ``device``/``dtype``, so they are identical across devices and the global RNG
    state is left unchanged.

    Args:
        preset: a name of :data:`~asymrnr_lab.models.PRESETS` (default ``"attention"``) or
            a :class:`ReferenceDiTConfig`.
        seed: weight seed.
        dtype: parameter dtype (default float32).
        device: target device (default CPU).

    Raises:
        ValueError: unknown preset (the message lists the presets).
    """
    config = resolve_config(preset)
    # Module constructors run PyTorch's default init from the global RNG; fork it so the
    # caller's RNG state is untouched, then overwrite every parameter from our own generator.
    with torch.random.fork_rng(devices=[]):
        model = ReferenceDiT(config)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    _init_weights(model, generator)
    return model.to(device=device, dtype=dtype).eval()
