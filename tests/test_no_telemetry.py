"""Nothing the tests or benchmarks start may phone home: vLLM reports usage statistics over the
network unless ``VLLM_NO_USAGE_STATS=1`` / ``DO_NOT_TRACK=1`` (CI has no network)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fake_hub import FakeHub
from vllm_harness import configure_vllm_env

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

EXPECTED = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


@pytest.fixture
def clean_env(monkeypatch):
    """An environment without the variables, or with tracking explicitly allowed."""
    monkeypatch.delenv("VLLM_NO_USAGE_STATS", raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    for name in ("VLLM_CACHE_ROOT", "VLLM_RPC_BASE_PATH", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def assert_no_telemetry(env) -> None:
    assert {k: env.get(k) for k in EXPECTED} == EXPECTED


def test_test_engines_run_without_usage_stats(clean_env, tmp_path):
    """Every vLLM test (LLM engines in-process, `vllm serve` subprocesses given os.environ) calls it."""
    import os

    configure_vllm_env(tmp_path)
    assert_no_telemetry(os.environ)


def test_benchmark_server_runs_without_usage_stats(clean_env, tmp_path):
    import bench_vllm_serve

    assert_no_telemetry(bench_vllm_serve.server_env(tmp_path))


def test_fake_hub_clients_run_without_usage_stats(clean_env, tmp_path):
    with FakeHub() as hub:
        assert_no_telemetry(hub.client_env(tmp_path, base={"DO_NOT_TRACK": "0"}))


def test_test_script_exports_them_for_the_vllm_run():
    script = (REPO / "scripts" / "test.sh").read_text()
    body = re.search(r"^run_vllm\(\) \{\n(.*?)^\}", script, re.MULTILINE | re.DOTALL)
    assert body, "scripts/test.sh has no run_vllm function"
    pytest_line = next(line for line in body.group(1).splitlines() if "-m vllm" in line)
    before = body.group(1)[: body.group(1).index(pytest_line)]
    for name, value in EXPECTED.items():
        assert re.search(rf"export [^\n]*\b{name}={value}\b", before), name
