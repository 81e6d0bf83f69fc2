"""The registry of how each transformer's call gives its video token grid (pure data and shapes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asymrnr_compile.regional import INPUT_LAYOUTS, InputLayout, input_layout_of, repeated_block_classes, token_grid
from asymrnr_compile.regional.input_layouts import patch_sizes, text_tokens

WAN = {"patch_size": (1, 2, 2)}
COGVIDEOX = {"patch_size": 2, "patch_size_t": None}


def test_grids_of_each_latent_layout():
    bcfhw = {"hidden_states": torch.zeros(1, 4, 3, 16, 8)}
    assert token_grid(InputLayout("bcfhw"), WAN, bcfhw) == (3, 8, 4)
    assert token_grid(InputLayout("bcfhw"), {"patch_size": 2, "patch_size_t": 3}, bcfhw) == (1, 8, 4)
    bfchw = {"hidden_states": torch.zeros(2, 3, 4, 8, 16)}  # CogVideoX: frames before channels
    assert token_grid(InputLayout("bfchw"), COGVIDEOX, bfchw) == (3, 4, 8)
    ltx = InputLayout("tokens", grid_args=("num_frames", "height", "width"))
    assert token_grid(ltx, {"patch_size": 1}, {"num_frames": 2, "height": torch.tensor(16), "width": 8}) == (2, 16, 8)


def test_patch_sizes_from_dict_and_dataclass_configs():
    class Config:
        patch_size = (1, 2, 2)

    assert patch_sizes(InputLayout("bcfhw"), Config()) == (1, 2, 2)
    assert patch_sizes(InputLayout("bcfhw"), {"patch_size": 2}) == (1, 2, 2)  # no patch_size_t key: 1
    assert patch_sizes(InputLayout("bcfhw", patch_size_t=None), {"patch_size": 2, "patch_size_t": 4}) == (1, 2, 2)


@pytest.mark.parametrize("layout, config, arguments, match", [
    (InputLayout("bcfhw"), WAN, {}, "'hidden_states' must be a 5-d tensor"),
    (InputLayout("bcfhw"), WAN, {"hidden_states": torch.zeros(1, 8, 4)}, r"5-d tensor \(BCFHW\), got \(1, 8, 4\)"),
    (InputLayout("bcfhw"), WAN, {"hidden_states": torch.zeros(1, 4, 2, 15, 8)}, "whole number of patches"),
    (InputLayout("bcfhw"), {"patch_size": 0}, {"hidden_states": torch.zeros(1, 4, 2, 8, 8)}, "'patch_size' must be"),
    (InputLayout("bcfhw"), {"patch_size": 2, "patch_size_t": "2"}, {"hidden_states": torch.zeros(1, 4, 2, 8, 8)},
     "'patch_size_t' must be"),
    (InputLayout("tokens", grid_args=("f", "h", "w")), {"patch_size": 1}, {"f": 2, "h": 4}, "argument 'w'"),
])
def test_unreadable_grids_raise_naming_the_argument_or_setting(layout, config, arguments, match):
    with pytest.raises(ValueError, match=match):
        token_grid(layout, config, arguments)


def test_input_layout_validation():
    with pytest.raises(ValueError, match="latent must be one of"):
        InputLayout("bchw")
    with pytest.raises(ValueError, match="needs grid_args"):
        InputLayout("tokens")
    with pytest.raises(TypeError, match="repeated_blocks must be a tuple"):
        InputLayout("bcfhw", repeated_blocks="Block")


def test_text_tokens_read_from_the_text_argument():
    assert text_tokens(InputLayout("bcfhw"), {"encoder_hidden_states": torch.zeros(2, 12, 8)}) == 12
    assert text_tokens(InputLayout("bcfhw", text_arg=None), {"encoder_hidden_states": torch.zeros(2, 12, 8)}) is None
    assert text_tokens(InputLayout("bcfhw"), {}) is None


def test_registry_lookup_by_class_name_and_base_class():
    class ReferenceDiT(nn.Module):  # the registered name
        pass

    class MyDiT(ReferenceDiT):
        pass

    assert input_layout_of(MyDiT()) is INPUT_LAYOUTS["ReferenceDiT"]
    with pytest.raises(ValueError, match="no input layout is registered for Linear .*WanTransformer3DModel"):
        input_layout_of(nn.Linear(1, 1))
    assert repeated_block_classes(MyDiT()) == ("DiTBlock",)
    with pytest.raises(ValueError, match="declares no _repeated_blocks"):
        repeated_block_classes(nn.Linear(1, 1), InputLayout("bcfhw"))


def test_the_registered_diffusers_families_give_their_token_grids():
    """The grid of each tiny family from its own inputs and config (the grid the whole-model
    analysis finds in its graph: test_analysis_diffusers.py)."""
    pytest.importorskip("diffusers")
    from asymrnr_lab.models.diffusers_models import build

    expected = {"cogvideox": (2, 4, 4), "hunyuan": (2, 8, 8), "mochi": (2, 8, 8), "wan": (2, 8, 8),
                "ltx": (2, 16, 16)}
    options = {"cogvideox": {"frames": 2}, "hunyuan": {"frames": 2, "size": 8}}
    for name, grid in expected.items():
        model, inputs = build(name, **options.get(name, {}))
        layout = input_layout_of(model)
        assert token_grid(layout, model.config, inputs) == grid, name
        assert repeated_block_classes(model), name
    assert repeated_block_classes(build("cogvideox")[0]) == ("CogVideoXBlock",)  # diffusers declares none
