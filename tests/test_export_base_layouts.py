"""``pixelprune export`` accepts every processor layout transformers loads (issue 11, item 9):

* ``hub``: the stock Hub repos' ``preprocessor_config.json`` + ``video_preprocessor_config.json``;
* ``transformers``: what transformers 5.x ``save_pretrained`` writes, one ``processor_config.json``
  with the image and video processor configs nested and no ``preprocessor_config.json``;
* ``pixelprune``: a checkpoint saved by our own classes (nested layout, our processor class and a
  saved ``pixelprune`` block, which the export keeps unless options override it).

Oracle: the exported processor (our class loading OUT) gives the same inputs and keep mask as our
class loading BASE, and the card's retention equals the Hub layout's (same image-processor config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixelprune.core.settings import PixelPruneSettings
from pixelprune.hub_configs.exporter import export
from pixelprune.processing.processing_pixelprune import PixelPruneQwen3VLProcessor

FAMILY = "qwen3_vl"
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")


def _layout(kind: str, hub: Path, root: Path) -> Path:
    path = root / kind
    if kind == "hub":
        shutil.copytree(hub, path)
        return path
    shutil.copytree(hub, path, ignore=shutil.ignore_patterns(*PROCESSOR_FILES, "tokenizer*", "chat_template*"))
    if kind == "transformers":
        pytest.importorskip("torchvision", reason="the stock Qwen3VLProcessor's video processor needs torchvision")
        from transformers import Qwen3VLProcessor

        Qwen3VLProcessor.from_pretrained(hub).save_pretrained(path)
    else:
        from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration

        PixelPruneQwen3VLProcessor.from_pretrained(hub, pixelprune_threshold=0.05).save_pretrained(path)
        PixelPruneQwen3VLForConditionalGeneration.from_pretrained(hub).save_pretrained(path)
    assert not (path / "preprocessor_config.json").exists()
    assert "image_processor" in json.loads((path / "processor_config.json").read_text())
    return path


def _inputs(processor, image_path: Path) -> dict:
    image = Image.open(image_path).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Read."}]}]
    return dict(processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                              return_dict=True, return_tensors="pt"))


@pytest.mark.parametrize("kind", ["hub", "transformers", "pixelprune"])
def test_every_processor_layout_exports(kind, tiny_checkpoint, document_png, tmp_path):
    hub = tiny_checkpoint(FAMILY)
    base = _layout(kind, hub, tmp_path)
    reference = export(hub, tmp_path / "reference", sample_images=[document_png], settings={"threshold": 0.05})
    out = tmp_path / "out"
    result = export(base, out, sample_images=[document_png])
    saved = PixelPruneSettings(threshold=0.05) if kind == "pixelprune" else PixelPruneSettings()
    assert result.settings == saved  # a checkpoint's saved settings are kept, never silently reset
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert processor_config["processor_class"] == "PixelPruneQwen3VLProcessor"
    assert PixelPruneSettings.from_dict(processor_config["pixelprune"]) == saved
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_pixelprune.PixelPruneQwen3VLProcessor"}
    # The exported processor is the base's processor plus pruning: same inputs, same keep mask.
    settings = {"pixelprune_threshold": 0.05}
    exported = _inputs(PixelPruneQwen3VLProcessor.from_pretrained(out, **settings), document_png)
    from_base = _inputs(PixelPruneQwen3VLProcessor.from_pretrained(base, **settings), document_png)
    assert exported.keys() == from_base.keys()
    for key, value in from_base.items():
        assert torch.equal(exported[key], value), key
    keep = exported["image_keep_mask"]
    assert 0 < int(keep.sum()) < keep.numel()
    # The card measured the base's own geometry (the tiny processor's min pixels, not the defaults).
    rows = result.retention["threshold 0.05 (max, anchored)" if kind == "pixelprune" else "threshold 0 (lossless)"]
    ref_rows = reference.retention["threshold 0.05 (max, anchored)" if kind == "pixelprune" else "threshold 0 (lossless)"]
    assert [(r.grid_thw, r.kept) for r in rows] == [(r.grid_thw, r.kept) for r in ref_rows]


def test_saved_settings_are_overridden_only_by_options_given(tiny_checkpoint, tmp_path):
    base = _layout("pixelprune", tiny_checkpoint(FAMILY), tmp_path)
    result = export(base, tmp_path / "a", sample_images=[], settings={"metric": "mae"})
    assert result.settings == PixelPruneSettings(threshold=0.05, metric="mae")
    result = export(base, tmp_path / "b", sample_images=[], settings=PixelPruneSettings())
    assert result.settings == PixelPruneSettings()  # a complete settings object is used as given


def test_a_base_without_any_image_processor_is_refused(tiny_checkpoint, tmp_path):
    from pixelprune.hub_configs.exporter import ExportError

    base = tmp_path / "base"
    shutil.copytree(tiny_checkpoint(FAMILY), base, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(ExportError, match=r"has no image processor \(preprocessor_config.json, or an 'image_processor' entry"):
        export(base, tmp_path / "out", sample_images=[])
    assert not (tmp_path / "out").exists()
