"""benchmarks/stacked_settings_quality.py: its named settings and its argument checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import stacked_settings_quality  # noqa: E402

from asymrnr_compile.config import AsymRnRConfig  # noqa: E402
from asymrnr_lab.synthetic.accelerators import CacheDiT  # noqa: E402


def test_every_setting_is_a_cache_dit_cache_with_its_probe_exact_and_the_names_say_what_it_runs():
    settings = stacked_settings_quality.settings()
    assert all(isinstance(cache, CacheDiT) and cache.exact_probe_blocks for cache in settings.values())
    for name, cache in settings.items():
        assert f" {cache.threshold:g}" in name
        assert ("TaylorSeer" in name) == (cache.taylorseer_order is not None)
        assert (cache.asymrnr is None) == (" + " not in name)
    assert settings["q 0.7 / kv 0.5 + DBCache 0.3"].asymrnr == AsymRnRConfig(q_ratio=0.7, kv_ratio=0.5)
    assert settings["defaults + DBCache 0.3, warm-up 3"].warmup_steps == 3
    nothing_skipped = settings["DBCache 0 (nothing skipped)"]
    assert nothing_skipped.threshold == 0 and nothing_skipped.asymrnr is None


@pytest.mark.parametrize(("argv", "message"), [
    (["no such setting"], "unknown: ['no such setting']"),
    ([], "name one or more settings"),
    (["DBCache 0.3", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["DBCache 0.3", "--steps", "1"], "--steps must be >= 2, got 1"),
])
def test_bad_arguments_are_rejected_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit):
        stacked_settings_quality.main(argv)
    assert message in capsys.readouterr().err
