"""The keep-mask contract (core/keep_mask.py): validation up front, the KeepMask value against a
slow per-image reference, and one validation per forward in the transformers models."""

from __future__ import annotations

import pytest
import torch

from pixelprune.core import keep_mask as km
from pixelprune.core.keep_mask import KEEP_MASK_KEY, KeepMask, validate_keep_mask

GRIDS = torch.tensor([[1, 4, 6], [1, 2, 2], [2, 4, 4]])  # 6, 1 and 2 x 4 merged tokens
TOTALS = [6, 1, 8]


def random_mask(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(sum(TOTALS), generator=g) < 0.5
    starts = [0, 6, 7]
    mask[starts] = True  # every image keeps a token
    return mask


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(15, dtype=torch.bool, device="meta"), "on the meta device"),
        (torch.ones(15, dtype=torch.int64, device="meta"), "on the meta device"),
        (torch.ones(15, dtype=torch.float32), r"bool tensor \(or integers 0/1\), got dtype torch.float32"),
        (torch.ones(15, dtype=torch.float32, device="meta"), r"got dtype torch.float32"),
        (torch.ones(15, dtype=torch.complex64), r"got dtype torch.complex64"),
        (torch.full((15,), 2), r"got dtype torch.int64"),
        (torch.ones(14, dtype=torch.bool), "has 14 entries but `image_grid_thw` describes 15"),
        (torch.ones(1, 15, dtype=torch.bool), "must be 1-D"),
        ([True] * 15, "must be a torch.Tensor"),
    ],
)
def test_invalid_masks_raise_the_documented_error(mask, message):
    with pytest.raises(ValueError, match=message):
        validate_keep_mask(mask, GRIDS, 2)
    with pytest.raises(ValueError, match=message):
        KeepMask.build(mask, GRIDS, 2)


def test_an_image_without_kept_tokens_is_refused():
    mask = torch.ones(15, dtype=torch.bool)
    mask[6] = False
    with pytest.raises(ValueError, match=r"keeps no token of image\(s\) \[1\]"):
        KeepMask.build(mask, GRIDS, 2)
    with pytest.raises(ValueError, match="without `image_grid_thw`"):
        KeepMask.build(mask, None, 2)


@pytest.mark.parametrize("seed", range(5))
def test_keep_mask_value_matches_a_per_image_reference(seed):
    mask = random_mask(seed)
    keep = KeepMask.build(mask.to(torch.uint8), GRIDS, 2)  # integers 0/1 are accepted
    assert keep.mask.dtype == torch.bool and keep.mask.device.type == "cpu"
    assert torch.equal(keep.mask, mask)
    assert keep.grids == tuple(tuple(g) for g in GRIDS.tolist()) and keep.totals == tuple(TOTALS)
    per_image = torch.split(mask, TOTALS)
    assert keep.kept == tuple(int(m.sum()) for m in per_image)
    assert keep.num_kept == int(mask.sum()) and not keep.all_kept
    for got, m in zip(keep.kept_indices, per_image):
        assert got.tolist() == [i for i, v in enumerate(m.tolist()) if v]
    patch_rows = [4 * i + j for i, v in enumerate(mask.tolist()) if v for j in range(4)]
    assert keep.patch_indices.tolist() == patch_rows
    # one attention segment per frame (the video grid has 2 frames of 4 tokens)
    frames = [per_image[0], per_image[1], per_image[2][:4], per_image[2][4:]]
    lengths = [4 * int(f.sum()) for f in frames]
    assert keep.kept_per_frame().tolist() == [int(f.sum()) for f in frames]
    assert keep.cu_seqlens().tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert keep.cu_seqlens().dtype == torch.int32
    assert torch.equal(km.kept_cu_seqlens(mask, GRIDS, 2), keep.cu_seqlens())
    assert km.kept_tokens_per_image(mask, GRIDS, 2) == list(keep.kept)
    assert KeepMask.build(torch.ones(15, dtype=torch.bool), GRIDS, 2).all_kept


def test_a_built_value_is_passed_through_and_checked_against_its_use():
    keep = KeepMask.build(random_mask(0), GRIDS, 2)
    assert KeepMask.of(keep, GRIDS, 2) is keep
    with pytest.raises(ValueError, match="built for 3 image"):
        KeepMask.of(keep, GRIDS[:2], 2)
    with pytest.raises(ValueError, match="merge_size=2"):
        KeepMask.of(keep, GRIDS, 4)
    with pytest.raises(AttributeError):
        keep.kept = (1, 1, 1)  # frozen


def test_one_name():
    from pixelprune.processing import processing_pixelprune
    from pixelprune.modeling.pixelprune_mixin import keep_mask_forward
    import inspect

    assert processing_pixelprune.KEEP_MASK_KEY is KEEP_MASK_KEY == "image_keep_mask"

    def stock(self, input_ids=None, **kwargs):
        return None

    parameters = inspect.signature(keep_mask_forward(stock)).parameters
    assert KEEP_MASK_KEY in parameters and km.VIDEO_KEEP_MASK_KEY in parameters
    assert processing_pixelprune.VIDEO_KEEP_MASK_KEY is km.VIDEO_KEEP_MASK_KEY == "video_keep_mask"


def test_the_model_validates_the_mask_once_per_forward(monkeypatch, tiny_checkpoint):
    """forward -> get_image_features -> encode_kept_patches -> get_rope_index share one value."""
    pytest.importorskip("transformers")
    from images import word_page_image
    from model_oracles import build_inputs
    from tiny_models import build_tiny_tokenizer

    from pixelprune import modeling

    tokenizer = build_tiny_tokenizer("qwen3_vl")
    model = modeling.PixelPruneQwen3VLForConditionalGeneration.from_pretrained(
        tiny_checkpoint("qwen3_vl")
    ).eval()
    inputs = build_inputs(tokenizer, [["See ", word_page_image(224, 160, seed=0), " and ", word_page_image(160, 128, seed=1)]])
    assert not bool(inputs[KEEP_MASK_KEY].all())
    builds = []
    real = KeepMask.build.__func__

    def counting(cls, *args, **kwargs):
        builds.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(KeepMask, "build", classmethod(counting))
    with torch.no_grad():
        model(**inputs)
    assert len(builds) == 1


@pytest.mark.parametrize("seed", range(3))
def test_frame_kept_indices_are_each_slices_kept_cells(seed):
    """Per temporal slice of a grid, the kept raster indices within the slice (a video slice's
    M-RoPE span), against a per-slice reference; their sizes are :meth:`KeepMask.kept_per_frame`."""
    grids = torch.tensor([[3, 4, 6], [2, 2, 4]])  # 3 slices of 6 tokens, 2 slices of 2
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3 * 6 + 2 * 2, generator=g) < 0.5
    mask[[0, 6, 12, 18, 20]] = True  # every slice keeps its first token
    keep = KeepMask.build(mask, grids, 2, name=km.VIDEO_KEEP_MASK_KEY)
    slices = [mask[0:6], mask[6:12], mask[12:18], mask[18:20], mask[20:22]]
    got = [*keep.frame_kept_indices(0), *keep.frame_kept_indices(1)]
    assert [t.tolist() for t in got] == [torch.nonzero(s).flatten().tolist() for s in slices]
    assert [t.numel() for t in got] == keep.kept_per_frame().tolist()
