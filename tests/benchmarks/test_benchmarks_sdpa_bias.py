"""benchmarks/sdpa_bias.py: the three forms of a kv-reduced attention call with proportional
attention's multiplicities give one result, and the script reports their times."""

from __future__ import annotations

import json

from helpers import load_benchmark

sdpa_bias = load_benchmark("sdpa_bias")

#: float32 on a CPU: the fold divides two sums the biased softmax forms in another order.
FOLD_TOLERANCE = 1e-5
TINY_SHAPE = {"batch": 1, "heads": 2, "head_dim": 16, "video_tokens": 64, "text_tokens": 4}


def test_the_fold_into_the_values_is_the_biased_attention():
    import torch

    result = sdpa_bias.measure(TINY_SHAPE, torch.device("cpu"), torch.float32, repeats=1)
    assert (result["query_tokens"], result["key_tokens"]) == (4 + 32, 4 + 44)
    assert result["folded_max_relative_difference"] <= FOLD_TOLERANCE
    assert all(result[f"{name}_seconds"] > 0 for name in ("plain", "bias", "folded"))


def test_the_command_writes_its_json(tmp_path, capsys):
    path = tmp_path / "sdpa.json"
    assert sdpa_bias.main(["--quick", "--repeats", "1", "--json", str(path)]) == 0
    written = json.loads(path.read_text())
    assert written["shape"] == sdpa_bias.QUICK_SHAPE and written["folded_max_relative_difference"] <= FOLD_TOLERANCE
    assert "x the unmasked call" in capsys.readouterr().out
