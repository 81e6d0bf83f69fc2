"""The matching cache (runtime/matching_cache.py): one matching per (call, site, feature) and window,
reduction indices derived from it per kept-token count."""

from __future__ import annotations

import pytest
import torch

from asymrnr_compile import ops
from asymrnr_compile.runtime.matching_cache import MatchingCache

B, H, D = 2, 3, 8
GRID = (2, 4, 4)
N = 32
TEXT = 5  # text tokens before the video span


@pytest.fixture(scope="module")
def split() -> ops.TokenSplit:
    return ops.split_tokens(N, GRID, seed=7)


def _features(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _computed(split: ops.TokenSplit, x: torch.Tensor, num_keep: int, *, over_heads: bool = False):
    """What a computing variant returns for one (site, feature): the matching and its indices."""
    matching = ops.match_tokens(x, split, start=TEXT)
    indices = ops.reduction_indices(split, matching, num_keep)
    if over_heads:
        indices = ops.indices_over_heads(indices)
    return matching, indices, {**matching._asdict(), **indices._asdict()}


def test_split_and_features_are_what_the_tests_assume(split):
    assert len(split.dst) == 4 and len(split.src) == N - 4


def test_has_is_true_only_for_the_stored_key_and_window(split):
    cache = MatchingCache()
    key = (0, 1, "kv")
    assert not cache.has(key, 0)
    _, _, fields = _computed(split, _features(0, B, H, TEXT + N, D), 20)
    cache.store(key, 2, 20, fields)
    assert cache.has(key, 2)
    assert not cache.has(key, 1) and not cache.has(key, 3)
    assert not cache.has((1, 1, "kv"), 2)  # another call in the step
    assert not cache.has((0, 0, "kv"), 2)  # another site
    assert not cache.has((0, 1, "q"), 2)  # another feature


def test_indices_for_the_stored_count_are_the_stored_ones(split):
    cache = MatchingCache()
    key = (0, 0, "q")
    _, indices, fields = _computed(split, _features(1, B, H, TEXT + N, D), 20)
    cache.store(key, 0, 20, fields)
    got = cache.indices(key, 20, split)
    assert got.keep is fields["keep"] and got.restore is fields["restore"]
    assert torch.equal(got.keep, indices.keep) and torch.equal(got.restore, indices.restore)


@pytest.mark.parametrize("num_keep", [4, 12, 27, 32])
def test_indices_for_another_count_are_derived_from_the_stored_matching(split, num_keep):
    cache = MatchingCache()
    key = (0, 0, "kv")
    matching, stored, fields = _computed(split, _features(2, B, H, TEXT + N, D), 20)
    cache.store(key, 0, 20, fields)
    expected = ops.reduction_indices(split, matching, num_keep)
    got = cache.indices(key, num_keep, split)
    assert got.keep.shape == (B, H, num_keep) and got.restore.shape == (B, H, N)
    assert torch.equal(got.keep, expected.keep)
    assert torch.equal(got.restore, expected.restore)
    assert cache.indices(key, num_keep, split) is got  # derived once
    # the stored count is still the one stored
    assert cache.indices(key, 20, split).keep is fields["keep"]
    # dst tokens first, then src tokens least similar first: one count's keep is a prefix of a larger one's
    shared = min(num_keep, 20)
    assert torch.equal(got.keep[..., :shared], stored.keep[..., :shared])


def test_indices_matched_on_hidden_states_get_the_head_axis(split):
    cache = MatchingCache()
    key = (1, 0, "q")
    hidden = _features(3, B, TEXT + N, 4 * D)  # (B, L, C): one matching per batch element
    matching, stored, fields = _computed(split, hidden, 24, over_heads=True)
    assert matching.src_order.shape == (B, N - 4) and stored.keep.shape == (B, 1, 24)
    cache.store(key, 0, 24, fields)
    got = cache.indices(key, 10, split)
    expected = ops.indices_over_heads(ops.reduction_indices(split, matching, 10))
    assert got.keep.shape == (B, 1, 10) and got.restore.shape == (B, 1, N)
    assert torch.equal(got.keep, expected.keep) and torch.equal(got.restore, expected.restore)


def test_per_head_indices_get_no_extra_axis(split):
    cache = MatchingCache()
    key = (0, 0, "q")
    _, _, fields = _computed(split, _features(4, B, H, TEXT + N, D), 24)
    cache.store(key, 0, 24, fields)
    assert cache.indices(key, 10, split).keep.shape == (B, H, 10)


def test_entries_are_per_key(split):
    cache = MatchingCache()
    first, _, fields_a = _computed(split, _features(5, B, H, TEXT + N, D), 20)
    second, _, fields_b = _computed(split, _features(6, B, H, TEXT + N, D), 20)
    assert not torch.equal(first.src_order, second.src_order)
    cache.store((0, 0, "q"), 0, 20, fields_a)
    cache.store((1, 0, "q"), 0, 20, fields_b)  # the unconditional call of the same step
    assert torch.equal(cache.indices((0, 0, "q"), 8, split).keep, ops.reduction_indices(split, first, 8).keep)
    assert torch.equal(cache.indices((1, 0, "q"), 8, split).keep, ops.reduction_indices(split, second, 8).keep)


def test_a_new_window_replaces_the_matching_and_its_derived_indices(split):
    cache = MatchingCache()
    key = (0, 0, "kv")
    old, _, fields_old = _computed(split, _features(7, B, H, TEXT + N, D), 20)
    cache.store(key, 0, 20, fields_old)
    cache.indices(key, 8, split)  # derived in window 0
    new, _, fields_new = _computed(split, _features(8, B, H, TEXT + N, D), 16)
    assert not torch.equal(ops.reduction_indices(split, old, 8).keep, ops.reduction_indices(split, new, 8).keep)
    cache.store(key, 1, 16, fields_new)
    assert cache.has(key, 1) and not cache.has(key, 0)
    assert torch.equal(cache.indices(key, 8, split).keep, ops.reduction_indices(split, new, 8).keep)
    assert cache.indices(key, 16, split).keep is fields_new["keep"]
    # the count stored in window 0 is derived anew from the new matching, not served stale
    assert torch.equal(cache.indices(key, 20, split).keep, ops.reduction_indices(split, new, 20).keep)
    assert not torch.equal(cache.indices(key, 20, split).keep, fields_old["keep"])


def test_reset_forgets_entries(split):
    cache = MatchingCache()
    _, _, fields = _computed(split, _features(9, B, H, TEXT + N, D), 20)
    cache.store((0, 0, "q"), 0, 20, fields)
    cache.store((0, 1, "kv"), 0, 20, fields)
    cache.reset()
    assert cache.entries == {}
    assert not cache.has((0, 0, "q"), 0) and not cache.has((0, 1, "kv"), 0)
    with pytest.raises(KeyError):
        cache.indices((0, 0, "q"), 20, split)


def test_without_the_matching_only_the_stored_count_is_served(split):
    # fixed ratios never ask for another kept count: the cache then holds the indices only
    cache = MatchingCache()
    _, _, fields = _computed(split, _features(10, B, H, TEXT + N, D), 20)
    cache.store((0, 0, "q"), 0, 20, fields, keep_matching=False)
    entry = cache.entries[(0, 0, "q")]
    assert entry.matching == {} and set(entry.indices) == {20}
    assert cache.indices((0, 0, "q"), 20, split).keep is fields["keep"]
    with pytest.raises(KeyError, match="matching was not kept"):
        cache.indices((0, 0, "q"), 16, split)
