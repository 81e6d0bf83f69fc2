"""A small fixed word vocabulary for the synthetic captions (no external tokenizer).

Word ids are fixed by the module tables of :mod:`asymrnr_lab.synthetic.config` (every colour,
shape, direction, speed and count word), not by a task config, so a model trained on one config
reads the captions of any other. Id 0 is padding; captions are padded to :attr:`max_length`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from asymrnr_lab.synthetic.config import (
    COUNT_WORDS,
    DIRECTIONS,
    PALETTE,
    SHAPES,
    SPEEDS,
    Caption,
    _plural,
)

PAD = "<pad>"

#: Words of the caption grammar, in id order after padding. Append only (ids are part of a
#: trained checkpoint).
WORDS: tuple[str, ...] = (
    PAD,
    *dict.fromkeys(
        [
            *COUNT_WORDS.values(),
            "moving",
            "on",
            "background",
            *PALETTE,
            *SHAPES,
            *(_plural(s) for s in SHAPES),
            *DIRECTIONS,
            *SPEEDS,
        ]
    ),
)

#: Longest caption: count, colour, shape, "moving", speed, direction, "on", "a", colour,
#: "background".
MAX_CAPTION_WORDS = 10


class Vocabulary:
    """Deterministic word <-> id table.

    >>> vocab = Vocabulary()
    >>> vocab.decode(vocab.encode("a red circle moving left on a black background"))
    'a red circle moving left on a black background'
    """

    pad_id = 0

    def __init__(self, max_length: int = MAX_CAPTION_WORDS) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or (
            max_length < MAX_CAPTION_WORDS
        ):
            raise ValueError(
                f"max_length must be an int >= {MAX_CAPTION_WORDS} (the longest caption), "
                f"got {max_length!r}"
            )
        self.max_length = max_length
        self.words = WORDS
        self._ids = {w: i for i, w in enumerate(WORDS)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: Caption | str) -> torch.Tensor:
        """Token ids ``(max_length,)`` (int64), padded with :attr:`pad_id`."""
        text = caption.text if isinstance(caption, Caption) else caption
        if not isinstance(text, str):
            raise TypeError(f"caption must be a Caption or str, got {type(caption).__name__}")
        words = text.lower().split()
        if len(words) > self.max_length:
            raise ValueError(
                f"caption has {len(words)} words, more than max_length={self.max_length}: {text!r}"
            )
        unknown = [w for w in words if w not in self._ids or w == PAD]
        if unknown:
            raise ValueError(f"caption has words outside the vocabulary {unknown!r}: {text!r}")
        ids = [self._ids[w] for w in words] + [self.pad_id] * (self.max_length - len(words))
        return torch.tensor(ids, dtype=torch.long)

    def encode_batch(self, captions: Sequence[Caption | str]) -> torch.Tensor:
        """Token ids ``(B, max_length)``."""
        if not captions:
            return torch.empty(0, self.max_length, dtype=torch.long)
        return torch.stack([self.encode(c) for c in captions])

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Caption text of ``ids`` (padding dropped)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if values and isinstance(values[0], list):
            raise ValueError("decode takes one sequence of ids; use decode_batch for a batch")
        out = []
        for i in values:
            if not 0 <= int(i) < len(self.words):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self.words)})")
            if int(i) != self.pad_id:
                out.append(self.words[int(i)])
        return " ".join(out)

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        """Caption texts of ``(B, T)`` ids."""
        return [self.decode(row) for row in ids]

    def padding_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask, True on real words (use it to pool caption embeddings)."""
        return ids != self.pad_id
