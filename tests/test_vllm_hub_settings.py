"""A checkpoint's saved PixelPrune settings reach vLLM from a Hub id exactly as from a local folder.

vLLM keeps a Hub id in ``model_config.model`` (it substitutes the snapshot path only offline), so the
saved ``pixelprune`` block must be resolved the way vLLM resolves the model's other config files:
through the Hub, at ``model_config.revision``. The Hub here is :class:`fake_hub.FakeHub` on
loopback; ``huggingface_hub`` reads ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` at import, so each client
runs in a subprocess pointed at it (online, its own ``HF_HOME``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

from fake_hub import FakeHub  # noqa: E402
from vllm_harness import build_checkpoint, configure_vllm_env, hf_python, pixelprune_copy  # noqa: E402

pytestmark = pytest.mark.slow
FAMILY = "qwen3_vl"
REPO = "me/doc-model-PixelPrune"

# The vLLM side: the processing info vLLM builds for each (model, revision), as the engine does.
VLLM_PROBE = r"""
import json, sys
from vllm.config import ModelConfig
from vllm.multimodal import MULTIMODAL_REGISTRY
from pixelprune.vllm_model.plugin import register

register()
results = []
for model, revision in json.loads(sys.argv[1]):
    config = ModelConfig(model=model, revision=revision, dtype="float32", max_model_len=2048)
    info = MULTIMODAL_REGISTRY.get_processing_info(config)
    results.append({"model": config.model, "settings": info.pixelprune_defaults.to_dict()})
print("RESULT " + json.dumps(results))
"""

# The transformers side: the PixelPrune processor loaded by the same ids.
HF_PROBE = r"""
import json, sys
from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor

results = []
for model, revision in json.loads(sys.argv[1]):
    processor = PixelPruneQwen3VLProcessor.from_pretrained(model, revision=revision)
    results.append({"settings": processor.pixelprune_settings.to_dict()})
print("RESULT " + json.dumps(results))
"""


def probe(code: str, cases: list[tuple[str, str | None]], env: dict, python: str = sys.executable) -> list[dict]:
    """Run ``code`` on ``cases`` in a fresh interpreter with ``env``; its per-case results."""
    proc = subprocess.run([python, "-c", code, json.dumps(cases)], env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise AssertionError(f"probe failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_saved_settings_reach_vllm_from_a_hub_id_as_from_a_folder(tmp_path):
    configure_vllm_env(tmp_path)
    stock = build_checkpoint(FAMILY, tmp_path / "stock")
    folders = {  # revision -> the repo at that revision
        None: pixelprune_copy(stock, tmp_path / "main", FAMILY, {"threshold": 0.3, "metric": "mae"}),
        "v2": pixelprune_copy(stock, tmp_path / "v2", FAMILY, {"threshold": 0.1}),
    }
    expected = {None: {"threshold": 0.3, "metric": "mae"}, "v2": {"threshold": 0.1}}
    hub_cases = [(REPO, revision) for revision in folders]
    folder_cases = [(str(folder), None) for folder in folders.values()]
    with FakeHub() as hub:
        hub.add_repo(REPO, folders[None])
        hub.add_repo(REPO, folders["v2"], revision="v2")
        env = hub.client_env(tmp_path / "hf_home")
        vllm_results = probe(VLLM_PROBE, hub_cases + folder_cases, env)
        hf_results = probe(HF_PROBE, hub_cases, env, hf_python() or sys.executable)
        assert not hub.unhandled, hub.unhandled
        # The settings file was fetched from the Hub at each requested revision (vLLM resolves a
        # branch or tag to its commit first), not looked up as a local path.
        fetched = {rev for rev, file in hub.requested_files(REPO) if file == "processor_config.json"}
        for revision in folders:
            assert fetched & {revision or "main", hub.commit(REPO, revision or "main")}, (revision, fetched)

    from_hub, from_folder = vllm_results[: len(folders)], vllm_results[len(folders) :]
    for revision, hub_result, folder_result, hf_result in zip(folders, from_hub, from_folder, hf_results):
        assert hub_result["model"] == REPO, "vLLM must keep the Hub id (the case this test is about)"
        for key, value in expected[revision].items():
            assert hub_result["settings"][key] == value, (revision, key, hub_result["settings"])
        assert hub_result["settings"] == folder_result["settings"] == hf_result["settings"], revision
