"""Fast vLLM-plugin tests that start no engine: version gate, registration, M-RoPE positions,
saved settings. Run in the vLLM environment (``scripts/setup_vllm_env.sh``)."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from pixelprune.core.mrope_positions import GridSpan, pruned_mrope_positions  # noqa: E402
from pixelprune.vllm_model.plugin import ARCHITECTURES, check_vllm_version, register  # noqa: E402


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu", "0.33.1", "0.33.0rc1"])
def test_supported_versions_pass(version):
    check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.31.2", "0.34.0", "1.0.0"])
def test_unsupported_versions_fail_with_a_clear_message(version):
    with pytest.raises(RuntimeError, match=rf"supports vLLM >=0\.32,<0\.34 but vLLM {version} is installed"):
        check_vllm_version(version)


@pytest.fixture
def fake_release(monkeypatch):
    """vLLM reports an unsupported release; the registry and the one-warning flag are restored after."""
    import vllm
    from vllm import ModelRegistry

    from pixelprune.vllm_model import plugin

    monkeypatch.setattr(vllm, "__version__", "0.35.0")
    monkeypatch.setattr(plugin, "_warned", False)
    monkeypatch.setattr(ModelRegistry, "models", {k: v for k, v in ModelRegistry.models.items() if k not in ARCHITECTURES})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("vllm.pixelprune.plugin").addHandler(handler)
    yield records
    logging.getLogger("vllm.pixelprune.plugin").removeHandler(handler)


def test_unsupported_release_warns_once_and_leaves_stock_models_alone(fake_release):
    from vllm import ModelRegistry

    stock = dict(ModelRegistry.models)
    register()
    register()  # vLLM calls the entry point in every process; one warning per process
    warnings = [r for r in fake_release if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "supports vLLM >=0.32,<0.34 but vLLM 0.35.0 is installed" in warnings[0].getMessage()
    assert {k: v for k, v in ModelRegistry.models.items() if k not in ARCHITECTURES} == stock
    assert ModelRegistry.models["Qwen3VLForConditionalGeneration"] is stock["Qwen3VLForConditionalGeneration"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_unsupported_release_pixelprune_architecture_fails_naming_the_range(fake_release, arch):
    from vllm import ModelRegistry

    register()
    # What vLLM calls (in its inspection subprocess, then in the workers) to get the class.
    with pytest.raises(RuntimeError, match=r"supports vLLM >=0\.32,<0\.34 but vLLM 0\.35\.0 is installed"):
        ModelRegistry.models[arch].load_model_cls()


def test_register_makes_all_four_architectures_resolvable():
    from vllm import ModelRegistry

    register()
    register()  # idempotent
    supported = set(ModelRegistry.get_supported_archs())
    assert set(ARCHITECTURES) <= supported
    from pixelprune.vllm_model import models

    for name in ARCHITECTURES:
        assert getattr(models, name).__name__ == name


def _stock_positions(num_tokens, spans):
    """Unpruned reference, written the way vLLM's stock Qwen3-VL walk computes it (max + 1)."""
    pieces, st = [], 0
    for offset, gh, gw in spans:
        st_idx = int(pieces[-1].max()) + 1 if pieces else 0
        pieces.append(torch.arange(offset - st).expand(3, -1) + st_idx)
        hh, ww = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        pieces.append(torch.stack([torch.zeros_like(hh), hh, ww]).reshape(3, -1) + (offset - st) + st_idx)
        st = offset + gh * gw
    st_idx = int(pieces[-1].max()) + 1 if pieces else 0
    pieces.append(torch.arange(num_tokens - st).expand(3, -1) + st_idx)
    positions = torch.cat(pieces, dim=1)
    return positions, int(positions.max()) + 1 - num_tokens


def test_unpruned_positions_equal_the_stock_walk():
    spans = [(3, 2, 5), (15, 4, 3), (30, 1, 1)]  # (offset, grid_h, grid_w); text around and between
    num_tokens = 36
    ours, delta = pruned_mrope_positions(num_tokens, [GridSpan(o, h, w) for o, h, w in spans])
    ref, ref_delta = _stock_positions(num_tokens, spans)
    assert torch.equal(ours, ref) and delta == ref_delta


@pytest.mark.parametrize("seed", range(5))
def test_pruned_positions_are_the_unpruned_ones_at_kept_tokens(seed):
    """ALGORITHM.md 5: kept tokens and all text keep exactly their unpruned positions."""
    gen = torch.Generator().manual_seed(seed)
    grids = [(3, 4), (2, 2), (5, 1)]
    text = [4, 3, 2, 5]  # before, between, after
    full_spans, spans, keep_full = [], [], []
    full_off = off = 0
    for i, (gh, gw) in enumerate(grids):
        full_off += text[i]
        off += text[i]
        keep_full += [True] * text[i]
        mask = torch.rand(gh * gw, generator=gen) < 0.5
        mask[0] = True
        kept = torch.nonzero(mask).reshape(-1)
        full_spans.append((full_off, gh, gw))
        spans.append(GridSpan(off, gh, gw, kept))
        keep_full += mask.tolist()
        full_off += gh * gw
        off += len(kept)
    full_len, pruned_len = full_off + text[-1], off + text[-1]
    keep_full += [True] * text[-1]
    ref, ref_delta = _stock_positions(full_len, full_spans)
    ours, delta = pruned_mrope_positions(pruned_len, spans)
    assert torch.equal(ours, ref[:, torch.tensor(keep_full)])
    # Decoding continues at the unpruned next position.
    assert pruned_len + delta == full_len + ref_delta


def test_overlapping_spans_are_rejected():
    with pytest.raises(ValueError, match="overlaps"):
        pruned_mrope_positions(10, [GridSpan(0, 2, 2), GridSpan(2, 1, 1)])


def test_saved_settings_come_from_the_processor_config(tmp_path):
    from pixelprune.vllm_model.multimodal_processor import saved_settings

    assert saved_settings(str(tmp_path)).threshold == 0.0
    (tmp_path / "processor_config.json").write_text(json.dumps({"pixelprune": {"threshold": 0.05, "metric": "mae"}}))
    settings = saved_settings(str(tmp_path))
    assert (settings.threshold, settings.metric) == (0.05, "mae")
    (tmp_path / "processor_config.json").write_text(json.dumps({"pixelprune": {"metric": "nope"}}))
    with pytest.raises(ValueError, match="nope"):
        saved_settings(str(tmp_path))
