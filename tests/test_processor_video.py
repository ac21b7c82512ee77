"""PixelPrune processors on videos (``video`` setting, docs/ALGORITHM.md section 7) against the
stock Qwen3VLProcessor and the shared video selector.

The stock Qwen3-VL video processor needs torchvision, so this module is skipped without it (the
model-level video tests, tests/test_modeling_video.py, patchify videos themselves and still run).
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision", reason="the stock Qwen3-VL video processor needs torchvision")

from transformers import Qwen3VLProcessor  # noqa: E402

from images import color_gradient_image, document_image, noise_video, typing_video  # noqa: E402
from model_oracles import video_patches  # noqa: E402
from pixelprune import select_video_keep_mask, video_kept_per_slice  # noqa: E402
from pixelprune.core.pruning import PatchGeometry  # noqa: E402
from pixelprune.processing.processing_pixelprune import (  # noqa: E402
    KEEP_MASK_KEY,
    VIDEO_KEEP_MASK_KEY,
    PixelPruneQwen3_5Processor,
    PixelPruneQwen3VLProcessor,
)

PROCESSOR_CLASSES = {"qwen3_vl": PixelPruneQwen3VLProcessor, "qwen3_5": PixelPruneQwen3_5Processor}
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
# Frames given as lists carry no metadata: sample them all, as they are (and silence the cap warning).
VIDEO_KWARGS = dict(do_sample_frames=False, cap_pixels_per_frame=False)


@pytest.fixture(autouse=True)
def _no_pixelprune_env(monkeypatch):
    for name in ("ENABLED", "THRESHOLD", "METRIC", "METHOD", "ANCHORED", "VERBOSE", "VIDEO"):
        monkeypatch.delenv(f"PIXELPRUNE_{name}", raising=False)


@pytest.fixture(params=list(PROCESSOR_CLASSES))
def family(request):
    return request.param


@pytest.fixture
def processor(family, tiny_checkpoint):
    return PROCESSOR_CLASSES[family].from_pretrained(tiny_checkpoint(family))


@pytest.fixture
def stock(family, tiny_checkpoint):
    return Qwen3VLProcessor.from_pretrained(tiny_checkpoint(family))


def batch():
    """Two prompts: image + video + text, and video + video; videos of different sizes and lengths."""
    images = [document_image(192, 128, seed=0)]
    videos = [typing_video(192, 128, 6, seed=0), noise_video(96, 64, 4, seed=1), typing_video(128, 96, 5, seed=2)]
    text = [f"Look {IMAGE} then {VIDEO} and say.", f"{VIDEO} versus {VIDEO}?"]
    return dict(images=images, videos=videos, text=text, **VIDEO_KWARGS)


def assert_same(a, b, keys):
    for key in keys:
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), key
        else:
            assert type(va) is type(vb) and np.array_equal(np.asarray(va), np.asarray(vb)), key


def runs(ids: list[int], token_id: int) -> list[int]:
    """Lengths of the runs of ``token_id`` in ``ids``, in order."""
    out, count = [], 0
    for tok in ids + [None]:
        if tok == token_id:
            count += 1
        elif count:
            out.append(count)
            count = 0
    return out


def without_pads(text: str) -> str:
    return re.sub(r"(<\|(video|image)_pad\|>)+", "<PAD>", text)


# --------------------------------------------------------------------------------------------------
# video=False (the default): exactly stock


@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_video_off_is_exactly_stock(processor, stock, return_tensors):
    """Default settings: videos are untouched; with no image in the prompt every key, input_ids
    included, equals the stock processor's."""
    kwargs = dict(videos=[typing_video(192, 128, 6, seed=0)], text=[f"See {VIDEO} now."], **VIDEO_KWARGS)
    if return_tensors:
        kwargs["return_tensors"] = return_tensors
    out, ref = processor(**kwargs), stock(**kwargs)
    assert set(out.keys()) == set(ref.keys()) and VIDEO_KEEP_MASK_KEY not in out
    assert_same(out, ref, ref.keys())
    assert processor.last_video_pruning_stats == []
    # pruning disabled altogether wins over video=True
    off = processor(**kwargs, pixelprune_enabled=False, pixelprune_video=True)
    assert set(off.keys()) == set(ref.keys())
    assert_same(off, ref, ref.keys())


def test_video_off_with_images_prunes_images_only(processor, stock):
    kwargs = dict(batch(), return_tensors="pt", padding=True)
    out, ref = processor(**kwargs), stock(**kwargs)
    assert VIDEO_KEEP_MASK_KEY not in out and KEEP_MASK_KEY in out
    assert_same(out, ref, ["pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"])
    video_id = processor.video_token_id
    for row, ref_row in zip(out["input_ids"].tolist(), ref["input_ids"].tolist()):
        assert runs(row, video_id) == runs(ref_row, video_id)


# --------------------------------------------------------------------------------------------------
# video=True: the contract


def test_contract(processor, stock):
    kwargs = dict(batch(), return_tensors="pt", padding=True)
    out = processor(**kwargs, pixelprune_video=True)
    ref = stock(**kwargs)
    assert set(out.keys()) == set(ref.keys()) | {KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY}
    assert_same(out, ref, ["pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"])
    vp = processor.video_processor
    grid = out["video_grid_thw"]
    expected = select_video_keep_mask(
        out["pixel_values_videos"], grid, merge_size=vp.merge_size, temporal_patch_size=vp.temporal_patch_size,
        patch_size=vp.patch_size, image_mean=vp.image_mean, image_std=vp.image_std,
    )
    mask = out[VIDEO_KEEP_MASK_KEY]
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    per_slice = [k.tolist() for k in video_kept_per_slice(mask, grid)]
    assert per_slice[1] == [6, 6]  # the noise video keeps everything
    assert sum(per_slice[0]) < 0.7 * (grid[0].prod() // 4) and sum(per_slice[2]) < 0.7 * (grid[2].prod() // 4)

    # Each slice's run holds its kept count, in order over the batch; nothing else changed.
    video_id = processor.video_token_id
    ids = [row[m.bool()].tolist() for row, m in zip(out["input_ids"], out["attention_mask"])]
    assert [r for row in ids for r in runs(row, video_id)] == [k for video in per_slice for k in video]
    assert int((out["mm_token_type_ids"] == 2).sum()) == int(mask.sum())
    assert torch.equal(out["mm_token_type_ids"] == 2, out["input_ids"] == video_id)
    # Timestamps and every other token untouched: the texts equal the stock ones up to run lengths.
    for row, ref_row, m, ref_m in zip(out["input_ids"], ref["input_ids"], out["attention_mask"], ref["attention_mask"]):
        text = processor.decode(row[m.bool()])
        ref_text = stock.decode(ref_row[ref_m.bool()])
        assert without_pads(text) == without_pads(ref_text)
        assert "seconds>" in text

    stats = processor.last_video_pruning_stats
    assert [s.kept_per_slice for s in stats] == [tuple(v) for v in per_slice]
    assert [s.grid_thw for s in stats] == [tuple(g) for g in grid.tolist()]
    assert [s.total_tokens for s in stats] == (grid.prod(-1) // 4).tolist()
    assert len(processor.last_pruning_stats) == 1  # images only


def test_mask_follows_pixel_values_videos_without_return_tensors(processor):
    out = processor(**batch(), pixelprune_video=True)
    assert type(out[VIDEO_KEEP_MASK_KEY]) is type(out["pixel_values_videos"])


def test_selector_gets_the_video_processors_geometry(family, tiny_checkpoint):
    """The mask is computed with the VIDEO processor's mean/std and sizes (they may differ from the
    image processor's): at threshold > 0 the normalisation matters."""
    processor = PROCESSOR_CLASSES[family].from_pretrained(tiny_checkpoint(family))
    processor.video_processor.image_mean = [0.48145466, 0.4578275, 0.40821073]
    processor.video_processor.image_std = [0.26862954, 0.26130258, 0.27577711]
    geometry = PatchGeometry.from_image_processor(processor.video_processor, {})
    assert geometry.image_mean == tuple(processor.video_processor.image_mean)
    assert geometry.image_std == tuple(processor.video_processor.image_std)
    assert geometry.image_mean != tuple(processor.image_processor.image_mean)
    assert (geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size) == (16, 2, 2)
    clip = [color_gradient_image(128, 96)] * 4
    # Neighbouring tokens differ by 0.10 (across) and 0.13 (down) in [0, 1] pixels: similar at 0.15
    # with the video processor's std, not with 0.5 (distances x 1.85).
    out = processor(videos=[clip], text=[VIDEO], pixelprune_video=True, pixelprune_threshold=0.15, **VIDEO_KWARGS)
    kwargs = dict(threshold=0.15, merge_size=2, temporal_patch_size=2, patch_size=16)
    ours = select_video_keep_mask(out["pixel_values_videos"], out["video_grid_thw"],
                                  image_mean=geometry.image_mean, image_std=geometry.image_std, **kwargs)
    wrong = select_video_keep_mask(out["pixel_values_videos"], out["video_grid_thw"], **kwargs)  # mean=std=0.5
    assert torch.equal(out[VIDEO_KEEP_MASK_KEY], ours)
    assert not torch.equal(ours, wrong), "the check must be able to fail"


def test_processor_pixels_are_the_model_tests_pixels(processor):
    """tests/model_oracles.video_patches lays clips out exactly as the stock video processor."""
    clip = typing_video(192, 128, 5, seed=3)
    out = processor(videos=[clip], text=[VIDEO], return_tensors="pt", **VIDEO_KWARGS)
    pixels, grid = video_patches(clip)
    assert torch.equal(out["video_grid_thw"], grid)
    torch.testing.assert_close(out["pixel_values_videos"], pixels, atol=1e-6, rtol=0)


def test_settings_precedence(family, tiny_checkpoint, monkeypatch):
    path = tiny_checkpoint(family)
    kwargs = dict(videos=[typing_video(192, 128, 4, seed=0)], text=[VIDEO], **VIDEO_KWARGS)
    monkeypatch.setenv("PIXELPRUNE_VIDEO", "1")
    assert VIDEO_KEEP_MASK_KEY in PROCESSOR_CLASSES[family].from_pretrained(path)(**kwargs)
    monkeypatch.delenv("PIXELPRUNE_VIDEO")
    processor = PROCESSOR_CLASSES[family].from_pretrained(path, pixelprune_video=True)
    assert VIDEO_KEEP_MASK_KEY in processor(**kwargs)
    assert VIDEO_KEEP_MASK_KEY not in processor(**kwargs, pixelprune_video=False)


def test_model_input_names_include_the_video_mask(processor):
    assert VIDEO_KEEP_MASK_KEY in processor.model_input_names and KEEP_MASK_KEY in processor.model_input_names


# --------------------------------------------------------------------------------------------------
# chat template


def conversation(*parts):
    content = []
    for part in parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        elif isinstance(part, list):
            content.append({"type": "video", "video": part})
        else:
            content.append({"type": "image", "image": part})
    return [{"role": "user", "content": content}]


def test_apply_chat_template_with_frame_lists_mixed_and_batched(processor):
    conversations = [
        conversation("Compare", document_image(192, 128, seed=0), "with", typing_video(192, 128, 6, seed=0)),
        conversation(typing_video(128, 96, 4, seed=2), "What changed?"),
    ]
    kw = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True,
              **VIDEO_KWARGS)
    out = processor.apply_chat_template(conversations, pixelprune_video=True, **kw)
    texts = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    direct = processor(
        text=texts, images=[document_image(192, 128, seed=0)],
        videos=[typing_video(192, 128, 6, seed=0), typing_video(128, 96, 4, seed=2)],
        return_tensors="pt", padding=True, pixelprune_video=True, **VIDEO_KWARGS,
    )
    assert set(out.keys()) == set(direct.keys())
    assert_same(out, direct, direct.keys())
    mask = out[VIDEO_KEEP_MASK_KEY]
    assert int((out["input_ids"] == processor.video_token_id).sum()) == int(mask.sum()) < mask.numel()
    # default (video=False): every video token, no video mask
    stock_like = processor.apply_chat_template(conversations, **kw)
    assert VIDEO_KEEP_MASK_KEY not in stock_like
    assert int((stock_like["input_ids"] == processor.video_token_id).sum()) == mask.numel()


def _torchcodec_decodes() -> bool:
    """transformers decodes video paths with torchcodec; a build that cannot load (no FFmpeg
    libraries, a CUDA build next to a CPU torch) counts as missing."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:  # noqa: BLE001 - any load failure means transformers cannot decode either
        return False
    return True


@pytest.mark.skipif(
    not _torchcodec_decodes() or importlib.util.find_spec("av") is None,
    reason="decoding a video file needs torchcodec (transformers' video loader) and writing one PyAV",
)
def test_apply_chat_template_with_a_video_file(processor, tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv444p"
        for frame in typing_video(128, 96, 8, seed=0):
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())
    conv = [{"role": "user", "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": "Hi"}]}]
    out = processor.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt",
                                        pixelprune_video=True)
    mask = out[VIDEO_KEEP_MASK_KEY]
    assert int((out["input_ids"] == processor.video_token_id).sum()) == int(mask.sum()) < mask.numel()
    # the same file with video pruning off: the stock keys, every video token
    stock = processor.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt")
    assert VIDEO_KEEP_MASK_KEY not in stock
    assert torch.equal(stock["pixel_values_videos"], out["pixel_values_videos"])
    assert int((stock["input_ids"] == processor.video_token_id).sum()) == mask.numel()


# --------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.parametrize("family_name", ["qwen3_vl", "qwen3_5"])
@torch.no_grad()
def test_processor_output_drives_the_model(family_name, tiny_checkpoint):
    """Processor (video on) + our model: fewer tokens than stock, generate runs, and the logits equal
    our model's on the same inputs built by the model tests' helpers (same pixels, same mask)."""
    import pixelprune.modeling as modeling

    path = tiny_checkpoint(family_name)
    processor = PROCESSOR_CLASSES[family_name].from_pretrained(path, pixelprune_video=True)
    cls = {"qwen3_vl": modeling.PixelPruneQwen3VLForConditionalGeneration,
           "qwen3_5": modeling.PixelPruneQwen3_5ForConditionalGeneration}[family_name]
    model = cls.from_pretrained(path).eval()
    conv = conversation("Compare", document_image(192, 128, seed=0), "with", typing_video(192, 128, 6, seed=0))
    inputs = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", **VIDEO_KWARGS)
    full = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt", pixelprune_enabled=False, **VIDEO_KWARGS)
    assert inputs["input_ids"].shape[1] < full["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)


# --------------------------------------------------------------------------------------------------
# training collator


def video_samples():
    """A pruned video + image sample, a text-only one and a video-only one."""
    return [
        {"messages": [
            {"role": "user", "content": [{"type": "video", "video": typing_video(192, 128, 6, seed=0)},
                                         {"type": "image", "image": document_image(160, 128, seed=1)},
                                         {"type": "text", "text": "What was typed?"}]},
            {"role": "assistant", "content": "Three words."}]},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hello there."}]},
        {"messages": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And here?"}]},
                      {"role": "assistant", "content": "Nothing."}],
         "videos": [typing_video(128, 96, 4, seed=2)]},
    ]


def test_collator_packs_pruned_videos_like_samples_one_by_one(tiny_checkpoint):
    """Padding-free batches of video samples: each sample's positions are the model's own, and the
    packed loss and gradients equal the samples' one by one."""
    import pixelprune.modeling as modeling
    from pixelprune.training import IGNORE_INDEX, PixelPruneDataCollator

    path = tiny_checkpoint("qwen3_vl")
    processor = PixelPruneQwen3VLProcessor.from_pretrained(path)
    kwargs = dict(processor_kwargs={"pixelprune_video": True, **VIDEO_KWARGS})
    samples = video_samples()
    packed = PixelPruneDataCollator(processor, padding_free=True, **kwargs)(samples)
    keep = packed[VIDEO_KEEP_MASK_KEY]
    assert packed["video_grid_thw"].shape[0] == 2 and 0 < int(keep.sum()) < keep.numel()
    assert int((packed["input_ids"] == processor.video_token_id).sum()) == int(keep.sum())
    padded = PixelPruneDataCollator(processor, **kwargs)(samples)
    assert torch.equal(padded[VIDEO_KEEP_MASK_KEY], keep)
    assert not bool((padded["labels"] == processor.video_token_id).any())

    model = modeling.PixelPruneQwen3VLForConditionalGeneration.from_pretrained(path).train()
    single = PixelPruneDataCollator(processor, **kwargs)
    encoded = [single([s]) for s in samples]
    offset = 0
    for e in encoded:
        n = e["input_ids"].shape[1]
        expected, _ = model.model.get_rope_index(
            e["input_ids"], e["mm_token_type_ids"], image_grid_thw=e.get("image_grid_thw"),
            video_grid_thw=e.get("video_grid_thw"), image_keep_mask=e.get(KEEP_MASK_KEY),
            video_keep_mask=e.get(VIDEO_KEEP_MASK_KEY),
        )
        assert torch.equal(packed["position_ids"][1:, 0, offset : offset + n], expected[:, 0])
        offset += n

    loss = model(**packed).loss
    loss.backward()
    got = model.model.visual.patch_embed.proj.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    n_total = sum(int((e["labels"][0, 1:] != IGNORE_INDEX).sum()) for e in encoded)
    expected_loss = 0.0
    for e in encoded:
        part = model(**e).loss * int((e["labels"][0, 1:] != IGNORE_INDEX).sum()) / n_total
        part.backward()
        expected_loss += part.detach()
    torch.testing.assert_close(loss.detach(), expected_loss, atol=1e-5, rtol=0)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, model.model.visual.patch_embed.proj.weight.grad, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# exported Hub repo (trust_remote_code, pixelprune not importable)

REMOTE_SCRIPT = r'''
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"pixelprune", "processing", "modeling", "hub_configs", "vllm_model"}:
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
import numpy as np, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

repo, frames_path, result = sys.argv[1:4]
frames = [Image.fromarray(f) for f in np.load(frames_path)]
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True).eval()
messages = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "Hi"}]}]
inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True,
                                       return_tensors="pt", pixelprune_video=True, do_sample_frames=False)
with torch.no_grad():
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
torch.save({"inputs": dict(inputs), "generated": generated}, result)
'''


def test_exported_repo_prunes_videos_like_the_package(tiny_checkpoint, tiny_export, tmp_path):
    import os
    import subprocess
    import sys

    import pixelprune.modeling as modeling

    frames = typing_video(192, 128, 6, seed=0)
    np.save(tmp_path / "frames.npy", np.stack([np.asarray(f) for f in frames]))
    (tmp_path / "run.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tiny_export("qwen3_vl")), str(tmp_path / "frames.npy"),
         str(tmp_path / "result.pt")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    remote = torch.load(tmp_path / "result.pt", weights_only=False)

    base = tiny_checkpoint("qwen3_vl")
    processor = PixelPruneQwen3VLProcessor.from_pretrained(base)
    model = modeling.PixelPruneQwen3VLForConditionalGeneration.from_pretrained(base).eval()
    inputs = processor.apply_chat_template(
        conversation(frames, "Hi"), tokenize=True, add_generation_prompt=True, return_dict=True,
        return_tensors="pt", pixelprune_video=True, do_sample_frames=False,
    )
    assert set(remote["inputs"]) == set(inputs.keys())
    assert_same(remote["inputs"], inputs, inputs.keys())
    keep = inputs[VIDEO_KEEP_MASK_KEY]
    assert 0 < int(keep.sum()) < keep.numel()
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(remote["generated"], expected)
