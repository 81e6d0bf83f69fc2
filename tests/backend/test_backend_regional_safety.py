"""Regional compilation on the bundled reference DiT: the registry entry works, and what the
backend does with block graphs it cannot reduce correctly (always a named reason, never a
broken model). The variants run eagerly (``helpers.eager_compiler``): no Inductor here."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from helpers import eager_compiler, max_relative_error

import asymrnr_compile.backend
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, apply_token_layout_hook, compile_repeated_blocks
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_compile.runtime import AsymRnRRuntime
from asymrnr_lab.models import build_reference_model

PRESET = "tiny"  # 2 blocks, one joint site each: 8 text + 32 video tokens on a 2x4x4 grid
CONFIG = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, min_video_tokens=16)  # tiny: 32 video tokens
TIMESTEPS = (999.0, 749.0, 499.0)


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)


@pytest.fixture
def model():
    """A fresh tiny reference DiT per test: regional compilation compiles its blocks in place."""
    return build_reference_model(PRESET)


def _loop(compiled, inputs, timesteps=TIMESTEPS):
    outputs = []
    with torch.no_grad():
        for t in timesteps:
            outputs.append(compiled(**{**inputs, "timestep": torch.full((2,), t)}))
    return outputs


def _runtimes(backend):
    return [graph for graph in backend.graphs if isinstance(graph, AsymRnRRuntime)]


def test_reference_dit_regional_equals_whole_model(model, inputs):
    records = {"whole": [], "regional": []}
    whole = AsymRnRBackend(CONFIG, on_matching=records["whole"].append)
    expected = _loop(torch.compile(model, backend=whole, fullgraph=True, dynamic=False), inputs)
    torch._dynamo.reset()
    regional = AsymRnRBackend(CONFIG, on_matching=records["regional"].append)
    outputs = _loop(compile_repeated_blocks(model, backend=regional, fullgraph=True), inputs)

    def kept(label):
        return {(r.step, r.site.index, r.feature): r.indices.keep.sort(-1).values for r in records[label]}

    assert kept("whole").keys() == kept("regional").keys() and {k[1] for k in kept("whole")} == {0, 1}
    assert all(torch.equal(kept("whole")[key], value) for key, value in kept("regional").items())
    assert all(max_relative_error(out, ref) <= 1e-5 for out, ref in zip(outputs, expected, strict=True))
    (runtime,) = _runtimes(regional)  # one graph for both blocks
    assert runtime.to_dict()["instances"] == 2 and runtime.to_dict()["steps"] == len(TIMESTEPS)
    assert "2 of 2 attention sites reduced in 1 graph(s) (2 block instances)" in regional.report().summary()


def test_a_block_compiled_without_the_hook_warns_with_the_fix(model, inputs):
    backend = AsymRnRBackend(CONFIG)
    for block in model.blocks:  # diffusers' compile_repeated_blocks does just this
        block.compile(backend=backend, dynamic=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _loop(model, inputs, TIMESTEPS[:1])
    messages = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    assert len(messages) == 1 and "asymrnr_compile.compile_repeated_blocks(model" in messages[0]
    assert "no video tokens in this graph" in backend.report().to_dict()["graphs"][0]["fallback_reason"]


def test_skip_blocks_under_regional_compilation_matches_the_whole_model(model, inputs):
    """compile_repeated_blocks names each block call, so the skipped block runs unreduced (a chosen
    reason: no warning) while the other instance of the same graph is reduced, as whole-model
    compilation does; the report prices the skipped instance at its full cost."""
    config = dataclasses.replace(CONFIG, skip_blocks=(1,))
    records = {"whole": [], "regional": []}
    whole = AsymRnRBackend(config, on_matching=records["whole"].append)
    expected = _loop(torch.compile(model, backend=whole, fullgraph=True, dynamic=False), inputs)
    torch._dynamo.reset()
    regional = AsymRnRBackend(config, on_matching=records["regional"].append)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AsymRnRWarning)
        outputs = _loop(compile_repeated_blocks(model, backend=regional, fullgraph=True), inputs)

    def kept(label):
        return {(r.step, r.site.index, r.feature): r.indices.keep.sort(-1).values for r in records[label]}

    assert kept("whole").keys() == kept("regional").keys() and {k[1] for k in kept("whole")} == {0}
    assert all(torch.equal(kept("whole")[key], value) for key, value in kept("regional").items())
    assert all(max_relative_error(out, ref) <= 1e-5 for out, ref in zip(outputs, expected, strict=True))
    (runtime,) = _runtimes(regional)
    graph = runtime.to_dict()
    assert graph["unreduced_calls"] == {"block 'blocks.1' is in skip_blocks": len(TIMESTEPS)}
    assert graph["instances"] == 2 and runtime.cache_misses > 0
    full, reduced = runtime.cost.full_flops, runtime.cost.reduced_flops
    assert reduced < full
    assert regional.report().ideal_speedup == pytest.approx(2 * full / (full + reduced))
    assert "1 of 2 attention sites reduced in 1 graph(s) (2 block instances)" in regional.report().summary()


def test_skip_blocks_on_blocks_compiled_without_names_leaves_them_unreduced_with_the_fix(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, min_video_tokens=16, skip_blocks=(1,)))
    apply_token_layout_hook(model)
    for block in model.blocks:  # diffusers' compile_repeated_blocks does just this
        block.compile(backend=backend, dynamic=False, fullgraph=True)
    with pytest.warns(AsymRnRWarning, match="skip_blocks under regional compilation needs the blocks compiled by "
                                            "asymrnr_compile.compile_repeated_blocks"):
        _loop(model, inputs, TIMESTEPS[:1])
    assert not _runtimes(backend)


def test_block_calls_outside_a_model_call_or_on_another_grid_run_unreduced(model, inputs, caplog):
    backend = AsymRnRBackend(CONFIG)
    compiled = compile_repeated_blocks(model, backend=backend, fullgraph=True)
    _loop(compiled, inputs, TIMESTEPS[:1])
    (runtime,) = _runtimes(backend)
    misses = runtime.cache_misses
    # the same 32 tokens on a (2, 8, 2) grid: no Dynamo recompile, but not the analysed grid
    wide = {**inputs, "hidden_states": inputs["hidden_states"].reshape(2, 4, 2, 16, 4)}
    block_inputs = []
    model.blocks[1].register_forward_pre_hook(lambda module, args: block_inputs.append(args))
    with caplog.at_level("WARNING", logger="asymrnr_compile"):
        _loop(compiled, wide, TIMESTEPS[1:2])
        with torch.no_grad():  # a block called by itself, with what the model gave it
            model.blocks[1](*block_inputs[0])
    reasons = runtime.to_dict()["unreduced_calls"]
    assert reasons == {"the model call's grid (2, 8, 2) is not the grid (2, 4, 4) this graph was analysed with": 2,
                       "called outside a call of the model its layout hook is on": 1}
    assert runtime.cache_misses == misses and "a regional graph runs unreduced" in caplog.text


def test_a_block_after_blocks_a_step_cache_skipped_keeps_its_place_and_its_matching(model, inputs):
    """The middle step runs only the last block (as a step cache that skips the blocks before it,
    e.g. cache-dit's DBCache with Bn_compute_blocks=1, runs the tail): that block keeps its global
    site index and reuses the matching of its window (cache 2: steps 0-1), as in the full steps;
    it neither computes a new matching nor starts a new block instance."""
    records = []
    backend = AsymRnRBackend(CONFIG, on_matching=records.append)
    compiled = compile_repeated_blocks(model, backend=backend, fullgraph=True)
    every_block, last_only = model.blocks, torch.nn.ModuleList([model.blocks[-1]])
    with torch.no_grad():
        for step, t in enumerate(TIMESTEPS):
            model.blocks = last_only if step == 1 else every_block
            compiled(**{**inputs, "timestep": torch.full((2,), t)})
    model.blocks = every_block
    computed = {(r.step, r.site.index) for r in records}
    assert computed == {(0, 0), (0, 1), (2, 0), (2, 1)}  # none at the tail-only step
    (runtime,) = _runtimes(backend)
    graph = runtime.to_dict()
    assert graph["instances"] == 2 and runtime.cache_hits > 0
    assert graph["matching_calls"] == len(computed)  # one call per block and step that computed
