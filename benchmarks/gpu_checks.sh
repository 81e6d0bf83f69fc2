#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one resumable run: bash benchmarks/gpu_checks.sh [RUN_DIR]
#
# Stages (each writes RUN_DIR/<stage>.log and, when finished, RUN_DIR/<stage>.done holding its
# exit status; a stage already done is skipped, so running the script again resumes):
#   env       torch / Triton / GPU versions
#   train     the 1024-token text-to-video model (preset synthetic-fine) for TRAIN_SECONDS
#             (default 240): a 30-step probe measures seconds per step, the step count follows
#             from it (capped at MAX_TRAIN_STEPS, default 12000), or TRAIN_STEPS fixes it
#             -> RUN_DIR/fine/
#   tests     pytest tests/gpu and the fused matching kernel's tests, compiled on the GPU (the
#             Triton path matches the CPU path), while training runs
#   quality   adherence and PSNR of the trained fine model, unaccelerated vs asymrnr vs token
#             dropping, every caption x 4 seeds, on the GPU -> RUN_DIR/quality.json
#   e2e       GPU speed: plain Inductor vs asymrnr q 0.5 / kv 0.3 on the reference DiT at
#             CogVideoX-2B's width and token count (preset cogvideox-2b-shape), bf16, alone on
#             the GPU so that the timings are clean -> RUN_DIR/e2e.json
# Needs torch with CUDA; runs from the repository root without installing the package. A dry run
# of the plumbing on a CPU: DEVICE=cpu E2E_PRESET=tiny TRAIN_SECONDS=20 QUALITY_SEEDS=1 bash ...
set -u
RUN=${1:-runs/gpu}
DEVICE=${DEVICE:-cuda}
E2E_PRESET=${E2E_PRESET:-cogvideox-2b-shape}
QUALITY_SEEDS=${QUALITY_SEEDS:-4}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
MAX_TRAIN_STEPS=${MAX_TRAIN_STEPS:-12000}
TRAIN_BATCH=${TRAIN_BATCH:-64}
PROBE_STEPS=${PROBE_STEPS:-30}
mkdir -p "$RUN"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

stage() {  # stage NAME COMMAND...: run once, log, record the exit status
    local name=$1 start rc
    shift
    if [ -e "$RUN/$name.done" ]; then echo "== $name: done before (rc $(cat "$RUN/$name.done"))"; return; fi
    echo "== $name: $*"
    start=$(date +%s)
    "$@" >"$RUN/$name.log" 2>&1
    rc=$?
    echo "$rc" >"$RUN/$name.done"
    echo "== $name: rc $rc after $(( $(date +%s) - start )) s"
}

train_fine() {
    local probe=$RUN/probe seconds steps=${TRAIN_STEPS:-}
    if [ -z "$steps" ]; then
        rm -rf "$probe"
        python -m asymrnr_compile train --out "$probe" --preset synthetic-fine --device "$DEVICE" --bf16 \
            --batch-size "$TRAIN_BATCH" --steps "$PROBE_STEPS" --eval-every 0 || return 1
        # seconds per step over the probe's last logged window (the first includes CUDA warm-up)
        seconds=$(python -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; \
print(rows[-1]['seconds_per_step'])" "$probe/log.jsonl") || return 1
        steps=$(python -c "import sys; s=int(float(sys.argv[1])/float(sys.argv[2])); \
print(max(100, min(int(sys.argv[3]), s // 100 * 100)))" "$TRAIN_SECONDS" "$seconds" "$MAX_TRAIN_STEPS")
        echo "probe: $seconds s/step -> $steps steps in ${TRAIN_SECONDS} s"
    fi
    python -m asymrnr_compile train --out "$RUN/fine" --preset synthetic-fine --device "$DEVICE" --bf16 \
        --batch-size "$TRAIN_BATCH" --steps "$steps" --eval-every $(( steps / 4 ))
}

stage env python -c "import importlib.util as u, platform, torch; print(platform.python_version(), 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'triton', u.find_spec('triton') and __import__('triton').__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name())"
cat "$RUN/env.log"
stage train train_fine &
training=$!
stage tests python -m pytest tests/gpu tests/ops/test_ops_match_triton.py -q -p no:cacheprovider
tail -n 3 "$RUN/tests.log"
wait "$training"
tail -n 4 "$RUN/train.log"
stage quality python benchmarks/quality_synthetic.py --checkpoint "$RUN/fine/model.safetensors" --device "$DEVICE" \
    --seeds "$QUALITY_SEEDS" --json "$RUN/quality.json"
tail -n 8 "$RUN/quality.log"
stage e2e python benchmarks/e2e.py --model reference --preset "$E2E_PRESET" --device "$DEVICE" \
    --dtype bfloat16 --variants inductor,asymrnr_q0.5_kv0.3 --json "$RUN/e2e.json"
tail -n 6 "$RUN/e2e.log"
echo "== all stages finished"
