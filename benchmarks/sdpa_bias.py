"""What proportional attention's bias costs SDPA, and what folding it into the values would cost.

The defaults (``proportional_attention=True``) add ``log m`` (``m``: how many video tokens a kept
key stands for) to the logits of every kv-reduced attention call, as an additive float mask. On a
CPU the flash kernel takes that mask at no cost; on a GPU a float mask rules out the flash
backend, and SDPA falls back to the memory-efficient or cuDNN one. The same result without a mask:
``softmax(s + log m) v = (sum_j m_j e^s_j v_j) / (sum_j m_j e^s_j)``, i.e. SDPA on the values
``[m v, m]`` (one more channel, padded to a multiple of 8) and a division by the last channel.

This times, at one attention call of the kv-reduced size (q 0.5 / kv 0.3 of the video tokens,
text kept), on ``--device``: SDPA without a mask (what the published settings run), with the
bias (what the defaults run), and the fold; each the median of ``--repeats`` calls after a
warm-up, synchronised on a GPU. Which SDPA backend runs is PyTorch's choice, as in the model.

    python benchmarks/sdpa_bias.py --device cuda --json out/sdpa_bias.json   # CogVideoX-2B shape
    python benchmarks/sdpa_bias.py --quick                                   # CPU, small shape
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

#: CogVideoX-2B under CFG: batch 2, 30 heads of 64, 17,550 video + 226 text tokens.
FULL_SHAPE = {"batch": 2, "heads": 30, "head_dim": 64, "video_tokens": 17550, "text_tokens": 226}
#: ``--quick``: the reference DiT's ``attention`` preset (batch 2, 4 heads, 2,304 + 32 tokens).
QUICK_SHAPE = {"batch": 2, "heads": 4, "head_dim": 64, "video_tokens": 2304, "text_tokens": 32}
Q_RATIO, KV_RATIO = 0.5, 0.3
MAX_MULTIPLICITY = 4  # keys stand for 1..4 video tokens (the counts of a kv 0.3 reduction are small)
CHANNEL_ALIGNMENT = 8  # SDPA's fused kernels want head dims in multiples of 8


def _shapes(shape: dict[str, int]) -> tuple[int, int]:
    video, text = shape["video_tokens"], shape["text_tokens"]
    return text + int(video * (1 - Q_RATIO)), text + int(video * (1 - KV_RATIO))


def _time(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    synchronise()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronise()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(shape: dict[str, int], device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Median seconds of the three forms, and the fold's largest difference from the biased SDPA."""
    batch, heads, head_dim = shape["batch"], shape["heads"], shape["head_dim"]
    query_tokens, key_tokens = _shapes(shape)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=generator).to(device, dtype)
               for length in (query_tokens, key_tokens, key_tokens))
    counts = torch.randint(1, MAX_MULTIPLICITY + 1, (batch, 1, key_tokens, 1), generator=generator).to(device)
    bias = counts.to(dtype).log().transpose(-1, -2)  # (B, 1, 1, Lk): broadcast over heads and queries
    padding = -(head_dim + 1) % CHANNEL_ALIGNMENT
    folded_values = torch.cat([v * counts.to(dtype), counts.to(dtype).expand(batch, heads, key_tokens, 1),
                               v.new_zeros(batch, heads, key_tokens, padding)], dim=-1)

    def plain() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    def biased() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def folded() -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, folded_values)
        return out[..., :head_dim] / out[..., head_dim:head_dim + 1]

    with torch.no_grad():
        reference = biased().float()
        difference = (folded().float() - reference).abs().max().item() / reference.abs().max().item()
        return {"plain_seconds": _time(plain, device, repeats), "bias_seconds": _time(biased, device, repeats),
                "folded_seconds": _time(folded, device, repeats), "folded_max_relative_difference": difference,
                "query_tokens": query_tokens, "key_tokens": key_tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="default: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--quick", action="store_true", help="the reference DiT's attention size instead")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be an int >= 1, got {args.repeats}")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    result = measure(shape, device, dtype, args.repeats)
    plain = result["plain_seconds"]
    print(f"SDPA at the kv-reduced size ({result['query_tokens']} queries x {result['key_tokens']} keys, "
          f"{shape['batch']} x {shape['heads']} heads of {shape['head_dim']}), {dtype}, {device}:")
    for name in ("plain", "bias", "folded"):
        seconds = result[f"{name}_seconds"]
        print(f"  {name:<7}{seconds * 1e3:10.2f} ms  {seconds / plain:5.2f}x the unmasked call")
    print(f"  folded vs biased: max relative difference {result['folded_max_relative_difference']:.1e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, "shape": shape, "device": str(device), "dtype": str(dtype),
                                               "torch": torch.__version__}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
