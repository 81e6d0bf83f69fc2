"""SyntheticTaskConfig validation, caption enumeration and caption text."""

from __future__ import annotations

import dataclasses
import math

import pytest

from asymrnr_lab.synthetic import Caption, SyntheticTaskConfig, all_captions


def test_default_task(config):
    assert config.video_shape == (3, 8, 32, 32)
    captions = all_captions(config)
    assert len(captions) == config.num_captions == 3 * 4 * 2 * 4 == 96
    assert len(set(captions)) == len(captions)
    # The acceptance run needs >= 128 samples = combinations x 4 noise seeds.
    assert 4 * len(captions) >= 128
    assert captions[0].text == "a red circle moving left on a black background"
    assert all(c.count == 1 and c.speed is None for c in captions)


def test_wide_task_enumerates_every_combination(wide_config):
    captions = all_captions(wide_config)
    assert len(captions) == wide_config.num_captions == 4 * 4 * 2 * 4 * 2 * 2
    assert {c.count for c in captions} == {1, 2}
    assert {c.speed for c in captions} == {"slowly", "quickly"}


@pytest.mark.parametrize("which", ["default", "wide"])
def test_caption_text_round_trip(which, config, wide_config):
    for caption in all_captions(config if which == "default" else wide_config):
        assert Caption.from_text(caption.text) == caption
        assert str(caption) == caption.text


def test_caption_texts():
    assert Caption("square", "blue", "white", "up", 2, "quickly").text == (
        "two blue squares moving quickly up on a white background"
    )
    assert Caption.from_text("  A Red  circle moving left on a black background ") == Caption(
        "circle", "red", "black", "left"
    )


@pytest.mark.parametrize(
    "text",
    [
        "a red circles moving left on a black background",  # number disagreement
        "two red circle moving left on a black background",
        "a purple circle moving left on a black background",  # unknown colour
        "a red circle moving sideways on a black background",
        "a red circle on a black background",
        "",
    ],
)
def test_caption_from_text_rejects(text):
    with pytest.raises(ValueError):
        Caption.from_text(text)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"frames": 1}, "frames"),
        ({"frames": 2.0}, "frames"),
        ({"height": 4}, "height"),
        ({"width": True}, "width"),
        ({"shapes": ()}, "shapes"),
        ({"shapes": "circle"}, "shapes"),
        ({"shapes": ("circle", "hexagon")}, "shapes"),
        ({"shapes": ("circle", "circle")}, "shapes"),
        ({"colours": ("red", "purple")}, "colours"),
        ({"backgrounds": ("black", "grey")}, "backgrounds"),
        ({"directions": ("left", "sideways")}, "directions"),
        ({"speeds": ("fast",)}, "speeds"),
        ({"counts": (3,)}, "counts"),
        ({"counts": ()}, "counts"),
        ({"counts": (True,)}, "counts"),
        ({"counts": (1, 1)}, "counts"),
        ({"object_size": 4}, "object_size"),
        ({"object_size": math.nan}, "object_size"),
        ({"object_size": 30}, "object_size"),  # no room to move
        ({"object_size": 15, "counts": (1, 2)}, "object_size"),  # two do not fit side by side
        ({"speeds": ("quickly",), "frames": 12}, "object_size"),  # travel leaves the frame
        ({"colours": ("red", "white")}, "colours and backgrounds"),  # invisible object
    ],
)
def test_bad_config_raises_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        SyntheticTaskConfig(**overrides)


def test_config_is_frozen_and_normalised(config):
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.frames = 4  # type: ignore[misc]
    c = SyntheticTaskConfig(shapes=["circle", "square"], counts=[1])
    assert c.shapes == ("circle", "square") and c.counts == (1,)
    assert hash(c) == hash(SyntheticTaskConfig(shapes=("circle", "square")))


def test_check_caption(config):
    ok = all_captions(config)[5]
    assert config.check_caption(ok) is ok
    for bad, field in [
        (dataclasses.replace(ok, shape="diamond"), "caption.shape"),
        (dataclasses.replace(ok, colour="cyan"), "caption.colour"),
        (dataclasses.replace(ok, count=2), "caption.count"),
        (dataclasses.replace(ok, speed="slowly"), "caption.speed"),
    ]:
        with pytest.raises(ValueError, match=field):
            config.check_caption(bad)
