"""Eager sweep of matching variants on the 1024-token trained model (an experiment, not the product).

This is how the options ``match_on="hidden_states"``, ``redraw_split`` and proportional attention
were found (benchmarks/RESULTS.md, "Reading the 1024-token numbers"). It replaces the reference
DiT's attention forward with an eager reduction whose matching can be switched to variants the
backend does not offer (pre-RoPE queries, a local dst window), so it re-implements the reduction
around attention with the same ops; with the published settings and the matching recomputed
every step it agreed with ``AsymRnRBackend`` to 2e-6 on one transformer call, and with the
hidden-state settings to 7e-6. Numbers from the backend itself: ``quality_synthetic.py``.

    python benchmarks/matching_sweep_eager.py cuda 4 '{"feature": "hidden", "redraw": 1}' ...
    (no configs: the full list behind RESULTS.md; on an H200 about 6 s per config of 384 videos)

Config keys (JSON, missing ones from ``DEFAULT``): feature (q matched on "post": post-RoPE
queries, the published method; "pre": pre-RoPE queries; "hidden": the attention's input hidden
states; "value": the values), kvfeature ("value", "hidden", "key_pre"), q / kv ratios, window (-1
global; w: dst within w chunks of the src's chunk), redraw (0: one split per site and feature;
r: a new split every r steps), cache (recompute the matching every ``cache`` steps), sim
("euclidean" / "cosine"), kvmode ("replace" / "mean"), prop (proportional attention), blocks.
Each config prints one JSON line: "all right" in % and mean PSNR against the unaccelerated videos.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

from asymrnr_compile.ops.match import Matching
from asymrnr_compile.ops.reduce import proportional_attention_mask, reduce_tokens, reduction_indices
from asymrnr_compile.ops.split import num_kept_tokens, split_tokens
from asymrnr_lab.models import reference_dit as rd
from asymrnr_lab.synthetic.generate import caption_grid, generate_videos
from asymrnr_lab.synthetic.model import FINE_CHECKPOINT_PATH, load_trained_model
from asymrnr_lab.synthetic.quality import all_correct, psnr

DEV = sys.argv[1]
SEEDS = tuple(range(int(sys.argv[2])))
Q = {"feature": "hidden", "redraw": 1, "kvfeature": "hidden"}
FULL_LIST = [
    {}, {"cache": 5}, {"redraw": 1}, {"redraw": 5, "cache": 5}, {"window": 0}, {"window": 1}, {"window": 2},
    {"window": 1, "redraw": 1}, {"window": 1, "redraw": 5, "cache": 5}, {"feature": "hidden"}, {"feature": "value"},
    {"sim": "cosine"}, {"q": 0}, {"kv": 0}, {"kv": 0, "redraw": 1}, {"kv": 0, "window": 1}, {"window": 0, "redraw": 1},
    {"feature": "hidden", "redraw": 1}, {"feature": "pre", "window": 1},
    Q, {**Q, "redraw": 5, "cache": 5}, {"feature": "hidden", "redraw": 5, "cache": 5}, {"q": 0, "kvfeature": "hidden"},
    {"q": 0, "redraw": 1}, {"q": 0, "redraw": 1, "kvfeature": "hidden"}, {"feature": "hidden", "kv": 0, "redraw": 1},
    {"feature": "hidden", "kv": 0}, {"feature": "hidden", "kv": 0, "redraw": 5, "cache": 5}, {**Q, "sim": "cosine"},
    {"feature": "value", "redraw": 1}, {**Q, "redraw": 2, "cache": 2}, {**Q, "kvfeature": "key_pre"},
    {**Q, "q": 0.6, "kv": 0.4}, {**Q, "q": 0.3, "kv": 0.2},
    {**Q, "prop": True}, {**Q, "kvmode": "mean"}, {**Q, "kvmode": "mean", "prop": True},
    {**Q, "kvmode": "mean", "prop": True, "sim": "cosine"}, {**Q, "q": 0, "kvmode": "mean", "prop": True},
    {**Q, "kvmode": "mean", "prop": True, "redraw": 5, "cache": 5}, {**Q, "kvmode": "mean", "prop": True, "redraw": 2, "cache": 2},
    {**Q, "kvmode": "mean", "prop": True, "kvfeature": "value"}, {**Q, "blocks": [1, 2, 3]},
    {**Q, "kvmode": "mean", "prop": True, "q": 0.6, "kv": 0.4},
]
CONFIGS = [json.loads(c) for c in sys.argv[3:]] or FULL_LIST
torch.backends.cuda.matmul.allow_tf32 = False
model, task = load_trained_model(FINE_CHECKPOINT_PATH, device=DEV)
cfg = model.transformer.config
grid = tuple(n // p for n, p in zip((task.frames, task.height, task.width), cfg.patch_size))
N = grid[0] * grid[1] * grid[2]
coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij"), -1).reshape(N, 3).to(DEV)
chunk = coords // 2
C = {}
STATE = {}

def get_split(site, feature):
    step = STATE["calls"].get(site, 0)
    epoch = step // C["redraw"] if C["redraw"] else 0
    key = (site, feature, epoch)
    if key not in STATE["splits"]:
        s = split_tokens(N, grid, (2, 2, 2), seed=7919 * site + {"q": 0, "kv": 1}[feature] + 101 * epoch, device=DEV)
        far = (chunk[s.src][:, None, :] - chunk[s.dst][None, :, :]).abs().amax(-1) > C["window"] if C["window"] >= 0 else None
        STATE["splits"][key] = (s, far)
    return STATE["splits"][key]

def match(feat, split, far):
    f = feat.float(); d_ = f[..., split.dst, :]; s_ = f[..., split.src, :]
    if C["sim"] == "cosine":
        d_ = F.normalize(d_, dim=-1); s_ = F.normalize(s_, dim=-1)
    dist = ((s_ * s_).sum(-1, keepdim=True) + (d_ * d_).sum(-1)[..., None, :] - 2 * s_ @ d_.transpose(-1, -2)).clamp_min(0)
    if far is not None:
        dist = dist.masked_fill(far, float("inf"))
    best, nearest = dist.min(-1)
    order = torch.argsort(best, dim=-1, descending=True, stable=True)
    return Matching(src_order=order, nearest=nearest, distance=best)

def indices(site, feature, feat, ratio):
    step = STATE["calls"].get(site, 0)
    key = (site, feature)
    cached = STATE["cache"].get(key)
    if cached is None or step % C["cache"] == 0 or cached[0].keep.shape[0] != feat.shape[0]:
        split, far = get_split(site, feature)
        cached = (reduction_indices(split, match(feat, split, far), num_kept_tokens(N, len(split.dst), ratio)),)
        STATE["cache"][key] = cached
    return cached[0]

def g(x, idx):
    return torch.gather(x, 2, idx[..., None].expand(*idx.shape, x.shape[-1]))

def forward(self, hidden_states, encoder_hidden_states, rope_cos, rope_sin):
    T = encoder_hidden_states.shape[1]
    hs = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    B, L, D = hs.shape
    sh = lambda t: t.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
    q, k, v = sh(self.to_q(hs)), sh(self.to_k(hs)), sh(self.to_v(hs))
    q, k = self.norm_q(q), self.norm_k(k)
    q_pre = q[:, :, T:]
    qv = rd.apply_rope(q_pre, rope_cos, rope_sin); kvid = rd.apply_rope(k[:, :, T:], rope_cos, rope_sin)
    vvid = v[:, :, T:]
    site = self._site
    if C["kv"] > 0 and site in C["blocks"]:
        kfeat = {"value": vvid, "hidden": hidden_states[:, None].expand(B, self.num_heads, -1, -1),
                 "key_pre": k[:, :, T:]}[C["kvfeature"]]
        kidx = indices(site, "kv", kfeat, C["kv"])
        kvid, vvid = reduce_tokens(kvid, kidx, C["kvmode"]), reduce_tokens(vvid, kidx, C["kvmode"])
    kk = torch.cat([k[:, :, :T], kvid], 2); vv = torch.cat([v[:, :, :T], vvid], 2)
    mask = proportional_attention_mask(None, kk, kidx, start=T) if C["prop"] and C["kv"] > 0 and site in C["blocks"] else None
    if C["q"] > 0 and site in C["blocks"]:
        feat = {"post": qv, "pre": q_pre, "value": v[:, :, T:],
                "hidden": hidden_states[:, None].expand(B, self.num_heads, -1, -1)}[C["feature"]]
        idx = indices(site, "q", feat, C["q"])
        out = F.scaled_dot_product_attention(torch.cat([q[:, :, :T], g(qv, idx.keep)], 2), kk, vv, attn_mask=mask)
        out = torch.cat([out[:, :, :T], g(out[:, :, T:], idx.restore)], 2)
    else:
        out = F.scaled_dot_product_attention(torch.cat([q[:, :, :T], qv], 2), kk, vv, attn_mask=mask)
    STATE["calls"][site] = STATE["calls"].get(site, 0) + 1
    out = self.to_out(out.transpose(1, 2).reshape(B, L, D))
    text_out, video_out = out.split([T, L - T], dim=1)
    return video_out, text_out

rd.JointAttention.forward = forward
for i, blk in enumerate(model.transformer.blocks):
    blk.attn._site = i
import os

captions, seeds = caption_grid(task, SEEDS)
LIMIT = int(os.environ.get("LIMIT", "0"))
if LIMIT:
    captions, seeds = captions[:LIMIT], seeds[:LIMIT]
reference = None
DEFAULT = {"feature": "post", "q": 0.5, "kv": 0.3, "window": -1, "redraw": 0, "cache": 1, "sim": "euclidean", "kvfeature": "value", "kvmode": "replace", "prop": False, "blocks": [0, 1, 2, 3]}
for conf in [{"q": 0, "kv": 0}] + CONFIGS:
    C.clear(); C.update(DEFAULT); C.update(conf)
    t0 = time.time()
    videos = []
    for start in range(0, len(captions), 96):
        STATE.update(calls={}, splits={}, cache={})  # a new batch of videos: fresh step count
        videos.append(generate_videos(model, captions[start:start + 96], seeds[start:start + 96], task, batch_size=96))
    videos = torch.cat(videos)
    ok = sum(bool(all_correct(v, c, task)) for v, c in zip(videos, captions)) / len(captions)
    if reference is None:
        reference = videos
    db = sum(float(psnr(v, r)) for v, r in zip(videos, reference)) / len(videos)
    print(json.dumps({**conf, "all_correct": round(100 * ok, 2), "psnr": round(db, 2), "videos": len(captions), "s": round(time.time() - t0, 1)}), flush=True)
