"""benchmarks/gpu_suite.py in its CPU mode (tiny widths, float32): the suite CI can run, so it
cannot rot before a GPU sees it. Its correctness checks (selector on the device == CPU; pruned ==
the masked / shorter-sequence oracles, one prompt and a left-padded batch; nothing prunable ==
stock) must all pass, and the JSON must hold what the README's GPU table is made from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

CHECKS = {
    "selector on cpu == CPU",
    "qwen3_vl pruned == masked oracle",
    "qwen3_vl pruned, left-padded batch == masked oracle",
    "qwen3_vl nothing prunable == stock (one prompt)",
    "qwen3_vl nothing prunable == stock (left-padded batch)",
    "qwen3_5 pruned == shorter-sequence oracle",
    "qwen3_5 pruned, left-padded batch == shorter-sequence oracle",
    "qwen3_5 nothing prunable == stock (one prompt)",
    "qwen3_5 nothing prunable == stock (left-padded batch)",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite") / "result.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--device", "cpu", "--dtype", "float32",
         "--tiny", "--quick", "--repeats", "1", "--max-new-tokens", "2", "--max-pixels", str(256 * 256),
         "--families", "qwen3_vl", "qwen3_5", "--carry", str(out.parent / "no_carry"), "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    return proc, json.loads(out.read_text()) if out.exists() else None


def test_correctness_checks_all_pass(suite):
    proc, result = suite
    assert result is not None, proc.stderr[-4000:]
    failed = [c for c in result["checks"] if not c["passed"]]
    assert not failed, failed
    assert result["all_passed"] is True and proc.returncode == 0, proc.stderr[-4000:]
    assert {c["name"] for c in result["checks"]} == CHECKS
    for check in result["checks"]:
        if "max_err" in check:  # the oracle discriminates: the unmasked model is far outside the tolerance
            assert check["max_err"] <= check["tol"] < check["unmasked_err"]


def test_speed_table_has_every_family_and_type(suite):
    proc, result = suite
    assert result is not None, proc.stderr[-4000:]
    assert (result["device"], result["dtype"], result["tiny"]) == ("cpu", "float32", True)
    assert {(r["family"], r["type"]) for r in result["summary"]} == {
        (f, t) for f in ("qwen3_vl", "qwen3_5") for t in ("documents", "screenshots")}
    for row in result["images"]:
        for key in ("selector_ms", "stock_vit_ms", "pixelprune_vit_ms", "stock_llm_ms", "pixelprune_llm_ms",
                    "stock_generate_ms", "pixelprune_generate_ms", "ideal_model_speedup"):
            assert row[key] > 0, key
        assert row["kept"] <= row["tokens"]
        assert row["pixelprune_seq"] - row["stock_seq"] == row["kept"] - row["tokens"]
    assert result["table_markdown"].count("\n") == len(result["summary"]) + 1
