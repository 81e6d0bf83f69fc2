#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one resumable run: bash benchmarks/gpu_checks.sh [RUN_DIR]
#
# Sized for a short lease (about 6 minutes on an H200 with the defaults below, estimated from the
# compile and loop times of the last GPU run). Stages (each
# writes RUN_DIR/<stage>.log and, when finished, RUN_DIR/<stage>.done holding its exit status; a
# stage already done is skipped, so running the script again resumes; each is cut off after
# STAGE_TIMEOUT seconds, default 300):
#   env       torch / Triton / GPU versions
#   tests     pytest tests/gpu (the Triton path equals the CPU path; no host sync inside a step,
#             under torch.cuda.set_sync_debug_mode("error")) and the fused matching kernel's tests
#   e2e       GPU speed, the whole sampling loop against plain Inductor in one process: the
#             reference DiT at CogVideoX-2B's width and token count (preset cogvideox-2b-shape,
#             17,550 video tokens), bf16, 10 steps, E2E_VARIANTS (default: the published
#             settings, the defaults with their 32-dim projection, the defaults with the exact
#             matching), E2E_ROUNDS timed rounds (default 2) -> RUN_DIR/e2e.json
#   sdpa      what proportional attention's additive bias costs SDPA on the GPU (a float mask
#             rules out the flash backend) against the same attention folded into the values,
#             at CogVideoX-2B's kv-reduced size (benchmarks/sdpa_bias.py) -> RUN_DIR/sdpa.json
#   quality   only with QUALITY=1: the shipped 1024-token model's quality benchmark, every
#             caption x QUALITY_SEEDS seeds (default 4: 384 videos) -> RUN_DIR/quality.json
#   train     only with TRAIN=1: retrain the 1024-token model (preset synthetic-fine) for
#             TRAIN_SECONDS (default 240) -> RUN_DIR/fine/
# Needs torch with CUDA; runs from the repository root without installing the package. A dry run
# of the plumbing on a CPU: DEVICE=cpu E2E_PRESET=tiny E2E_ROUNDS=1 bash benchmarks/gpu_checks.sh runs/dry
set -u
RUN=${1:-runs/gpu}
DEVICE=${DEVICE:-cuda}
E2E_PRESET=${E2E_PRESET:-cogvideox-2b-shape}
E2E_VARIANTS=${E2E_VARIANTS:-inductor,asymrnr_q0.5_kv0.3,asymrnr_default,asymrnr_default_exact_matching}
E2E_ROUNDS=${E2E_ROUNDS:-2}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-300}
QUALITY=${QUALITY:-0}
QUALITY_SEEDS=${QUALITY_SEEDS:-4}
TRAIN=${TRAIN:-0}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
MAX_TRAIN_STEPS=${MAX_TRAIN_STEPS:-12000}
TRAIN_BATCH=${TRAIN_BATCH:-64}
PROBE_STEPS=${PROBE_STEPS:-30}
FINE_CHECKPOINT=lab/asymrnr_lab/assets/synthetic_dit_fine.safetensors
mkdir -p "$RUN"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

stage() {  # stage NAME COMMAND...: run once (at most STAGE_TIMEOUT s), log, record the exit status
    local name=$1 start rc
    shift
    if [ -e "$RUN/$name.done" ]; then echo "== $name: done before (rc $(cat "$RUN/$name.done"))"; return; fi
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$STAGE_TIMEOUT" "$@" >"$RUN/$name.log" 2>&1
    rc=$?
    echo "$rc" >"$RUN/$name.done"
    echo "== $name: rc $rc after $(( $(date +%s) - start )) s$([ "$rc" = 124 ] && echo " (cut off at ${STAGE_TIMEOUT} s)")"
}

train_fine() {
    local probe=$RUN/probe seconds steps=${TRAIN_STEPS:-}
    if [ -z "$steps" ]; then
        rm -rf "$probe"
        python -m asymrnr_lab train --out "$probe" --preset synthetic-fine --device "$DEVICE" --bf16 \
            --batch-size "$TRAIN_BATCH" --steps "$PROBE_STEPS" --eval-every 0 || return 1
        # seconds per step over the probe's last logged window (the first includes CUDA warm-up)
        seconds=$(python -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; \
print(rows[-1]['seconds_per_step'])" "$probe/log.jsonl") || return 1
        steps=$(python -c "import sys; s=int(float(sys.argv[1])/float(sys.argv[2])); \
print(max(100, min(int(sys.argv[3]), s // 100 * 100)))" "$TRAIN_SECONDS" "$seconds" "$MAX_TRAIN_STEPS")
        echo "probe: $seconds s/step -> $steps steps in ${TRAIN_SECONDS} s"
    fi
    python -m asymrnr_lab train --out "$RUN/fine" --preset synthetic-fine --device "$DEVICE" --bf16 \
        --batch-size "$TRAIN_BATCH" --steps "$steps" --eval-every $(( steps / 4 ))
}

stage env python -c "import importlib.util as u, platform, torch; print(platform.python_version(), 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'triton', u.find_spec('triton') and __import__('triton').__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name())"
cat "$RUN/env.log"
stage tests python -m pytest tests/gpu tests/ops/test_ops_match_triton.py -q -p no:cacheprovider
tail -n 3 "$RUN/tests.log"
stage e2e python benchmarks/e2e.py --model reference --preset "$E2E_PRESET" --device "$DEVICE" \
    --dtype bfloat16 --variants "$E2E_VARIANTS" --rounds "$E2E_ROUNDS" --json "$RUN/e2e.json"
tail -n 8 "$RUN/e2e.log"
stage sdpa python benchmarks/sdpa_bias.py --device "$DEVICE" $([ "$E2E_PRESET" = tiny ] && echo --quick) \
    --json "$RUN/sdpa.json"
tail -n 5 "$RUN/sdpa.log"
if [ "$QUALITY" = 1 ]; then
    stage quality python benchmarks/quality_synthetic.py --checkpoint "$FINE_CHECKPOINT" --device "$DEVICE" \
        --seeds "$QUALITY_SEEDS" --json "$RUN/quality.json"
    tail -n 10 "$RUN/quality.log"
fi
if [ "$TRAIN" = 1 ]; then
    stage train train_fine
    tail -n 4 "$RUN/train.log"
fi
echo "== all stages finished"
