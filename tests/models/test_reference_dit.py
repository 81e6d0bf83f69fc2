"""The reference video DiT: shapes, seeding, structure, Dynamo graph and Inductor parity."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from asymrnr_lab.models import (
    PRESETS,
    ReferenceDiT,
    build_reference_model,
    reference_dit,
    reference_inputs,
)
from asymrnr_lab.models.reference_dit import (
    apply_rope,
    rope_3d_tables,
    rope_axis_dims,
    sincos_3d_embedding,
)

TINY = PRESETS["tiny"]
#: Inductor vs eager: max abs error allowed, relative to the output's max magnitude.
COMPILE_TOLERANCE = 1e-4
#: Expected share of the attention matmuls in the "attention" preset's forward FLOPs.
ATTENTION_SHARE_RANGE = (0.55, 0.65)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def tiny_model() -> ReferenceDiT:
    return build_reference_model("tiny")


@pytest.fixture(scope="module")
def tiny_inputs() -> dict[str, torch.Tensor]:
    return reference_inputs("tiny")


def expected_parameter_count(cfg) -> int:
    """Parameter count of the documented architecture, from the config alone."""
    d, p = cfg.hidden_size, math.prod(cfg.patch_size)
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731
    block = (
        linear(d, 6 * d)  # adaLN
        + 4 * linear(d, d)  # to_q, to_k, to_v, to_out
        + (2 * cfg.head_dim if cfg.qk_norm else 0)  # norm_q, norm_k
        + linear(d, cfg.mlp_hidden_size)
        + linear(cfg.mlp_hidden_size, d)
    )
    return (
        cfg.in_channels * p * d + d  # patch embedding
        + linear(cfg.text_dim, d)
        + linear(256, d) + linear(d, d)  # timestep MLP
        + cfg.num_blocks * block
        + linear(d, 2 * d)  # final adaLN
        + linear(d, p * cfg.output_channels)
    )


def test_output_shape_and_sanity(tiny_model, tiny_inputs):
    out = tiny_model(**tiny_inputs)
    assert out.shape == TINY.latent_shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert 0.1 < out.std().item() < 10.0


def test_other_sizes_and_out_channels():
    cfg = dataclasses.replace(TINY, out_channels=6, qk_norm=False)
    model = build_reference_model(cfg)
    hidden = torch.randn(1, 4, 3, 6, 10)
    text = torch.randn(1, 5, cfg.text_dim)
    out = model(hidden_states=hidden, encoder_hidden_states=text, timestep=torch.tensor([10.0]))
    assert out.shape == (1, 6, 3, 6, 10)
    # A 0-d timestep is broadcast over the batch.
    out0 = model(hidden_states=hidden, encoder_hidden_states=text, timestep=torch.tensor(10.0))
    torch.testing.assert_close(out0, out)


def test_layout_and_eval_mode(tiny_model):
    assert not tiny_model.training
    names = dict(tiny_model.named_modules())
    assert isinstance(names["patch_embed"], torch.nn.Conv3d)
    assert names["patch_embed"].kernel_size == names["patch_embed"].stride == TINY.patch_size
    assert len(tiny_model.blocks) == TINY.num_blocks
    for i in range(TINY.num_blocks):
        for leaf in ("to_q", "to_k", "to_v", "to_out"):
            assert isinstance(names[f"blocks.{i}.attn.{leaf}"], torch.nn.Linear)
        for leaf in ("norm_q", "norm_k"):
            assert isinstance(names[f"blocks.{i}.attn.{leaf}"], torch.nn.RMSNorm)
            assert names[f"blocks.{i}.attn.{leaf}"].normalized_shape == (TINY.head_dim,)
    assert sum(p.numel() for p in tiny_model.parameters()) == expected_parameter_count(TINY)


def test_seeded_weights_and_output(tiny_model, tiny_inputs):
    same = build_reference_model("tiny", seed=0)
    other = build_reference_model("tiny", seed=1)
    sd, sd_same, sd_other = tiny_model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_same[k]) for k in sd)
    assert any(not torch.equal(sd[k], sd_other[k]) for k in sd)
    out = tiny_model(**tiny_inputs)
    assert torch.equal(out, same(**tiny_inputs))
    assert not torch.allclose(out, other(**tiny_inputs))


def test_weights_do_not_depend_on_dtype():
    wide = build_reference_model("tiny", dtype=torch.float64)
    narrow = build_reference_model("tiny")
    assert all(p.dtype == torch.float64 for p in wide.parameters())
    for (name, a), (_, b) in zip(wide.named_parameters(), narrow.named_parameters()):
        assert torch.equal(a.float(), b), name
    out = wide(**reference_inputs("tiny", dtype=torch.float64))
    assert out.dtype == torch.float64


def test_global_rng_unchanged():
    state = torch.get_rng_state()
    build_reference_model("tiny", seed=3)
    assert torch.equal(state, torch.get_rng_state())


def test_adaln_not_zero_and_model_non_trivial(tiny_model, tiny_inputs, monkeypatch):
    for block in tiny_model.blocks:
        assert block.adaln[1].weight.abs().max() > 0
    out = tiny_model(**tiny_inputs)

    def rel_change(**override):
        changed = tiny_model(**{**tiny_inputs, **override})
        return ((changed - out).norm() / out.norm()).item()

    assert rel_change(timestep=tiny_inputs["timestep"] * 0 + 100.0) > 0.01
    assert rel_change(encoder_hidden_states=tiny_inputs["encoder_hidden_states"].flip(0)) > 0.01
    assert rel_change(hidden_states=tiny_inputs["hidden_states"].roll(1, dims=-1)) > 0.01

    # Attention matters: uniform attention (every query sees the mean value) changes the output.
    monkeypatch.setattr(
        reference_dit.F,
        "scaled_dot_product_attention",
        lambda q, k, v: v.mean(dim=-2, keepdim=True).expand_as(v),
    )
    assert (tiny_model(**tiny_inputs) - out).norm() / out.norm() > 0.05


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"hidden_states": torch.zeros(2, 3, 2, 8, 8)}, "hidden_states"),
        ({"hidden_states": torch.zeros(2, 4, 8, 8)}, "hidden_states"),
        ({"hidden_states": torch.zeros(2, 4, 2, 7, 8)}, "multiple of the patch size"),
        ({"encoder_hidden_states": torch.zeros(2, 8, 31)}, "encoder_hidden_states"),
        ({"encoder_hidden_states": torch.zeros(1, 8, 32)}, "encoder_hidden_states"),
    ],
)
def test_forward_input_errors(tiny_model, tiny_inputs, override, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**{**tiny_inputs, **override})


def test_rope_axis_split():
    assert rope_axis_dims(64) == (16, 24, 24)
    assert rope_axis_dims(32) == (8, 12, 12)
    for d in range(8, 130, 2):
        dims = rope_axis_dims(d)
        assert sum(dims) == d and all(x >= 2 and x % 2 == 0 for x in dims), d


def test_rope_is_a_relative_rotation():
    grid, d = (2, 3, 4), 32
    cos, sin = rope_3d_tables(grid, d, 10000.0)
    n = math.prod(grid)
    assert cos.shape == sin.shape == (n, d)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(n, d, generator=gen)
    rq = apply_rope(q, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))  # a rotation
    torch.testing.assert_close(rq[0], q[0])  # position (0, 0, 0) is the identity
    # Scores depend on relative position only: same vectors at offsets (0,0,0)->(1,1,1)
    # and (0,1,2)->(1,2,3) give the same dot product.
    idx = lambda f, h, w: (f * grid[1] + h) * grid[2] + w  # noqa: E731
    a, b = q[0], q[1]
    pos = [idx(0, 0, 0), idx(1, 1, 1), idx(0, 1, 2), idx(1, 2, 3)]
    qa = apply_rope(a.expand(4, d), cos[pos], sin[pos])
    kb = apply_rope(b.expand(4, d), cos[pos], sin[pos])
    torch.testing.assert_close(qa[0] @ kb[1], qa[2] @ kb[3])


def test_sincos_positions_are_fixed_distinct_and_split_like_the_rope():
    grid, dim, theta = (2, 3, 4), 32, 100.0
    table = sincos_3d_embedding(grid, dim, theta)
    n = math.prod(grid)
    assert table.shape == (n, dim)
    assert table.abs().max() <= 1.0
    # position (0, 0, 0): every sine 0, every cosine 1, axis by axis
    expected_origin = torch.cat([torch.cat([torch.zeros(a // 2), torch.ones(a // 2)])
                                 for a in rope_axis_dims(dim)])
    torch.testing.assert_close(table[0], expected_origin)
    # every token gets its own code; the width axis moves only the width channels
    assert torch.cdist(table, table).add(torch.eye(n)).min() > 0.1
    dim_t, dim_h, _ = rope_axis_dims(dim)
    changed = (table[1] - table[0]).abs() > 1e-6  # (0, 0, 0) -> (0, 0, 1)
    assert not changed[: dim_t + dim_h].any() and changed[dim_t + dim_h :].any()


def test_absolute_positions_add_the_table_to_the_video_tokens(tiny_inputs):
    plain = build_reference_model("tiny")
    positioned = ReferenceDiT(dataclasses.replace(TINY, absolute_positions=True)).eval()
    positioned.load_state_dict(plain.state_dict())  # no new parameters: a fixed table
    seen = {}
    handle = positioned.blocks[0].register_forward_pre_hook(
        lambda mod, args: seen.update(video=args[0])  # returns None: inputs unchanged
    )
    try:
        out = positioned(**tiny_inputs)
    finally:
        handle.remove()
    patches = plain.patch_embed(tiny_inputs["hidden_states"]).flatten(2).transpose(1, 2)
    table = sincos_3d_embedding(TINY.grid, TINY.hidden_size, TINY.rope_theta)
    torch.testing.assert_close(seen["video"], patches + table)
    assert not torch.allclose(out, plain(**tiny_inputs))
    graphs = _capture(positioned, tiny_inputs)
    assert len(graphs) == 1  # still one graph: the table traces to arange arithmetic


def _capture(model, inputs) -> list[torch.fx.GraphModule]:
    graphs: list[torch.fx.GraphModule] = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        torch.compile(model, backend=record, fullgraph=True)(**inputs)
    finally:
        torch._dynamo.reset()
    return graphs


def test_dynamo_graph_has_one_positional_sdpa_per_block(tiny_model, tiny_inputs):
    graphs = _capture(tiny_model, tiny_inputs)
    assert len(graphs) == 1  # fullgraph, no breaks
    sdpa = [
        n
        for n in graphs[0].graph.nodes
        if n.op == "call_function" and n.target is F.scaled_dot_product_attention
    ]
    assert len(sdpa) == TINY.num_blocks
    tokens = TINY.text_tokens + TINY.video_tokens
    for i, node in enumerate(sdpa):
        assert len(node.args) == 3 and not node.kwargs
        module_path = list(node.meta["nn_module_stack"].values())[-1][0]
        assert module_path.endswith(f"blocks.{i}.attn")
        for arg in node.args:
            assert tuple(arg.meta["example_value"].shape) == (
                TINY.batch_size, TINY.num_heads, tokens, TINY.head_dim,
            )
    placeholders = [n.name for n in graphs[0].graph.nodes if n.op == "placeholder"]
    assert any("timestep" in name for name in placeholders)


def test_joint_sequence_is_text_first(tiny_model, tiny_inputs):
    """The hidden states entering to_q are cat([text, video], dim=1)."""
    seen = {}
    handle = tiny_model.blocks[0].attn.to_q.register_forward_pre_hook(
        lambda mod, args: seen.setdefault("hs", args[0])
    )
    try:
        tiny_model(**tiny_inputs)
    finally:
        handle.remove()
    hs = seen["hs"]
    assert hs.shape == (TINY.batch_size, TINY.text_tokens + TINY.video_tokens, TINY.hidden_size)
    text = tiny_model.text_proj(tiny_inputs["encoder_hidden_states"])
    block = tiny_model.blocks[0]
    temb = tiny_model.time_embed(tiny_inputs["timestep"])
    shift, scale = block.adaln(temb).chunk(6, dim=-1)[:2]
    expected_text = reference_dit.modulate(block.norm1(text), shift, scale)
    torch.testing.assert_close(hs[:, : TINY.text_tokens], expected_text)


def test_inductor_matches_eager(tiny_model, tiny_inputs):
    eager = tiny_model(**tiny_inputs)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(tiny_model, backend="inductor", fullgraph=True)(**tiny_inputs)
    finally:
        torch._dynamo.reset()
    err = (compiled - eager).abs().max().item()
    assert err < COMPILE_TOLERANCE * eager.abs().max().item()


def test_attention_preset_shapes_params_and_flop_split():
    """One forward of the "attention" preset: shapes, parameter count, attention-dominated."""
    cfg = PRESETS["attention"]
    model = build_reference_model("attention")
    assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(cfg)
    inputs = reference_inputs("attention")
    assert inputs["hidden_states"].shape == (2, 4, 4, 48, 48)
    # The math backend decomposes SDPA into bmm, which the FLOP counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(**inputs)
    assert out.shape == (2, 4, 4, 48, 48)
    assert torch.isfinite(out).all()
    counts = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if "bmm" in str(op))
    length = cfg.text_tokens + cfg.video_tokens
    assert attention == cfg.num_blocks * 2 * (2 * cfg.batch_size * length**2 * cfg.hidden_size)
    share = attention / counter.get_total_flops()
    assert ATTENTION_SHARE_RANGE[0] < share < ATTENTION_SHARE_RANGE[1]
