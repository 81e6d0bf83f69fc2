"""Caption vocabulary: fixed, deterministic, round trips."""

from __future__ import annotations

import pytest
import torch

from asymrnr_lab.synthetic import Caption, Vocabulary, all_captions
from asymrnr_lab.synthetic.vocab import MAX_CAPTION_WORDS, WORDS


@pytest.mark.parametrize("which", ["default", "wide"])
def test_round_trip_every_caption(which, config, wide_config):
    vocab = Vocabulary()
    captions = all_captions(config if which == "default" else wide_config)
    ids = vocab.encode_batch(captions)
    assert ids.shape == (len(captions), MAX_CAPTION_WORDS) and ids.dtype == torch.long
    assert len({tuple(r) for r in ids.tolist()}) == len(captions)  # injective
    for caption, row in zip(captions, ids):
        assert vocab.decode(row) == caption.text
        assert Caption.from_text(vocab.decode(row)) == caption
    assert vocab.decode_batch(ids) == [c.text for c in captions]


def test_padding_and_fixed_ids():
    vocab = Vocabulary(max_length=12)
    ids = vocab.encode("a red circle moving left on a black background")
    assert ids.shape == (12,)
    assert ids[9:].tolist() == [vocab.pad_id] * 3 and vocab.pad_id == 0
    assert vocab.padding_mask(ids).sum() == 9
    assert len(vocab) == len(WORDS) and len(set(WORDS)) == len(WORDS)
    # Ids belong to trained checkpoints: they must never move.
    assert WORDS[:6] == ("<pad>", "a", "two", "moving", "on", "background")
    assert torch.equal(Vocabulary().encode(Caption("circle", "red", "black", "left")),
                       Vocabulary().encode("a red circle moving left on a black background"))


def test_encode_decode_errors():
    vocab = Vocabulary()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("a purple circle")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("<pad>")
    with pytest.raises(ValueError, match="max_length"):
        vocab.encode(" ".join(["a"] * (MAX_CAPTION_WORDS + 1)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([len(vocab)])
    with pytest.raises(ValueError, match="max_length"):
        Vocabulary(max_length=3)
    with pytest.raises(TypeError):
        vocab.encode(3)  # type: ignore[arg-type]
