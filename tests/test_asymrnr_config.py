"""AsymRnRConfig validation and the options-dict form."""

from __future__ import annotations

import pytest

from asymrnr_compile.config import AsymRnRConfig


def test_defaults_are_valid_and_frozen():
    config = AsymRnRConfig()
    assert config.q_ratio == 0.5 and config.kv_ratio == 0.3 and config.h_ratio == 0.0
    assert config.dst_stride == (2, 2, 2) and config.cache_steps == 2 and config.preset == "default"
    assert AsymRnRConfig(preset="published").cache_steps == 5
    with pytest.raises(AttributeError):
        config.q_ratio = 0.1  # type: ignore[misc]


def test_from_options_builds_the_same_config():
    config = AsymRnRConfig.from_options({"q_ratio": 0.25, "dst_stride": [1, 2, 2], "skip_blocks": 3})
    assert config == AsymRnRConfig(q_ratio=0.25, dst_stride=(1, 2, 2), skip_blocks=(3,))
    assert AsymRnRConfig.from_options(None) == AsymRnRConfig()


def test_unknown_option_names_closest_key_and_allowed_keys():
    with pytest.raises(ValueError, match=r"'q_rato'.*did you mean 'q_ratio'.*Allowed options: .*kv_ratio"):
        AsymRnRConfig.from_options({"q_rato": 0.5})


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"q_ratio": 1.0}, r"q_ratio must be in \[0, 1\)"),
        ({"kv_ratio": -0.1}, r"kv_ratio must be in \[0, 1\)"),
        ({"h_ratio": float("nan")}, r"h_ratio must be in \[0, 1\)"),
        ({"cache_steps": 0}, r"cache_steps must be an int >= 1"),
        ({"dst_stride": (2, 0, 2)}, r"dst_stride must have every entry >= 1"),
        ({"dst_stride": (2, 2)}, r"dst_stride must be a sequence of 3 ints"),
        ({"similarity": "cosin"}, r"similarity must be one of .*did you mean 'cosine'"),
        ({"reduce_mode": "average"}, r"reduce_mode must be one of \('replace', 'mean'\)"),
        ({"grid": (4, 0, 4)}, r"grid must have every entry >= 1"),
        ({"min_video_tokens": 0}, r"min_video_tokens must be an int >= 1"),
        ({"warmup_steps": -1}, r"warmup_steps must be an int >= 0"),
        ({"schedule": "x.safetensors"}, r"schedule: cannot load 'x.safetensors'.*no such file"),
        ({"num_steps": 0}, r"num_steps must be an int >= 1"),
    ],
)
def test_bad_values_raise_value_error_naming_the_setting(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        AsymRnRConfig.from_options(options)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"q_ratio": "0.5"}, r"q_ratio must be a float in \[0, 1\)"),
        ({"cache_steps": 2.0}, r"cache_steps must be an int"),
        ({"skip_blocks": [1.5]}, r"skip_blocks entries must be"),
        ({"proportional_attention": 1}, r"proportional_attention must be a bool"),
    ],
)
def test_wrong_types_raise_type_error(options, pattern):
    with pytest.raises(TypeError, match=pattern):
        AsymRnRConfig.from_options(options)


def test_options_must_be_a_mapping():
    with pytest.raises(TypeError, match="options must be a dict"):
        AsymRnRConfig.from_options([("q_ratio", 0.5)])  # type: ignore[arg-type]


def test_the_conflict_rule_is_h_against_q_and_kv_either_way_round():
    from asymrnr_compile.vocabulary import conflicts

    assert conflicts("q", ["h"]) and conflicts("kv", {"h"}) and conflicts("h", ["kv"]) and conflicts("h", ["q", "kv"])
    assert not conflicts("q", ["kv"]) and not conflicts("kv", ["q"]) and not conflicts("h", [])
    assert not conflicts("h", ["h"]) and not conflicts("q", [])
