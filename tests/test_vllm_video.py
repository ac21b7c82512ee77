"""Video pruning through the vLLM plugin (ALGORITHM.md section 7), one Qwen3-VL engine for the module.

Oracles:

* M-RoPE, without an engine: the plugin's positions for a prompt with pruned video slices are the
  stock vLLM walk's positions of the unpruned prompt at the kept tokens, and decoding continues
  from the unpruned next position; a slice whose run does not hold its kept count is an error.
* The public selector: each slice's ``<|video_pad|>`` run in vLLM's prompt holds exactly the
  tokens ``pixelprune.select_video_tokens`` keeps on the transformers video processor's
  (normalised) output, although vLLM prunes the raw 0..255 pixels it normalises on device.
* The transformers classes (kept counts per slice, prompt length, greedy tokens) on a video prompt
  and an image+video prompt (Qwen3.5 and tensor parallelism: test_vllm_families.py,
  test_vllm_parallel.py).
* The same engine with video pruning off (opt-in per request) and on a video with nothing to prune.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from images import noise_video, sparse_blocks_image  # noqa: E402
from vllm_harness import (  # noqa: E402
    CHAT,
    IMAGE,
    VIDEO,
    VIDEO_FPS,
    build_checkpoint,
    configure_vllm_env,
    hf_generate,
    hf_python,
    pixelprune_copy,
    save_images,
    save_videos,
    screen_video,
    smooth_video,
    video_metadata,
)

from pixelprune.core.keep_mask import VIDEO_KEEP_MASK_KEY  # noqa: E402

FAMILY = "qwen3_vl"
MAX_NEW = 6
ONE_VIDEO = CHAT.format(images=VIDEO, text="Describe this video.")
IMAGE_AND_VIDEO = CHAT.format(images=IMAGE + VIDEO, text="Does the picture appear in the video?")
ON = {"pixelprune_video": True}


# --- M-RoPE positions of pruned video slices (no engine) -------------------------------------

TOKENS = SimpleNamespace(video=100, start=101, end=102, image=103)
CONFIG = SimpleNamespace(video_token_id=TOKENS.video, vision_start_token_id=TOKENS.start,
                         vision_end_token_id=TOKENS.end, image_token_id=TOKENS.image,
                         vision_config=SimpleNamespace(spatial_merge_size=2))


class _Tokenizer:
    """Timestamps as 1-3 plain tokens (the stock replacement tokenises each one on its own)."""

    def encode(self, text, add_special_tokens=False):
        return [1 + (ord(c) % 7) for c in text[:3]]


def _video_feature(offset, length, grid, keep_mask=None):
    from vllm.multimodal.inputs import (
        MultiModalFeatureSpec, MultiModalFieldConfig, MultiModalFieldElem, MultiModalKwargsItem, PlaceholderRange,
    )

    data = {"video_grid_thw": MultiModalFieldElem(data=torch.tensor(grid), field=MultiModalFieldConfig.batched("video").field)}
    if keep_mask is not None:
        data[VIDEO_KEEP_MASK_KEY] = MultiModalFieldElem(data=keep_mask, field=MultiModalFieldConfig.batched("video").field)
    return MultiModalFeatureSpec(data=MultiModalKwargsItem(data), modality="video", identifier="v",
                                 mm_position=PlaceholderRange(offset=offset, length=length))


def _video_tokens(per_slice, timestamps):
    from vllm.model_executor.models.qwen3_vl import Qwen3VLMultiModalProcessor

    return list(Qwen3VLMultiModalProcessor.get_video_repl(
        tokens_per_frame=per_slice, timestamps=timestamps, tokenizer=_Tokenizer(),
        vision_start_token_id=TOKENS.start, vision_end_token_id=TOKENS.end, video_token_id=TOKENS.video,
    ).full)


def _positions(tokens, features):
    from pixelprune.vllm_model.models import PixelPruneModelMixin

    return PixelPruneModelMixin.get_mrope_input_positions(SimpleNamespace(config=CONFIG), tokens, features)


@pytest.mark.parametrize("seed", range(4))
def test_pruned_video_positions_are_the_stock_unpruned_ones_at_kept_tokens(seed):
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration

    gen = torch.Generator().manual_seed(seed)
    t, gh, gw = 3, 3, 4  # token grid of each slice (patch grid 6x8)
    mask = torch.rand(t * gh * gw, generator=gen) < 0.4
    mask.view(t, -1)[:, 0] = True  # the selector always keeps each slice's first token
    timestamps = [0.5, 1.5, 2.5]
    before, after = [7, 8, 9], [10, 11]
    full = before + _video_tokens([gh * gw] * t, timestamps) + after
    pruned = before + _video_tokens(mask.view(t, -1).sum(-1).tolist(), timestamps) + after
    grid = [t, 2 * gh, 2 * gw]
    ref, ref_delta = Qwen3VLForConditionalGeneration._get_mrope_input_positions(
        full, [_video_feature(len(before), len(full) - len(before) - len(after), grid)], CONFIG)
    ours, delta = _positions(pruned, [_video_feature(len(before), len(pruned) - len(before) - len(after), grid, mask)])
    # Every token of the full prompt that survives: text, timestamps, markers, kept video tokens.
    survives, video_index = [], 0
    for token in full:
        survives.append(token != TOKENS.video or bool(mask[video_index]))
        video_index += token == TOKENS.video
    assert torch.equal(ours, ref[:, torch.tensor(survives)])
    assert len(pruned) + delta == len(full) + ref_delta  # decoding continues at the unpruned position
    assert not bool(mask.all())


def test_a_slice_run_that_is_not_its_kept_count_is_an_error():
    mask = torch.tensor([True, False, False, True, True, True, False, False])  # 2 slices of 2x2: kept 2, 2
    tokens = _video_tokens([2, 1], [0.5, 1.5])  # slice 1 lost a token
    with pytest.raises(ValueError, match="video slice 1 has 1 placeholder tokens in the prompt but 2 kept tokens"):
        _positions(tokens, [_video_feature(0, len(tokens), [2, 4, 4], mask)])


def test_slice_runs_are_read_between_vision_markers():
    from pixelprune.vllm_model.multimodal_processor import video_slice_runs

    tokens = _video_tokens([3, 1, 2], [0.5, 1.5, 2.5])
    assert video_slice_runs(tokens, TOKENS.start, TOKENS.end, TOKENS.video) == [3, 1, 2]


# --- one engine ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_video")
    configure_vllm_env(root)
    return root


@pytest.fixture(scope="module")
def checkpoint(work):
    return pixelprune_copy(build_checkpoint(FAMILY, work / "stock"), work / "pixelprune", FAMILY)


@pytest.fixture(scope="module")
def videos():
    return {"screen": screen_video(), "smooth": smooth_video(), "noise": np.stack([np.asarray(f) for f in noise_video()])}


@pytest.fixture(scope="module")
def llm(checkpoint):
    from vllm import LLM

    engine = LLM(model=str(checkpoint), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
                 limit_mm_per_prompt={"image": 1, "video": 1}, max_num_seqs=4)
    yield engine
    del engine
    gc.collect()


def _request(prompt, video, image=None, **settings):
    data = {"video": (video, video_metadata(len(video)))}
    if image is not None:
        data["image"] = image
    return {"prompt": prompt, "multi_modal_data": data, **({"mm_processor_kwargs": settings} if settings else {})}


def _run(llm, requests):
    """Per request: (prompt token ids, greedy tokens, per-slice video runs)."""
    from vllm import SamplingParams

    from pixelprune.vllm_model.multimodal_processor import video_slice_runs

    config = llm.llm_engine.model_config.hf_config
    outs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=MAX_NEW))
    return [(list(o.prompt_token_ids), list(o.outputs[0].token_ids),
             video_slice_runs(o.prompt_token_ids, config.vision_start_token_id, config.vision_end_token_id,
                              config.video_token_id)) for o in outs]


def _selector_runs(checkpoint, video, threshold=0.0):
    """Kept tokens per slice by the public selector on the transformers video processor's output."""
    from transformers import AutoVideoProcessor

    import pixelprune

    processor = AutoVideoProcessor.from_pretrained(str(checkpoint))
    metadata = {k: v for k, v in video_metadata(len(video)).items() if k not in ("video_backend", "do_sample_frames")}
    out = processor(videos=[video], video_metadata=[metadata], do_sample_frames=False,
                    return_tensors="pt")
    grid = out["video_grid_thw"]
    (kept,) = pixelprune.select_video_tokens(
        out["pixel_values_videos"], grid, merge_size=processor.merge_size, temporal_patch_size=processor.temporal_patch_size,
        patch_size=processor.patch_size, image_mean=processor.image_mean, image_std=processor.image_std, threshold=threshold)
    t, h, w = grid[0].tolist()
    slice_tokens = h * w // processor.merge_size**2
    return torch.bincount(kept // slice_tokens, minlength=t).tolist(), [slice_tokens] * t


def test_video_pruning_is_opt_in_per_request(llm, videos):
    video = videos["screen"]
    default, on, on_but_disabled, default_again = _run(llm, [
        _request(ONE_VIDEO, video), _request(ONE_VIDEO, video, **ON),
        _request(ONE_VIDEO, video, pixelprune_video=True, pixelprune_enabled=False), _request(ONE_VIDEO, video),
    ])
    assert default == on_but_disabled == default_again  # the processor cache keys include the kwargs
    assert len(set(default[2])) == 1  # unpruned: every slice holds its full grid
    assert len(on[0]) < len(default[0])
    assert all(0 < kept < full for kept, full in zip(on[2], default[2]))  # every slice keeps some, prunes some


@pytest.mark.parametrize(("name", "threshold"), [("screen", 0.0), ("smooth", 0.0), ("smooth", 0.1)])
def test_slice_runs_are_the_selectors_kept_counts(llm, checkpoint, videos, name, threshold):
    video = videos[name]
    (unpruned, _, full_runs), (pruned, _, runs) = _run(llm, [
        _request(ONE_VIDEO, video), _request(ONE_VIDEO, video, pixelprune_threshold=threshold, **ON)])
    expected, slice_tokens = _selector_runs(checkpoint, video, threshold)
    assert full_runs == slice_tokens
    assert runs == expected
    assert len(unpruned) - len(pruned) == sum(slice_tokens) - sum(expected)
    if (name, threshold) != ("smooth", 0.0):
        assert sum(expected) < sum(slice_tokens)


def test_threshold_per_request_prunes_more(llm, videos):
    video = videos["smooth"]
    lossless, lossy = _run(llm, [_request(ONE_VIDEO, video, **ON), _request(ONE_VIDEO, video, pixelprune_threshold=0.1, **ON)])
    assert sum(lossy[2]) < sum(lossless[2])


def test_nothing_prunable_video_is_the_unpruned_request(llm, videos):
    off, on = _run(llm, [_request(ONE_VIDEO, videos["noise"]), _request(ONE_VIDEO, videos["noise"], **ON)])
    assert on == off


def test_image_and_video_prompt_prunes_each(llm, videos):
    image, video = sparse_blocks_image(seed=0), videos["screen"]
    both, nothing, video_only = _run(llm, [
        _request(IMAGE_AND_VIDEO, video, image, **ON),
        _request(IMAGE_AND_VIDEO, video, image, pixelprune_enabled=False),
        _request(IMAGE_AND_VIDEO, video, image),  # images are pruned by default, videos are not
    ])
    (pruned_video, _, _), (full_video, _, _) = _run(llm, [_request(ONE_VIDEO, video, **ON), _request(ONE_VIDEO, video)])
    video_saved = len(full_video) - len(pruned_video)
    image_saved = len(nothing[0]) - len(video_only[0])
    assert video_saved > 0 and image_saved > 0
    assert len(nothing[0]) - len(both[0]) == video_saved + image_saved
    assert video_only[2] == nothing[2] and both[2] != nothing[2]


def test_kept_video_tokens_are_logged(llm, videos, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="vllm.pixelprune"):
        logger = logging.getLogger("vllm.pixelprune.processor")
        propagate, logger.propagate = logger.propagate, True
        try:
            _run(llm, [_request(ONE_VIDEO, videos["screen"], pixelprune_threshold=0.01, **ON)])
        finally:
            logger.propagate = propagate
    assert any("PixelPrune: 1 video(s), kept" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.skipif(hf_python() is None, reason="PIXELPRUNE_HF_PYTHON (transformers >= 5.20 venv) not set")
def test_parity_with_transformers(llm, checkpoint, videos, work):
    image = sparse_blocks_image(seed=0)
    (image_path,) = save_images(work, [[image]])[0]
    paths = save_videos(work, videos)
    cases = [  # (prompt, video, image, settings)
        (ONE_VIDEO, "screen", False, ON),
        (IMAGE_AND_VIDEO, "screen", True, ON),
        (ONE_VIDEO, "smooth", False, {**ON, "pixelprune_threshold": 0.1}),
        (ONE_VIDEO, "screen", False, {}),
    ]
    hf = hf_generate(checkpoint, FAMILY, [
        {"prompt": p, "images": [image_path] if with_image else [], "videos": [{"path": paths[v], "fps": VIDEO_FPS}],
         "settings": s} for p, v, with_image, s in cases], MAX_NEW, work)
    ours = _run(llm, [_request(p, videos[v], image if with_image else None, **s) for p, v, with_image, s in cases])
    for case, ref, (prompt_ids, tokens, runs) in zip(cases, hf, ours):
        assert runs == ref["video_kept"][0], case
        assert len(prompt_ids) == ref["prompt_len"], case
        assert tokens == ref["tokens"], case
    assert sum(hf[0]["video_kept"][0]) < sum(hf[0]["video_total"][0])
    assert sum(hf[1]["kept"]) < sum(hf[1]["total"])


def test_profiling_dummy_videos_are_not_pruned(llm, monkeypatch):
    """The encoder budget is sized on the dummy video, a static clip that would prune to almost
    nothing: its placeholders must stay full even when videos are pruned by default."""
    import dataclasses

    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing import TimingContext

    from pixelprune.core.settings import prefixed

    monkeypatch.setenv("PIXELPRUNE_VIDEO", "1")  # engine-wide default (resolved when the processor is made)
    model_config = llm.llm_engine.model_config
    processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    dummy = processor.get_dummy_mm_inputs({"video": 1})
    (item,) = dummy["mm_kwargs"]["video"]
    t, h, w = item["video_grid_thw"].data.tolist()
    full = t * h * w // 4
    assert dummy["mm_placeholders"]["video"][0].get_num_embeds() == full
    # The same dummy without the profiling switch is pruned: the switch is what keeps it full.
    inputs = processor.get_dummy_inputs(model_config.max_model_len, {"video": 1},
                                        model_config.get_multimodal_config().limit_per_prompt)
    kwargs = {k: v for k, v in inputs.hf_processor_mm_kwargs.items() if k != prefixed("enabled")}
    pruned = processor.apply(dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs), TimingContext(enabled=False))
    assert pruned["mm_placeholders"]["video"][0].get_num_embeds() < full
