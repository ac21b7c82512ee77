"""One geometry record (PatchGeometry) and one preprocessor-config parser (PreprocessorConfig)."""

from __future__ import annotations

import pytest
import torch

from pixelprune.core.selector import PatchGeometry, PreprocessorConfig, select_masks
from pixelprune.core.settings import PixelPruneSettings
from pixelprune.core.token_distances import GridSpec
from pixelprune.processing.image_preprocessing import ImagePreprocessConfig
from tiny_models import image_processor_dict


def test_object_and_dict_parse_alike_and_call_overrides_win():
    transformers = pytest.importorskip("transformers")
    config = {k: v for k, v in image_processor_dict().items() if k != "processor_class"}
    processor = transformers.Qwen2VLImageProcessorPil(**config)
    from_dict = PreprocessorConfig.from_dict(config)
    assert PreprocessorConfig.from_image_processor(processor) == from_dict
    assert from_dict.min_pixels == config["size"]["shortest_edge"] and from_dict.max_pixels == config["size"]["longest_edge"]
    geometry = PatchGeometry.from_image_processor(processor)
    assert geometry == PatchGeometry.from_preprocessor_config(config)
    assert isinstance(geometry, GridSpec) and geometry.channels == 3
    # per-call images_kwargs: vLLM hands raw 0..255 values (do_rescale=False, do_normalize=False)
    raw = PatchGeometry.from_image_processor(processor, {"do_rescale": False, "do_normalize": False, "merge_size": 4})
    assert raw.merge_size == 4 and raw.image_mean == (0.0,) * 3 and raw.image_std == (1 / 255,) * 3


def test_the_clis_preprocessing_uses_the_same_parser():
    cli = ImagePreprocessConfig(min_pixels=1024, max_pixels=4096)
    assert cli.geometry == PatchGeometry(merge_size=2, temporal_patch_size=2, patch_size=16)
    assert PreprocessorConfig.from_dict({"size": {"shortest_edge": 1024, "longest_edge": 4096}}).geometry == cli.geometry


def test_geometry_validates_itself():
    with pytest.raises(ValueError, match="must all be >= 1"):
        PatchGeometry(merge_size=0)
    with pytest.raises(ValueError, match="image_mean has 3 channels but image_std has 1"):
        PatchGeometry(image_std=(0.5,))


def test_the_entry_point_times_each_image():
    seconds: list[float] = []
    masks = select_masks(torch.zeros(20, 1536), [[1, 2, 2], [1, 4, 4]], PatchGeometry(), PixelPruneSettings(),
                         seconds=seconds)
    assert [m.tolist() for m in masks] == [[True], [True, False, False, False]]
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)
