"""The scaling model under sequence parallelism (analysis/parallel_cost.py)."""

from __future__ import annotations

import pytest

from asymrnr_compile.analysis.parallel_cost import MODELS, Reduction, step_cost

WAN = MODELS["Wan2.1-14B"]


def test_one_rank_has_no_collectives_and_ulysses_splits_the_work():
    single, two = step_cost(WAN, 1), step_cost(WAN, 2)
    assert single.payload_bytes == single.wire_bytes == 0
    assert two.attention_flops == pytest.approx(single.attention_flops / 2)
    assert two.other_flops == pytest.approx(single.other_flops / 2, rel=0.01)
    assert 0 < two.wire_bytes < two.payload_bytes


def test_reducing_after_the_exchange_keeps_the_bytes_and_shard_local_shrinks_them():
    plain = step_cost(WAN, 4)
    after = step_cost(WAN, 4, reduction=Reduction())
    local = step_cost(WAN, 4, reduction=Reduction(), placement="shard_local")
    assert after.payload_bytes == plain.payload_bytes
    assert local.payload_bytes < plain.payload_bytes
    assert after.attention_flops < 0.5 * plain.attention_flops
    assert after.matching_flops > 0


def test_ring_sends_kv_rounds_and_only_reduces_shard_locally():
    ring = step_cost(WAN, 8, "ring")
    assert ring.payload_bytes > step_cost(WAN, 8).payload_bytes  # P - 1 rounds of K and V
    assert step_cost(WAN, 8, "ring", Reduction(), placement="shard_local").wire_bytes < ring.wire_bytes
    with pytest.raises(ValueError, match="placement"):
        step_cost(WAN, 8, "ring", Reduction())


@pytest.mark.parametrize("bad", [{"ranks": 0}, {"ranks": 2, "scheme": "tree"}, {"ranks": 2, "placement": "x"}])
def test_bad_settings_name_themselves(bad):
    with pytest.raises(ValueError, match=next(iter(k for k in bad if k != "ranks"), "ranks")):
        step_cost(WAN, **bad)
