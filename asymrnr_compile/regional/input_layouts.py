"""Registry data: how a transformer's call gives its video token grid, and which blocks repeat.

A block compiled alone cannot see the video grid; the whole model's call can. :class:`InputLayout`
says, for one transformer class, where the video latent is among the call's arguments, how its
axes are ordered, and which entries of the model's config hold the patch sizes;
:func:`token_grid` turns one call's arguments into the ``(F, H, W)`` token grid after patching.
No model code is inspected: the registry is data, and a model not listed gets its own
:class:`InputLayout` from the caller.

Registered (latent layout: grid after patching):

- ``CogVideoXTransformer3DModel`` (bfchw: ``(F / patch_size_t, H / patch_size, W / patch_size)``,
  ``patch_size_t`` None: 1; blocks ``CogVideoXBlock``, which diffusers does not list);
- ``HunyuanVideoTransformer3DModel`` (bcfhw, ``patch_size`` and ``patch_size_t``);
- ``MochiTransformer3DModel`` (bcfhw, spatial ``patch_size``; blocks ``MochiTransformerBlock`` and
  ``MochiAttentionPool``: the time embedding's text-only attention runs before the blocks and is
  compiled too, so that its attention call is counted and the blocks get their whole-model site
  indices);
- ``WanTransformer3DModel`` (bcfhw, ``patch_size = (t, h, w)``);
- ``LTXVideoTransformer3DModel`` (tokens: ``(num_frames, height, width)``, its RoPE grid);
- ``ReferenceDiT``, the bundled model (bcfhw, ``patch_size = (t, h, w)``; blocks ``DiTBlock``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

Grid = tuple[int, int, int]
LatentLayout = Literal["bcfhw", "bfchw", "tokens"]
LATENT_LAYOUTS: tuple[str, ...] = ("bcfhw", "bfchw", "tokens")

#: Axes ``(frames, height, width)`` of the video argument, per latent layout with a 5-d latent.
LATENT_AXES: dict[str, tuple[int, int, int]] = {"bcfhw": (2, 3, 4), "bfchw": (1, 3, 4)}


@dataclass(frozen=True)
class InputLayout:
    """How one transformer class's call gives its video token grid (registry data).

    Attributes:
        latent: layout of the video argument: ``"bcfhw"`` (B, C, F, H, W), ``"bfchw"``
            (B, F, C, H, W; CogVideoX) or ``"tokens"`` ((B, N, C), already patchified: the token
            grid comes from ``grid_args``, as the model's own positional grid reads it).
        video_arg: name of the video argument. Default ``"hidden_states"``.
        text_arg: name of the text argument ``(B, T, C)``, or None. Default
            ``"encoder_hidden_states"``.
        patch_size: config key of the patch size: an int (height and width) or ``(t, h, w)``.
            Default ``"patch_size"``.
        patch_size_t: config key of the temporal patch size (a missing key or None: 1), used
            when ``patch_size`` is an int. Default ``"patch_size_t"``.
        grid_args: with ``latent="tokens"``, the arguments holding the token grid's frames,
            height and width. Default None.
        repeated_blocks: block classes to compile when the model class declares no
            ``_repeated_blocks`` (diffusers' list). Default ().
    """

    latent: LatentLayout
    video_arg: str = "hidden_states"
    text_arg: str | None = "encoder_hidden_states"
    patch_size: str = "patch_size"
    patch_size_t: str | None = "patch_size_t"
    grid_args: tuple[str, str, str] | None = None
    repeated_blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.latent not in LATENT_LAYOUTS:
            raise ValueError(f"latent must be one of {LATENT_LAYOUTS}, got {self.latent!r}")
        if self.latent == "tokens" and (self.grid_args is None or len(self.grid_args) != 3):
            raise ValueError('latent="tokens" needs grid_args: the (frames, height, width) argument names')
        if isinstance(self.repeated_blocks, str) or not all(isinstance(b, str) for b in self.repeated_blocks):
            raise TypeError(f"repeated_blocks must be a tuple of class names, got {self.repeated_blocks!r}")


INPUT_LAYOUTS: dict[str, InputLayout] = {
    "CogVideoXTransformer3DModel": InputLayout("bfchw", repeated_blocks=("CogVideoXBlock",)),
    "HunyuanVideoTransformer3DModel": InputLayout("bcfhw"),
    "MochiTransformer3DModel": InputLayout("bcfhw", repeated_blocks=("MochiTransformerBlock", "MochiAttentionPool")),
    "WanTransformer3DModel": InputLayout("bcfhw"),
    "LTXVideoTransformer3DModel": InputLayout("tokens", grid_args=("num_frames", "height", "width")),
    "ReferenceDiT": InputLayout("bcfhw", text_arg="encoder_hidden_states", repeated_blocks=("DiTBlock",)),
}
"""The registered transformer classes, by class name (a subclass finds its parent's entry)."""


def input_layout_of(model: torch.nn.Module) -> InputLayout:
    """The registered :class:`InputLayout` of ``model``'s class (or of its nearest registered base).

    Raises:
        ValueError: no class of ``model`` is registered (the message names the registered ones).
    """
    for cls in type(model).__mro__:
        layout = INPUT_LAYOUTS.get(cls.__name__)
        if layout is not None:
            return layout
    raise ValueError(f"no input layout is registered for {type(model).__name__} (registered: "
                     f"{', '.join(sorted(INPUT_LAYOUTS))}); pass layout=InputLayout(...) describing its video argument")


def config_value(config: Any, key: str) -> Any:
    """``config[key]`` of a diffusers config (a dict) or a dataclass config; None when absent."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def patch_sizes(layout: InputLayout, config: Any) -> Grid:
    """The ``(t, h, w)`` patch size of a model from its config.

    Raises:
        ValueError: the config's patch size is missing or not a positive int or 3 of them.
    """
    patch = config_value(config, layout.patch_size)
    if isinstance(patch, (tuple, list)) and len(patch) == 3 and all(_positive_int(p) for p in patch):
        return int(patch[0]), int(patch[1]), int(patch[2])
    if not _positive_int(patch):
        raise ValueError(f"the model config's {layout.patch_size!r} must be a positive int or (t, h, w), got {patch!r}")
    temporal = config_value(config, layout.patch_size_t) if layout.patch_size_t else None
    if temporal is None:
        temporal = 1
    if not _positive_int(temporal):
        raise ValueError(f"the model config's {layout.patch_size_t!r} must be a positive int or None, got {temporal!r}")
    return int(temporal), int(patch), int(patch)


def token_grid(layout: InputLayout, config: Any, arguments: Mapping[str, Any]) -> Grid:
    """The video token grid ``(F, H, W)`` after patching of one call (a ``"tokens"`` latent: the
    grid arguments as given).

    Args:
        layout: the model's registry entry.
        config: the model's config (``model.config``).
        arguments: the call's arguments by name.

    Raises:
        ValueError: the video argument (or a grid argument) is missing or has the wrong shape,
            or the latent is not a whole number of patches.
    """
    if layout.latent == "tokens":
        assert layout.grid_args is not None  # checked in InputLayout
        sizes = []
        for name in layout.grid_args:
            value = arguments.get(name)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = int(value.item())
            if not _positive_int(value):
                raise ValueError(f"argument {name!r} must be a positive int (a token grid size), got {value!r}")
            sizes.append(int(value))
        return sizes[0], sizes[1], sizes[2]
    else:
        video = arguments.get(layout.video_arg)
        if not isinstance(video, torch.Tensor) or video.dim() != len(layout.latent):
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"argument {layout.video_arg!r} must be a {len(layout.latent)}-d tensor "
                             f"({layout.latent.upper()}), got {shape}")
        latent = tuple(int(video.shape[axis]) for axis in LATENT_AXES[layout.latent])
    patch = patch_sizes(layout, config)
    if any(size % p for size, p in zip(latent, patch)):
        raise ValueError(f"latent (F, H, W) {latent} is not a whole number of patches {patch}")
    return latent[0] // patch[0], latent[1] // patch[1], latent[2] // patch[2]


def text_tokens(layout: InputLayout, arguments: Mapping[str, Any]) -> int | None:
    """How many text tokens one call has (axis 1 of the text argument), or None."""
    text = arguments.get(layout.text_arg) if layout.text_arg else None
    return int(text.shape[1]) if isinstance(text, torch.Tensor) and text.dim() >= 2 else None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


__all__ = ["INPUT_LAYOUTS", "InputLayout", "LatentLayout", "config_value", "input_layout_of", "patch_sizes",
           "text_tokens", "token_grid"]
