#!/usr/bin/env bash
# The GPU check of issue 5, for a person with one CUDA GPU (an H100 for the reference figures):
#   make setup && scripts/gpu_check.sh [OUT]
# It runs, each under its own time limit (450 s in all; about 4 minutes expected on an H100):
#   1. vlmft bench attention --backward           every available attention backend, default lengths, bf16
#   2. vlmft bench step --random-init, stage 1    InternVL3-8B with random weights, --profile h100-80gb
#   3. vlmft bench step --random-init, stage 2    the same, 10 frames and 4 QAs per sample
#   4. vlmft data synth + extract                 a small synthetic RoboVQA set (16 videos, 112 px)
#   5. vlmft train --stage 1 --max-steps 5        the tiny model on CUDA with the h100-80gb profile
# and writes under OUT (default gpu-check-DATE): attention.json, step-stage1.json, step-stage2.json,
# train.json (`ckpt list --json`), a log per part, nvidia-smi.txt and summary.txt. A part that fails or
# runs out of time is recorded in summary.txt and the rest still run; the exit code is 1 if any failed.
# Compare two machines with `vlmft bench compare A/step-stage1.json B/step-stage1.json`.
#
# Knobs (environment): PROFILE (h100-80gb), VARIANT (InternVL3-8B), LAYERS (all), STEPS (5), VLMFT (the CLI).
set -uo pipefail

OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
PROFILE=${PROFILE:-h100-80gb}
VARIANT=${VARIANT:-InternVL3-8B}
STEPS=${STEPS:-5}
LAYERS_ARGS=()
[[ -n "${LAYERS:-}" ]] && LAYERS_ARGS=(--layers "$LAYERS")
if [[ -z "${VLMFT:-}" ]]; then
    if [[ -x .venv/bin/vlmft ]]; then VLMFT=.venv/bin/vlmft; else VLMFT=vlmft; fi
fi

mkdir -p "$OUT"
export VLMFT_HOME="$OUT/home"
export TF_CPP_MIN_LOG_LEVEL=3
failed=0

# part NAME SECONDS COMMAND…: run with a time limit, log to OUT/NAME.log, one line in OUT/summary.txt.
part() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    local verdict="ok"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then verdict="TIMED OUT after ${limit}s"; elif [[ $rc -ne 0 ]]; then verdict="FAILED (exit $rc)"; fi
    [[ $verdict == ok ]] || failed=1
    printf '%-14s %-26s %4ss\n' "$name" "$verdict" "$(($(date +%s) - start))" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi || echo "nvidia-smi not found"; } >"$OUT/nvidia-smi.txt" 2>&1
"$VLMFT" --version | tee "$OUT/summary.txt"

part attention 75 "$VLMFT" bench attention --backward --out "$OUT/attention.json"
part step-stage1 120 "$VLMFT" bench step --model "$VARIANT" --random-init "${LAYERS_ARGS[@]}" --profile "$PROFILE" --stage 1 --steps "$STEPS" --out "$OUT/step-stage1.json"
part step-stage2 140 "$VLMFT" bench step --model "$VARIANT" --random-init "${LAYERS_ARGS[@]}" --profile "$PROFILE" --stage 2 --steps "$STEPS" --out "$OUT/step-stage2.json"
part data 45 bash -c "'$VLMFT' data synth --out '$OUT/source' --videos 16 --val 4 --seed 0 && '$VLMFT' data extract --source '$OUT/source' --out '$OUT/data' --size 112"
part train 70 bash -c "'$VLMFT' train --stage 1 --data '$OUT/data' --profile '$PROFILE' --model tiny-internvl3 --max-steps 5 --global-batch-size 8 --save-steps 5 --out '$OUT/experiments' && '$VLMFT' ckpt list --json --out '$OUT/experiments' > '$OUT/train.json'"

echo "results in $OUT (tables in the .log files)" | tee -a "$OUT/summary.txt"
exit $failed
