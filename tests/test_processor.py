"""PixelPrune processors against the stock Qwen3VLProcessor and the shared selector (oracles).

Runs with and without torchvision: without it the stock oracle is ``Qwen3VLProcessor`` minus its
video processor (the only part that needs torchvision), with it the real stock class.
"""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest
import torch
from transformers import Qwen3VLProcessor

from images import blank_image, document_image, gradient_image, noise_image, ui_image
from pixelprune import select_keep_mask
from pixelprune.processing.processing_pixelprune import (
    KEEP_MASK_KEY,
    PixelPruneQwen3_5Processor,
    PixelPruneQwen3VLProcessor,
)

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
PROCESSOR_CLASSES = {"qwen3_vl": PixelPruneQwen3VLProcessor, "qwen3_5": PixelPruneQwen3_5Processor}
FAMILIES = list(PROCESSOR_CLASSES)
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


class _StockWithoutVideo(Qwen3VLProcessor):
    """The stock processor minus the torchvision-only video processor (oracle when it is absent)."""

    @classmethod
    def get_attributes(cls):
        return [a for a in super().get_attributes() if a != "video_processor"]


def stock_processor(path):
    return (Qwen3VLProcessor if HAS_TORCHVISION else _StockWithoutVideo).from_pretrained(path)


@pytest.fixture(autouse=True)
def _no_pixelprune_env(monkeypatch):
    for name in ("ENABLED", "THRESHOLD", "METRIC", "METHOD", "ANCHORED", "VERBOSE"):
        monkeypatch.delenv(f"PIXELPRUNE_{name}", raising=False)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def ckpt(family, tiny_checkpoint):
    return tiny_checkpoint(family)


@pytest.fixture
def processor(family, ckpt):
    return PROCESSOR_CLASSES[family].from_pretrained(ckpt)


@pytest.fixture
def stock(ckpt):
    return stock_processor(ckpt)


def batch_inputs():
    """Two prompts (two images + one image), mixed redundancy, text between images."""
    images = [document_image(), noise_image(96, 64, seed=1), ui_image()]
    text = [f"{IMAGE}Read the page. {IMAGE} and this?", f"Describe {IMAGE} please."]
    return images, text


def assert_same_features(a, b, skip=()):
    assert set(a.keys()) - set(skip) == set(b.keys()) - set(skip)
    for key in a.keys():
        if key in skip:
            continue
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and torch.equal(va, vb), key
        else:
            assert np.array_equal(np.asarray(va), np.asarray(vb)), key


def image_runs(input_ids: torch.Tensor, image_token_id: int) -> list[int]:
    """Lengths of the runs of image placeholders, in order over the batch (rows in order)."""
    runs = []
    for row in input_ids.tolist():
        count = 0
        for tok in row + [None]:
            if tok == image_token_id:
                count += 1
            elif count:
                runs.append(count)
                count = 0
    return runs


def expected_mask(out, image_processor, **settings):
    return select_keep_mask(
        out["pixel_values"],
        out["image_grid_thw"],
        merge_size=image_processor.merge_size,
        temporal_patch_size=image_processor.temporal_patch_size,
        patch_size=image_processor.patch_size,
        image_mean=image_processor.image_mean,
        image_std=image_processor.image_std,
        **settings,
    )


def split_by_image(mask: torch.Tensor, grid: torch.Tensor, merge: int = 2) -> list[torch.Tensor]:
    return list(torch.split(mask, (grid.prod(dim=1) // merge**2).tolist()))


# --------------------------------------------------------------------------------------------------
# The output contract


def test_contract_on_redundant_batch(processor, stock):
    images, text = batch_inputs()
    out = processor(images=images, text=text, padding=True, return_tensors="pt")
    ref = stock(images=images, text=text, padding=True, return_tensors="pt")

    # pixel_values and grids are the stock ones, complete
    assert torch.equal(out["pixel_values"], ref["pixel_values"])
    assert torch.equal(out["image_grid_thw"], ref["image_grid_thw"])
    mask = out[KEEP_MASK_KEY]
    assert mask.dtype == torch.bool and mask.ndim == 1
    grid = out["image_grid_thw"]
    assert mask.numel() == int((grid.prod(dim=1) // 4).sum())
    # the mask is the shared selector's on the returned pixels
    assert torch.equal(mask, expected_mask(out, processor.image_processor))
    # each image's placeholder run is its kept count
    kept = [int(m.sum()) for m in split_by_image(mask, grid)]
    assert image_runs(out["input_ids"], processor.image_token_id) == kept
    assert int((out["input_ids"] == processor.image_token_id).sum()) == int(mask.sum())
    # documents and UIs are pruned, noise is not
    total = (grid.prod(dim=1) // 4).tolist()
    assert kept[0] < total[0] and kept[2] < total[2] and kept[1] == total[1]
    # mm_token_type_ids marks exactly the placeholders, on real (non-pad) tokens
    assert torch.equal(out["mm_token_type_ids"] == 1, out["input_ids"] == processor.image_token_id)
    # the text around the images is the stock text
    for row, ref_row, att, ref_att in zip(out["input_ids"], ref["input_ids"], out["attention_mask"], ref["attention_mask"]):
        assert _collapse(row[att.bool()].tolist(), processor.image_token_id) == _collapse(
            ref_row[ref_att.bool()].tolist(), processor.image_token_id
        )
    assert [s.kept_tokens for s in processor.last_pruning_stats] == kept
    assert [s.total_tokens for s in processor.last_pruning_stats] == total


def _collapse(ids: list[int], image_token_id: int) -> list[int]:
    """Token ids with every run of image placeholders collapsed to one placeholder."""
    return [t for i, t in enumerate(ids) if not (t == image_token_id and i and ids[i - 1] == image_token_id)]


@pytest.mark.parametrize("how", ["constructor", "per_call", "env", "saved"])
def test_disabled_is_exactly_stock(how, family, ckpt, stock, monkeypatch, tmp_path):
    images, text = batch_inputs()
    cls = PROCESSOR_CLASSES[family]
    call_kwargs = {}
    if how == "constructor":
        processor = cls.from_pretrained(ckpt, pixelprune_enabled=False)
    elif how == "per_call":
        processor = cls.from_pretrained(ckpt)
        call_kwargs = {"pixelprune_enabled": False}
    elif how == "env":
        monkeypatch.setenv("PIXELPRUNE_ENABLED", "0")
        processor = cls.from_pretrained(ckpt)
    else:
        cls.from_pretrained(ckpt, pixelprune_enabled=False).save_pretrained(tmp_path)
        processor = cls.from_pretrained(tmp_path)
    out = processor(images=images, text=text, padding=True, return_tensors="pt", **call_kwargs)
    ref = stock(images=images, text=text, padding=True, return_tensors="pt")
    assert KEEP_MASK_KEY not in out
    assert_same_features(out, ref)
    assert processor.last_pruning_stats == []


def test_noise_prunes_nothing_and_matches_stock(processor, stock):
    images = [noise_image(128, 96, seed=s) for s in range(3)]
    text = [f"{IMAGE}{IMAGE}two", f"one {IMAGE}"]
    out = processor(images=images, text=text, padding=True, return_tensors="pt")
    ref = stock(images=images, text=text, padding=True, return_tensors="pt")
    assert out[KEEP_MASK_KEY].all()
    assert out[KEEP_MASK_KEY].numel() == int((ref["image_grid_thw"].prod(dim=1) // 4).sum())
    assert_same_features(out, ref, skip=(KEEP_MASK_KEY,))


def test_prompts_without_images(processor, stock):
    text = ["Hello there.", "A longer prompt with no image at all."]
    out = processor(text=text, padding=True, return_tensors="pt")
    assert KEEP_MASK_KEY not in out
    assert_same_features(out, stock(text=text, padding=True, return_tensors="pt"))


def test_batch_mixing_image_and_text_only_prompts(processor):
    out = processor(images=[document_image()], text=["no image here", f"{IMAGE} read"], padding=True, return_tensors="pt")
    runs = image_runs(out["input_ids"], processor.image_token_id)
    assert runs == [int(out[KEEP_MASK_KEY].sum())]
    assert int((out["input_ids"][0] == processor.image_token_id).sum()) == 0


def test_without_return_tensors_mask_follows_pixel_values(processor):
    out = processor(images=[document_image()], text=[f"{IMAGE}x"])
    mask = out[KEEP_MASK_KEY]
    assert type(mask) is type(out["pixel_values"])  # noqa: E721
    assert np.asarray(mask).dtype == bool
    assert len(out["input_ids"][0]) == int(np.asarray(mask).sum()) + 3  # placeholders + start, end, "x"


def test_images_only_call_returns_mask(processor):
    out = processor(images=[ui_image()], return_tensors="pt")
    assert torch.equal(out[KEEP_MASK_KEY], expected_mask(out, processor.image_processor))


# --------------------------------------------------------------------------------------------------
# Settings: per call, environment, constructor, saved config


def test_per_call_overrides_change_the_selection(processor):
    images, text = [ui_image(), gradient_image()], [f"{IMAGE}{IMAGE}"]
    base = processor(images=images, text=text, return_tensors="pt")
    lossy = processor(images=images, text=text, return_tensors="pt", pixelprune_threshold=0.3, pixelprune_metric="mae")
    raster = processor(images=images, text=text, return_tensors="pt", pixelprune_method="raster")
    sliding = processor(
        images=images, text=text, return_tensors="pt", pixelprune_threshold=0.05, pixelprune_anchored=False
    )
    ip = processor.image_processor
    assert torch.equal(lossy[KEEP_MASK_KEY], expected_mask(lossy, ip, threshold=0.3, metric="mae"))
    assert torch.equal(raster[KEEP_MASK_KEY], expected_mask(raster, ip, method="raster"))
    assert torch.equal(sliding[KEEP_MASK_KEY], expected_mask(sliding, ip, threshold=0.05, anchored=False))
    assert int(lossy[KEEP_MASK_KEY].sum()) < int(base[KEEP_MASK_KEY].sum())
    for out in (base, lossy, raster, sliding):
        assert int((out["input_ids"] == processor.image_token_id).sum()) == int(out[KEEP_MASK_KEY].sum())
    # per-call settings do not stick
    again = processor(images=images, text=text, return_tensors="pt")
    assert torch.equal(again[KEEP_MASK_KEY], base[KEEP_MASK_KEY])
    assert processor.pixelprune_settings.threshold == 0.0


def test_environment_variables(family, ckpt, monkeypatch):
    images, text = [ui_image(), gradient_image()], [f"{IMAGE}{IMAGE}"]
    processor = PROCESSOR_CLASSES[family].from_pretrained(ckpt)
    lossy = processor(images=images, text=text, return_tensors="pt", pixelprune_threshold=0.3)
    monkeypatch.setenv("PIXELPRUNE_THRESHOLD", "0.3")
    from_env = processor(images=images, text=text, return_tensors="pt")
    assert torch.equal(from_env[KEEP_MASK_KEY], lossy[KEEP_MASK_KEY])
    # per-call beats the environment
    exact = processor(images=images, text=text, return_tensors="pt", pixelprune_threshold=0.0)
    assert torch.equal(exact[KEEP_MASK_KEY], expected_mask(exact, processor.image_processor))
    # the environment beats the saved settings, and is not saved
    saved = PROCESSOR_CLASSES[family].from_pretrained(ckpt)
    assert torch.equal(saved(images=images, text=text, return_tensors="pt")[KEEP_MASK_KEY], lossy[KEEP_MASK_KEY])
    assert saved.pixelprune_settings.threshold == 0.0
    # an explicit argument in code beats the environment (#12 item 10), in from_pretrained and
    # in the constructor, and a per-call argument beats both
    explicit = PROCESSOR_CLASSES[family].from_pretrained(ckpt, pixelprune_threshold=0.0)
    assert torch.equal(explicit(images=images, text=text, return_tensors="pt")[KEEP_MASK_KEY], exact[KEEP_MASK_KEY])
    parts = {"image_processor": processor.image_processor, "tokenizer": processor.tokenizer}
    if HAS_TORCHVISION:
        parts["video_processor"] = processor.video_processor
    built = PROCESSOR_CLASSES[family](**parts, pixelprune_threshold=0.0)
    assert torch.equal(built(images=images, text=text, return_tensors="pt")[KEEP_MASK_KEY], exact[KEEP_MASK_KEY])
    per_call = explicit(images=images, text=text, return_tensors="pt", pixelprune_threshold=0.3)
    assert torch.equal(per_call[KEEP_MASK_KEY], lossy[KEEP_MASK_KEY])
    monkeypatch.setenv("PIXELPRUNE_METRIC", "cosine")
    with pytest.raises(ValueError, match="metric.*'max'"):
        PROCESSOR_CLASSES[family].from_pretrained(ckpt)


def test_save_load_round_trip(family, ckpt, tmp_path):
    cls = PROCESSOR_CLASSES[family]
    processor = cls.from_pretrained(ckpt, pixelprune_threshold=0.05, pixelprune_metric="mae", pixelprune_method="serpentine")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == cls.__name__
    assert saved["pixelprune"] == {
        "enabled": True, "threshold": 0.05, "metric": "mae", "method": "serpentine", "anchored": None, "verbose": False,
        "video": False,
    }
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.pixelprune_settings == processor.pixelprune_settings
    images, text = [ui_image()], [f"{IMAGE}"]
    assert torch.equal(
        loaded(images=images, text=text, return_tensors="pt")[KEEP_MASK_KEY],
        processor(images=images, text=text, return_tensors="pt")[KEEP_MASK_KEY],
    )
    # from_pretrained keyword overrides apply on top of the saved block
    assert cls.from_pretrained(tmp_path, pixelprune_threshold=0.2).pixelprune_settings.threshold == 0.2
    assert cls.from_pretrained(tmp_path, pixelprune_threshold=0.2).pixelprune_settings.metric == "mae"
    # the stock processor still loads the saved folder (it ignores the pixelprune block)
    stock_processor(tmp_path)


def test_constructor_arguments(family, ckpt):
    stock = stock_processor(ckpt)
    parts = {"image_processor": stock.image_processor, "tokenizer": stock.tokenizer}
    if HAS_TORCHVISION:
        parts["video_processor"] = stock.video_processor
    cls = PROCESSOR_CLASSES[family]
    p = cls(**parts, pixelprune={"threshold": 0.1, "metric": "rmse"}, pixelprune_method="raster")
    assert (p.pixelprune_settings.threshold, p.pixelprune_settings.metric, p.pixelprune_settings.method) == (
        0.1, "rmse", "raster",
    )
    p.pixelprune_settings = p.pixelprune_settings.replace(threshold=0.0)
    assert p.pixelprune["threshold"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixelprune_threshold": -0.1}, r"threshold=-0\.1.*>= 0"),
        ({"pixelprune_threshold": "abc"}, r"threshold='abc' is not a number"),
        ({"pixelprune_metric": "l2"}, r"metric 'l2'.*allowed: 'max', 'mae', 'rmse'"),
        ({"pixelprune_method": "zigzag"}, r"method 'zigzag'.*allowed: 'pred_2d', 'raster', 'serpentine'"),
        ({"pixelprune_enabled": "maybe"}, r"'enabled'='maybe' is not a boolean"),
        ({"pixelprune_thresold": 0.1}, r"Unknown PixelPrune setting.*thresold"),
        ({"pixelprune": {"metric": "l2"}}, r"metric 'l2'"),
        ({"pixelprune": 0.5}, r"pixelprune=0\.5 is invalid"),
    ],
)
def test_invalid_settings_raise_at_construction(family, ckpt, kwargs, message):
    stock = stock_processor(ckpt)
    with pytest.raises(ValueError, match=message):
        PROCESSOR_CLASSES[family](image_processor=stock.image_processor, tokenizer=stock.tokenizer, **kwargs)


def test_invalid_per_call_settings_raise(processor):
    with pytest.raises(ValueError, match="method 'zigzag'"):
        processor(images=[ui_image()], text=[IMAGE], pixelprune_method="zigzag")
    with pytest.raises(ValueError, match="Unknown PixelPrune setting"):
        processor(images=[ui_image()], text=[IMAGE], pixelprune_treshold=0.1)


# --------------------------------------------------------------------------------------------------
# apply_chat_template, statistics, decoding


def conversations():
    return [
        [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [
                {"type": "image", "image": document_image()},
                {"type": "text", "text": "Read the page, then compare with"},
                {"type": "image", "image": noise_image(64, 64)},
            ]},
        ],
        [{"role": "user", "content": [{"type": "text", "text": "And this:"}, {"type": "image", "image": ui_image()}]}],
    ]


@pytest.mark.parametrize("overrides", [{}, {"pixelprune_threshold": 0.3}])
def test_apply_chat_template_equals_call(processor, overrides):
    convs = conversations()
    out = processor.apply_chat_template(
        convs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True, **overrides
    )
    prompts = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    images = [item["image"] for conv in convs for msg in conv if isinstance(msg["content"], list)
              for item in msg["content"] if item["type"] == "image"]
    ref = processor(images=images, text=prompts, padding=True, return_tensors="pt", **overrides)
    assert_same_features(out, ref)
    assert int((out["input_ids"] == processor.image_token_id).sum()) == int(out[KEEP_MASK_KEY].sum())
    threshold = overrides.get("pixelprune_threshold", 0.0)
    assert torch.equal(out[KEEP_MASK_KEY], expected_mask(out, processor.image_processor, threshold=threshold))


def test_statistics_and_logging(family, ckpt, caplog):
    images = [blank_image(), noise_image(64, 64)]
    logger_name = "pixelprune.core.pruning"
    processor = PROCESSOR_CLASSES[family].from_pretrained(ckpt)
    with caplog.at_level(logging.INFO, logger=logger_name):
        processor(images=images, text=[f"{IMAGE}{IMAGE}"])
    assert not [r for r in caplog.records if r.name == logger_name]  # DEBUG unless verbose
    stats = processor.last_pruning_stats
    assert [(s.index, s.grid_thw, s.kept_tokens, s.total_tokens) for s in stats] == [
        (0, (1, 14, 14), 1, 49), (1, (1, 4, 4), 4, 4),
    ]
    assert stats[0].kept_ratio == pytest.approx(1 / 49) and stats[1].kept_ratio == 1.0
    assert all(s.selector_seconds >= 0 for s in stats)

    with caplog.at_level(logging.DEBUG, logger=logger_name):
        processor(images=images, text=[f"{IMAGE}{IMAGE}"])
    assert sum(r.levelno == logging.DEBUG and r.name == logger_name for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=logger_name):
        processor(images=images, text=[f"{IMAGE}{IMAGE}"], pixelprune_verbose=True)
    messages = [r.getMessage() for r in caplog.records if r.name == logger_name and r.levelno == logging.INFO]
    assert len(messages) == 2 and "kept 1/49 tokens" in messages[0] and "selector" in messages[0]


def test_decoding_is_stock(processor, stock):
    ids = processor(text=["Hello world<|im_end|>"], return_tensors="pt")["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == stock.batch_decode(ids, skip_special_tokens=True)
    assert processor.post_process_image_text_to_text(ids) == ["Hello world"]
    assert processor.decode(ids[0]) == "Hello world<|im_end|>"


def test_qwen3_5_processor_is_a_distinct_class():
    assert PixelPruneQwen3_5Processor is not PixelPruneQwen3VLProcessor
    assert issubclass(PixelPruneQwen3_5Processor, Qwen3VLProcessor)


def test_model_input_names_include_the_mask(processor):
    assert KEEP_MASK_KEY in processor.model_input_names
    assert "mm_token_type_ids" in processor.model_input_names


# --------------------------------------------------------------------------------------------------
# torchvision: with it the video processor exists and videos pass through unpruned


def test_video_processor_presence_follows_torchvision(processor):
    assert ("video_processor" in processor.get_attributes()) == HAS_TORCHVISION
    if not HAS_TORCHVISION:
        with pytest.raises(ValueError, match="torchvision"):
            processor(videos=[np.zeros((4, 64, 64, 3), dtype=np.uint8)], text=["<|vision_start|><|video_pad|><|vision_end|>"])


@pytest.mark.skipif(not HAS_TORCHVISION, reason="the stock video processor needs torchvision")
def test_video_passes_through_unpruned(processor, stock):
    # a static (fully redundant) video: a pruning video path would shrink it; ours must not
    video = np.repeat(np.asarray(blank_image(64, 64))[None], 4, axis=0)
    images = [document_image()]
    text = [f"{IMAGE} then <|vision_start|><|video_pad|><|vision_end|> end"]
    kwargs = dict(images=images, videos=[video], text=text, return_tensors="pt", do_sample_frames=False)
    out = processor(**kwargs)
    ref = stock(**kwargs)
    for key in ("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"):
        assert torch.equal(out[key], ref[key]), key
    video_id = processor.video_token_id
    assert int((out["input_ids"] == video_id).sum()) == int((ref["input_ids"] == video_id).sum())
    assert int((out["mm_token_type_ids"] == 2).sum()) == int((ref["mm_token_type_ids"] == 2).sum())
    mask = out[KEEP_MASK_KEY]
    assert mask.numel() == int(ref["image_grid_thw"].prod() // 4)  # images only
    assert int((out["input_ids"] == processor.image_token_id).sum()) == int(mask.sum()) < mask.numel()
