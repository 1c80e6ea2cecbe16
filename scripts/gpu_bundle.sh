#!/usr/bin/env bash
# `make gpu-bundle`: everything scripts/gpu_check.sh needs on a GPU machine with no network, in one folder.
#   scripts/gpu_bundle.sh [OUT]      (default gpu-bundle/, ignored by git; must stay under 64 MiB)
# OUT/wheels/   the vlmft wheel (`pip wheel --no-deps .`) and the wheels that machine lacks, for CPython
#               $BUNDLE_PYTHON_VERSION (3.12) on manylinux x86_64, at the versions of this checkout's venv
# OUT/data/     a small pre-extracted RoboVQA-format set (`data synth` + `data extract`): no TensorFlow there
# OUT/MANIFEST.txt  what is in it (sha256 of every file) and for which Python
# The target machine (../shared/STACK.md, /work/.library/device/KINDS.md) has torch, transformers, peft,
# accelerate, typer, rich, sacrebleu, pillow, safetensors, matplotlib, tensorboard, numpy, pyyaml, psutil
# and tokenizers, but not the pydantic stack below. tensorflow (TFRecords only), bitsandbytes (quantization
# only), av (video import and chat only) and liger-kernel are left out on purpose: the wheels are installed
# with --no-deps, so vlmft's own requirements on them are never resolved.
# Knobs (environment): BUNDLE_PYTHON_VERSION (3.12), PY (.venv/bin/python), VLMFT (.venv/bin/vlmft).
set -euo pipefail

OUT=${1:-gpu-bundle}
PY=${PY:-.venv/bin/python}
VLMFT=${VLMFT:-.venv/bin/vlmft}
PYVER=${BUNDLE_PYTHON_VERSION:-3.12}
MISSING=(pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection)
LIMIT_MIB=64

TMP="$OUT.partial"
rm -rf "$TMP"
mkdir -p "$TMP/wheels"

# The versions this checkout is tested with (pydantic pins its pydantic-core exactly).
pins=()
for name in "${MISSING[@]}"; do
    pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
# From a clean copy of the files git would commit: a stale build/ folder could add deleted modules.
SRC="$TMP/.src"
mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$SRC" 2>/dev/null || true
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$TMP/wheels" "$SRC"
rm -rf "$SRC"
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64; do platforms+=(--platform "$tag"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${platforms[@]}" -d "$TMP/wheels" "${pins[@]}"

# 16 + 4 videos at 112 px: enough for a few training steps and an evaluation.
export VLMFT_HOME="$TMP/.home" TF_CPP_MIN_LOG_LEVEL=3
"$VLMFT" data synth --out "$TMP/source" --videos 16 --val 4 --seed 0 >/dev/null
"$VLMFT" data extract --source "$TMP/source" --out "$TMP/data" --size 112 >/dev/null
"$VLMFT" data verify "$TMP/data" >/dev/null
rm -rf "$TMP/source" "$TMP/.home"

{
    echo "vlmft GPU bundle for CPython $PYVER manylinux x86_64, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "install: python3 -m pip install --no-index --no-deps --target DIR wheels/*.whl   (scripts/gpu_check.sh does it)"
    (cd "$TMP" && find wheels data -type f | LC_ALL=C sort | xargs sha256sum)
} >"$TMP/MANIFEST.txt"

size_kib=$(du -sk "$TMP" | cut -f1)
if ((size_kib > LIMIT_MIB * 1024)); then
    echo "Error: the bundle is $((size_kib / 1024)) MiB, over the ${LIMIT_MIB} MiB that travel with the working tree" >&2
    exit 2
fi
rm -rf "$OUT"
mv "$TMP" "$OUT"
echo "$OUT: $(ls "$OUT/wheels" | wc -l) wheels, $(find "$OUT/data" -name '*.jpg' | wc -l) frames, $((size_kib / 1024)) MiB"
ls "$OUT/wheels"
