#!/usr/bin/env bash
# The GPU check of issue 15, for a bare GPU machine with no network (the H200 one: Python 3.12 with torch,
# transformers, peft, accelerate, typer, rich, …, but no pydantic, tensorflow or bitsandbytes):
#   make gpu-bundle                          here, where pip works: gpu-bundle/ (wheels + a small data set)
#   scripts/gpu_check.sh OUT                 there, from the checkout with gpu-bundle/ beside it
#   scripts/gpu_check.sh --cpu OUT           the same parts on the CPU with the tiny models (a rehearsal)
# It installs vlmft and the missing wheels from the bundle with `pip install --no-index --no-deps --target`
# (nothing is downloaded and vlmft's requirements on tensorflow or bitsandbytes are never resolved; a
# --target folder on PYTHONPATH, not a venv: that machine's python3 is itself a venv, whose packages a
# `venv --system-site-packages` made from it would not see), then runs, each under its own time limit:
#   attention     bench attention --backward: every available backend (sdpa, eager, flex) at 1k–8k tokens
#                 with the masks training uses (causal, shared-prefix, padded)
#   step-*        bench step --random-init on the h200 profile: InternVL3-8B stages 1 and 2, Qwen2.5-VL-7B
#                 stage 1 (executed and necessary FLOPs, MFU, peak memory, projected curriculum time)
#   train         vlmft train --stage 1 of the tiny model on the bundle's data, 5 steps, then ckpt list
# 8 minutes at most (each part has its limit), and writes into OUT: results.json (every part's verdict and headline figures, the
# benchmark documents in full), summary.txt, logs.tar.gz (a log per part and the benchmark JSON files)
# and nvidia-smi.txt. Scratch (the install, VLMFT_HOME, the run) goes to WORK (default: a temporary
# folder). A part that fails or runs out of time is recorded and the rest still run; exit code 1 if any
# failed. Compare machines with `vlmft bench compare A/step-internvl3-stage1.json B/…` (from logs.tar.gz).
#
# Knobs (environment): PYTHON (python3), BUNDLE (gpu-bundle), WORK, PROFILE (h200; cpu with --cpu), STEPS (3),
# CHECKPOINTING (off: gradient checkpointing in the step benches).
set -uo pipefail

CPU=0
if [[ ${1:-} == --cpu ]]; then
    CPU=1
    shift
fi
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python3}
BUNDLE=${BUNDLE:-gpu-bundle}
WORK=${WORK:-$(mktemp -d /tmp/vlmft-gpu-check.XXXXXX)}
STEPS=${STEPS:-3}
CHECKPOINTING=${CHECKPOINTING:-off}
if ((CPU)); then PROFILE=${PROFILE:-cpu}; else PROFILE=${PROFILE:-h200}; fi
if ((CPU)); then SETUP=(120 120 120); else SETUP=(30 30 20); fi  # install, environment, plugins (seconds)

mkdir -p "$OUT" "$WORK/logs"
OUT=$(cd "$OUT" && pwd)
LOGS="$WORK/logs"
: >"$OUT/summary.txt"
: >"$WORK/parts.tsv"
failed=0

# part NAME SECONDS COMMAND…: run with a time limit, log to LOGS/NAME.log, one line in summary.txt.
part() {
    local name=$1 limit=$2 start rc verdict
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    verdict="ok"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then verdict="TIMED OUT after ${limit}s"; elif [[ $rc -ne 0 ]]; then verdict="FAILED (exit $rc)"; fi
    [[ $verdict == ok ]] || failed=1
    printf '%s\t%s\t%s\n' "$name" "$verdict" "$(($(date +%s) - start))" >>"$WORK/parts.tsv"
    printf '%-22s %-26s %4ss\n' "$name" "$verdict" "$(($(date +%s) - start))" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi || echo "nvidia-smi not found"; } >"$OUT/nvidia-smi.txt" 2>&1

# --- install from the bundle, offline ------------------------------------------------------------------
if [[ ! -f $BUNDLE/MANIFEST.txt ]]; then
    echo "Error: no bundle at $BUNDLE (make gpu-bundle builds it where pip works; BUNDLE=… names another)" | tee -a "$OUT/summary.txt" >&2
    exit 2
fi
BUNDLE=$(cd "$BUNDLE" && pwd)
cd "$WORK"  # so that `python -m vlmft_cli` imports the installed wheel, not a checkout in the current folder
part install "${SETUP[0]}" "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --target "$WORK/site" "$BUNDLE"/wheels/*.whl
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export VLMFT_HOME="$WORK/home" TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
VLMFT=("$PY" -m vlmft_cli)
# The environment as vlmft sees it, and proof that the checked commands need neither tensorflow nor bitsandbytes.
part environment "${SETUP[1]}" "$PY" -c '
import importlib.util, sys
import vlmft_cli, torch, transformers
import vlmft_cli.cli.app, vlmft_cli.cli.bench, vlmft_cli.cli.train_cmd, vlmft_cli.bench.step, vlmft_cli.bench.attention, vlmft_cli.training.session
print("vlmft", vlmft_cli.__version__, "from", vlmft_cli.__file__)
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "transformers", transformers.__version__)
for name in ("tensorflow", "bitsandbytes", "liger_kernel", "flash_attn"):
    print(name, "installed" if importlib.util.find_spec(name) else "not installed", "| imported" if name in sys.modules else "| not imported")
bad = [name for name in ("tensorflow", "bitsandbytes") if name in sys.modules]
sys.exit(f"imported by the bench/train modules: {bad}" if bad else 0)
'
part plugins "${SETUP[2]}" "${VLMFT[@]}" plugins list

# --- the parts -----------------------------------------------------------------------------------------
if ((CPU)); then
    ATTENTION=(--model tiny-internvl3 --seq-lens 128,256 --repeats 3 --warmup 1)
    STEP_PARTS=("internvl3-stage1|--model tiny-internvl3 --stage 1" "internvl3-stage2|--model tiny-internvl3 --stage 2" "qwen2_5_vl-stage1|--model tiny-qwen2.5-vl --stage 1")
    TRAIN_STEPS=2
    LIMITS=(240 180 90)  # attention, each step part, train: the CPU here is shared and slow
else
    ATTENTION=(--model InternVL3-8B --seq-lens 1024,2048,4096,8192 --repeats 5 --warmup 2)
    STEP_PARTS=("internvl3-stage1|--model InternVL3-8B --random-init --stage 1" "internvl3-stage2|--model InternVL3-8B --random-init --stage 2" "qwen2_5_vl-stage1|--model Qwen2.5-VL-7B-Instruct --random-init --stage 1")
    TRAIN_STEPS=5
    LIMITS=(100 85 45)  # with install, environment and plugins (30 + 30 + 20): 480 s at most
fi

part attention "${LIMITS[0]}" "${VLMFT[@]}" bench attention --backward "${ATTENTION[@]}" --out "$LOGS/attention.json"
for spec in "${STEP_PARTS[@]}"; do
    name=${spec%%|*}
    read -r -a args <<<"${spec#*|}"
    # The profile says `gradient_checkpointing: auto`, which training decides from its plan's memory estimate
    # (off for these micro-batches on the h200 profile: `vlmft train --dry-run` shows it); the bench has no
    # plan and would take auto as on, so the choice training makes is passed (CHECKPOINTING to change it).
    part "step-$name" "${LIMITS[1]}" env VLMFT_GRADIENT_CHECKPOINTING="$CHECKPOINTING" "${VLMFT[@]}" bench step "${args[@]}" --profile "$PROFILE" --steps "$STEPS" --out "$LOGS/step-$name.json"
done
part train "${LIMITS[2]}" bash -c '"$@" train --stage 1 --data "'"$BUNDLE"'/data" --profile "'"$PROFILE"'" --model tiny-internvl3 --max-steps '"$TRAIN_STEPS"' \
    --global-batch-size 8 --save-steps '"$TRAIN_STEPS"' --out "'"$WORK"'/experiments" && "$@" ckpt list --json --out "'"$WORK"'/experiments" > "'"$LOGS"'/train.json"' _ "${VLMFT[@]}"
cp "$WORK"/experiments/*/logs/train_metrics.csv "$LOGS/" 2>/dev/null

# --- one JSON of results -------------------------------------------------------------------------------
"$PY" - "$OUT" "$LOGS" "$WORK/parts.tsv" "$PROFILE" "$CPU" <<'PYTHON'
import json, os, sys
from pathlib import Path

out, logs, parts_file, profile, cpu = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
parts = [dict(zip(("part", "verdict", "seconds"), line.split("\t"))) for line in parts_file.read_text().splitlines()]
for item in parts:
    item["seconds"] = int(item["seconds"])


def load(name):
    path = logs / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


headline = {}
steps = {}
for path in sorted(logs.glob("step-*.json")):
    document = load(path.name)
    entry = document["entries"][0]
    m, d = entry["metrics"], entry["details"]
    steps[path.stem] = {
        "model": entry["key"]["model"], "stage": entry["key"]["stage"], "packed": d.get("packed"), "gradient_checkpointing": d.get("gradient_checkpointing"),
        "step_s": m["step_s"], "qas_per_s": m["qas_per_s"], "tokens_per_s": m["tokens_per_s"], "peak_memory_mib": m["peak_memory_mib"],
        "executed_over_necessary": m["executed_over_necessary"], "mfu_datasheet": m["mfu_datasheet"], "mfu_measured": m["mfu_measured"],
        "measured_matmul_tflops": m["measured_matmul_tflops"], "projected_curriculum_h_at_this_rate": m["projected_curriculum_h"],
        "projected_stage_h": [m["projected_stage1_h"], m["projected_stage2_h"]],
    }
headline["steps"] = steps
s1, s2 = steps.get("step-internvl3-stage1"), steps.get("step-internvl3-stage2")
if s1 and s2:
    # Each stage at its own measured rate.
    headline["internvl3_curriculum_h"] = round(s1["projected_stage_h"][0] + s2["projected_stage_h"][1], 2)
attention = load("attention.json")
if attention:
    table = {}
    for entry in attention["entries"]:
        k, m = entry["key"], entry["metrics"]
        table.setdefault(f"{k['mask']}@{k['seq_len']}", {})[k["backend"]] = m.get("forward_backward_ms_median")
    headline["attention_fwd_bwd_ms"] = table
    headline["attention_unavailable"] = attention.get("unavailable", [])
results = {
    "mode": "cpu rehearsal" if cpu else "gpu", "profile": profile, "parts": parts, "passed": all(p["verdict"] == "ok" for p in parts),
    "headline": headline,
    "documents": {path.stem: load(path.name) for path in sorted(logs.glob("*.json"))},
}
temporary = out / "results.json.partial"
temporary.write_text(json.dumps(results, indent=2))
os.replace(temporary, out / "results.json")
print(json.dumps(headline, indent=2))
PYTHON
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
echo "results in $OUT: results.json, summary.txt, logs.tar.gz, nvidia-smi.txt (scratch in $WORK)" | tee -a "$OUT/summary.txt"
exit $failed
