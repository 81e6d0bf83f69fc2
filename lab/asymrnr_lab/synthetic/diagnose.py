"""Which tokens asymrnr drops in the trained model, by what they show.

The quality benchmark says *that* reduced videos lose their contours; this says *where* the
matching goes wrong. :func:`token_content` classifies every video token of a generated video as
background, object edge or object interior (from the pixels of its patch).
:func:`matching_by_content` samples captions under asymrnr with an ``on_matching`` observer
(:class:`~asymrnr_compile.runtime.MatchingRecord`) and tabulates, per block and feature, the
fraction of each class's tokens that are dropped, and of those the fraction whose stand-in (the
token whose result is copied to them) is of another class: an object token restored from
background, or the reverse, is a hole or a lump in the video.

    python -m asymrnr_lab.synthetic.diagnose [--checkpoint PATH] [--captions 8] [--seed 5]
        [--q-ratio 0.5] [--kv-ratio 0.3] [--cache-steps 5] [--match-on features|hidden_states]
        [--redraw-split] [--proportional-attention]

It starts from the published method (``preset="published"``); the flags add the options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asymrnr_compile.config import MATCH_SOURCES, AsymRnRConfig
from asymrnr_lab.sampling import SamplerConfig
from asymrnr_lab.synthetic.config import MIN_CONTRAST, PALETTE, Caption, SyntheticTaskConfig, all_captions
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, generate_videos
from asymrnr_lab.synthetic.model import TextToVideoDiT

#: Token classes, in the order of the ids :func:`token_content` returns.
CONTENT_CLASSES = ("background", "edge", "interior")
BACKGROUND, EDGE, INTERIOR = range(len(CONTENT_CLASSES))

#: A pixel shows the object when its RGB distance to the caption's background colour is above
#: this: half the smallest object/background contrast a task config allows.
OBJECT_DISTANCE = MIN_CONTRAST / 2

#: Default noise seed of the diagnosis (not one of the quality benchmark's seeds 0-3).
DIAGNOSIS_SEED = 5
#: Default number of captions diagnosed (spread over the task's caption list).
DIAGNOSIS_CAPTIONS = 8


def token_content(video: torch.Tensor, background: Sequence[float], patch: Sequence[int]) -> torch.Tensor:
    """Class id per video token -> ``LongTensor (N,)`` (``N = F' * H' * W'``, row-major).

    Args:
        video: ``(3, F, H, W)`` in [-1, 1].
        background: the background's RGB (an entry of :data:`~asymrnr_lab.synthetic.PALETTE`).
        patch: the transformer's ``(pt, ph, pw)`` patch size.

    A token whose patch has no object pixel is :data:`BACKGROUND`, one whose every pixel is object
    :data:`INTERIOR`, anything between :data:`EDGE`.
    """
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be (3, F, H, W), got {tuple(video.shape)}")
    colour = torch.tensor(background, dtype=torch.float32).view(3, 1, 1, 1)
    is_object = ((video.float() - colour).norm(dim=0) > OBJECT_DISTANCE).float()
    fraction = F.avg_pool3d(is_object[None, None], kernel_size=tuple(patch)).flatten()
    return torch.where(fraction == 0, BACKGROUND, torch.where(fraction == 1, INTERIOR, EDGE))


@dataclass(frozen=True)
class ContentDrop:
    """What the matching did to one class of tokens at one block and feature (all matchings of
    the run, every head, the conditional half of the batch).

    Attributes:
        block: block index of the site.
        feature: ``"q"`` or ``"kv"``.
        content: one of :data:`CONTENT_CLASSES`.
        tokens: token slots counted (tokens x heads x videos x matchings).
        dropped: fraction of them dropped (stood for by another token).
        crossed: fraction of the dropped ones whose stand-in is of another class.
    """

    block: int
    feature: str
    content: str
    tokens: int
    dropped: float
    crossed: float


def matching_by_content(
    model: TextToVideoDiT,
    task: SyntheticTaskConfig,
    captions: Sequence[Caption],
    seeds: Sequence[int],
    config: AsymRnRConfig,
    sampler: SamplerConfig = EVAL_SAMPLER,
) -> list[ContentDrop]:
    """Sample ``captions`` x ``seeds`` unaccelerated (to find the object) and under ``config``
    (recording every matching), then tabulate drops by content; one row per (block, feature,
    class), sorted. The sampler must use batched CFG (cond rows first, as ``"batched"`` does)."""
    from asymrnr_compile.backend import AsymRnRBackend

    if sampler.cfg_mode != "batched":
        raise ValueError(f"sampler.cfg_mode must be 'batched', got {sampler.cfg_mode!r}")
    reference = generate_videos(model, captions, seeds, task, sampler, batch_size=len(captions))
    patch = model.config.patch_size
    classes = torch.stack([token_content(video, PALETTE[caption.background], patch)
                           for video, caption in zip(reference, captions, strict=True)])  # (B, N)
    records = []
    backend = AsymRnRBackend(config, on_matching=records.append)
    torch._dynamo.reset()
    compiled = torch.compile(model.transformer, backend=backend, dynamic=False)
    generate_videos(model, captions, seeds, task, sampler, transformer=compiled, batch_size=len(captions))
    torch._dynamo.reset()

    totals: dict[tuple[int, str, int], list[int]] = {}
    batch = len(captions)
    for record in records:
        keep, restore = (t[:batch].reshape(batch, -1, t.shape[-1]).cpu() for t in record.indices)
        standing = torch.gather(keep, -1, restore)  # (B, heads, N): token computing each token
        dropped = standing != torch.arange(restore.shape[-1])
        own = classes[:, None, :].expand_as(standing)
        crossed = dropped & (torch.gather(own, -1, standing) != own)
        for content in range(len(CONTENT_CLASSES)):
            mask = own == content
            count = totals.setdefault((record.site.block_index, record.feature, content), [0, 0, 0])
            count[0] += int(mask.sum())
            count[1] += int((dropped & mask).sum())
            count[2] += int((crossed & mask).sum())
    return [
        ContentDrop(block, feature, CONTENT_CLASSES[content], tokens,
                    dropped / tokens if tokens else float("nan"),
                    crossed / dropped if dropped else float("nan"))
        for (block, feature, content), (tokens, dropped, crossed) in sorted(totals.items())
    ]


def format_table(rows: Sequence[ContentDrop]) -> str:
    """The rows as a fixed-width table."""
    lines = [f"{'block':>5} {'feature':>7} {'content':>10} {'tokens':>9} {'dropped':>8} {'crossed':>8}"]
    lines += [f"{r.block:>5} {r.feature:>7} {r.content:>10} {r.tokens:>9} {r.dropped:>8.1%} {r.crossed:>8.1%}"
              for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from asymrnr_lab.synthetic.model import CHECKPOINT_PATH, load_trained_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT_PATH))
    parser.add_argument("--captions", type=int, default=DIAGNOSIS_CAPTIONS, help="captions diagnosed")
    parser.add_argument("--seed", type=int, default=DIAGNOSIS_SEED, help="noise seed")
    parser.add_argument("--q-ratio", type=float, default=0.5)
    parser.add_argument("--kv-ratio", type=float, default=0.3)
    parser.add_argument("--cache-steps", type=int, default=5)
    parser.add_argument("--match-on", choices=MATCH_SOURCES, default="features",
                        help="what q/kv are matched on (AsymRnRConfig.match_on)")
    parser.add_argument("--redraw-split", action="store_true", help="a new dst split per matching window")
    parser.add_argument("--proportional-attention", action="store_true",
                        help="weigh each kept key by the keys it stands for")
    args = parser.parse_args(argv)
    model, task = load_trained_model(args.checkpoint)
    if not 1 <= args.captions <= task.num_captions:
        parser.error(f"--captions must be in [1, {task.num_captions}], got {args.captions}")
    captions = all_captions(task)[:: task.num_captions // args.captions][: args.captions]
    try:
        config = AsymRnRConfig(preset="published", q_ratio=args.q_ratio, kv_ratio=args.kv_ratio,
                               cache_steps=args.cache_steps, min_video_tokens=1, match_on=args.match_on,
                               redraw_split=args.redraw_split, proportional_attention=args.proportional_attention)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    rows = matching_by_content(model, task, captions, [args.seed] * len(captions), config)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
