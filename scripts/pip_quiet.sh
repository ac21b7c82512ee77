# Sourced by scripts/test.sh and scripts/setup_vllm_env.sh (bash).
#
# pip_quiet CMD... : run a pip command with one known-harmless warning filtered out of its output
# and its exit status kept (a failing install still stops the caller under `set -e`).
#
# The filtered warning: a pip configuration whose `extra-index-url` names local file indexes
# (`file:///opt/pypi-more/simple` on the CI machines) makes pip print, for every project such an
# index does not carry, "WARNING: Location 'file:///.../<project>/' is ignored: it is neither a
# file nor a directory." -- about 190 lines for the vLLM environment. pip has no switch for this
# one warning, and `-q` does not silence warnings; every other line, errors included, is kept.
pip_quiet() {
    "$@" 2>&1 | { grep -v "^WARNING: Location 'file://.*' is ignored: it is neither a file nor a directory\.$" || true; }
    return "${PIPESTATUS[0]}"
}
