"""The layout hook (what each model call tells its blocks) and compile_repeated_blocks' checks."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

from asymrnr_compile import AsymRnRBackend, apply_token_layout_hook, compile_repeated_blocks
from asymrnr_compile.regional import InputLayout, remove_token_layout_hook
from asymrnr_compile.regional.hooks import HOOK_ATTRIBUTE
from asymrnr_compile.runtime.forward_context import current_forward
from asymrnr_lab.models import build_reference_model, reference_inputs

PRESET = "tiny"  # latent (2, 8, 8), patch (1, 2, 2): grid (2, 4, 4); 8 text tokens


@pytest.fixture(scope="module")
def model():
    return build_reference_model(PRESET)


def _seen_by_blocks(model, **inputs):
    seen = []
    handles = [block.register_forward_pre_hook(lambda module, args: seen.append(current_forward()))
               for block in model.blocks]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_each_model_call_tells_its_blocks_the_grid_text_and_timestep(model):
    hook = apply_token_layout_hook(model)
    try:
        inputs = reference_inputs(PRESET)
        timestep = torch.tensor([750.0, 250.0])  # per batch element: read as its maximum
        seen = _seen_by_blocks(model, **{**inputs, "timestep": timestep})
        assert len(seen) == len(model.blocks) and seen[0] is seen[1] is not None
        assert (seen[0].layout.grid, seen[0].layout.text_tokens, seen[0].timestep) == ((2, 4, 4), 8, 750.0)
        assert current_forward() is None and hook.calls == 1
        # positional arguments are named by the forward's signature
        with torch.no_grad():
            model(inputs["hidden_states"], inputs["encoder_hidden_states"], timestep)
        assert hook.calls == 2 and current_forward() is None
    finally:
        assert remove_token_layout_hook(model)
    assert not hasattr(model, HOOK_ATTRIBUTE) and not remove_token_layout_hook(model)
    assert _seen_by_blocks(model, **reference_inputs(PRESET)) == [None, None]


class _Raises(nn.Module):
    config = {"patch_size": (1, 1, 1)}

    def forward(self, hidden_states, timestep):
        assert current_forward() is not None
        raise RuntimeError("boom")


def test_the_context_closes_when_the_model_raises_and_a_second_hook_replaces_the_first():
    model = _Raises()
    layout = InputLayout("bcfhw", text_arg=None)
    first = apply_token_layout_hook(model, layout)
    second = apply_token_layout_hook(model, layout, timestep_arg="timestep")
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.zeros(1, 1, 2, 2, 2), torch.ones(1))
    assert current_forward() is None and (first.calls, second.calls) == (0, 1)


def test_a_grid_the_hook_cannot_read_leaves_the_model_running(model, caplog):
    apply_token_layout_hook(model, InputLayout("bcfhw", video_arg="latents"))
    try:
        with caplog.at_level("WARNING", logger="asymrnr_compile"):
            assert _seen_by_blocks(model, **reference_inputs(PRESET)) == [None, None]
        assert "cannot read the video grid" in caplog.text
    finally:
        remove_token_layout_hook(model)


def test_the_hooks_do_nothing_while_dynamo_traces_the_whole_model(model):
    apply_token_layout_hook(model)
    try:
        torch._dynamo.reset()
        with torch.no_grad():
            torch.compile(model, backend="eager", fullgraph=True)(**reference_inputs(PRESET))
        assert current_forward() is None
    finally:
        remove_token_layout_hook(model)
        torch._dynamo.reset()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"options": {"q_raito": 0.5}}, ValueError, r"compile_repeated_blocks\(options=...\): unknown .*'q_raito'"),
    ({"options": {"q_ratio": 0.5}, "backend": AsymRnRBackend()}, ValueError, "not both"),
    ({"backend": "inductor"}, ValueError, "backend must be 'asymrnr' or an AsymRnRBackend"),
    ({"layout": "bcfhw"}, TypeError, "layout must be an InputLayout"),
])
def test_compile_repeated_blocks_checks_its_arguments(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        compile_repeated_blocks(model, **kwargs)
    assert not hasattr(model, HOOK_ATTRIBUTE)


def test_compile_repeated_blocks_needs_a_model_with_blocks():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        compile_repeated_blocks("transformer")
    with pytest.raises(ValueError, match="no input layout is registered"):
        compile_repeated_blocks(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"no module of the repeated block classes \('Block',\)"):
        compile_repeated_blocks(nn.Linear(2, 2), layout=InputLayout("bcfhw", repeated_blocks=("Block",)))
