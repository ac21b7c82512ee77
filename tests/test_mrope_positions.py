"""The shared M-RoPE rule (``core/mrope_positions.py``, used by the transformers classes and the
vLLM plugin) against the stock transformers ``get_rope_index`` of Qwen3-VL and Qwen3.5.

Oracles: without pruning, positions and ``rope_deltas`` equal the stock ones exactly (images and
multi-frame videos, batches with left padding); with pruning, every kept image token and every
text token has its stock (unpruned) position, and decoding continues at the stock next position.
"""

from __future__ import annotations

import random

import pytest
import torch

from pixelprune.core.mrope_positions import GridSpan, pruned_mrope_positions
from pixelprune.modeling.rope_index import pruned_rope_index

MERGE = 2
STOCK_MODELS = {
    "qwen3_vl": ("transformers.models.qwen3_vl.modeling_qwen3_vl", "Qwen3VLModel"),
    "qwen3_5": ("transformers.models.qwen3_5.modeling_qwen3_5", "Qwen3_5Model"),
}


@pytest.fixture(scope="module", params=sorted(STOCK_MODELS))
def stock_model(request):
    """The stock inner model of a tiny config, built on the meta device (no weights needed)."""
    import importlib

    from tiny_models import build_tiny_config, build_tiny_tokenizer

    module, name = STOCK_MODELS[request.param]
    config = build_tiny_config(request.param, build_tiny_tokenizer(request.param))
    assert config.vision_config.spatial_merge_size == MERGE
    with torch.device("meta"):
        return getattr(importlib.import_module(module), name)(config)


def _random_sample(rng: random.Random) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """Token types (0 text, 1 image, 2 video) of a prompt with images and videos, and the patch grids.

    Videos are laid out as the Qwen3-VL / Qwen3.5 chat templates do: one placeholder run per frame,
    each after its own timestamp text.
    """
    types: list[int] = [0] * rng.randint(1, 4)
    images, videos = [], []
    for _ in range(rng.randint(1, 4)):
        h, w = rng.randint(1, 5), rng.randint(1, 5)
        if rng.random() < 0.6:
            images.append([1, MERGE * h, MERGE * w])
            types += [1] * (h * w)
        else:
            t = rng.randint(1, 3)
            videos.append([t, MERGE * h, MERGE * w])
            for frame in range(t):
                types += [2] * (h * w) + ([0] * rng.randint(1, 3) if frame < t - 1 else [])
        types += [0] * rng.randint(0 if rng.random() < 0.3 else 1, 4)  # sometimes nothing after the last
    if not images:  # every sample holds an image (the keep mask describes images)
        images.append([1, MERGE, 2 * MERGE])
        types += [1] * 2
    return types, images, videos


def _batch(samples: list[tuple[list[int], list[list[int]], list[list[int]]]]):
    """Left-padded ``(mm_token_type_ids, attention_mask, image_grid_thw, video_grid_thw)``."""
    length = max(len(types) for types, _, _ in samples)
    token_types = torch.zeros(len(samples), length, dtype=torch.long)
    attention = torch.zeros(len(samples), length, dtype=torch.long)
    for i, (types, _, _) in enumerate(samples):
        token_types[i, length - len(types):] = torch.tensor(types)
        attention[i, length - len(types):] = 1
    images = [g for _, imgs, _ in samples for g in imgs]
    videos = [g for _, _, vids in samples for g in vids]
    return (token_types, attention, torch.tensor(images, dtype=torch.long),
            torch.tensor(videos, dtype=torch.long) if videos else None)


def _stock(model, token_types, attention, image_grid, video_grid):
    input_ids = torch.zeros_like(token_types)  # get_rope_index reads only the types and the mask
    return model.get_rope_index(input_ids, token_types, image_grid_thw=image_grid,
                                video_grid_thw=None if video_grid is None else video_grid.clone(),
                                attention_mask=attention)


@pytest.mark.parametrize("seed", range(6))
def test_unpruned_positions_equal_stock_get_rope_index(stock_model, seed):
    rng = random.Random(seed)
    samples = [_random_sample(rng) for _ in range(3)]
    token_types, attention, image_grid, video_grid = _batch(samples)
    ref, ref_deltas = _stock(stock_model, token_types, attention, image_grid, video_grid)
    keep_all = torch.ones(int(image_grid.prod(-1).sum()) // MERGE**2, dtype=torch.bool)
    ours, deltas = pruned_rope_index(stock_model, torch.zeros_like(token_types), token_types, image_grid,
                                     None if video_grid is None else video_grid.clone(), attention, keep_all)
    assert torch.equal(ours, ref)
    assert torch.equal(deltas, ref_deltas.to(deltas.dtype))


@pytest.mark.parametrize("seed", range(6))
def test_pruned_positions_are_the_stock_ones_at_kept_tokens(stock_model, seed):
    """ALGORITHM.md 5: kept image tokens and all text/video tokens keep their stock positions."""
    rng = random.Random(100 + seed)
    gen = torch.Generator().manual_seed(seed)
    samples = [_random_sample(rng) for _ in range(2)]
    pruned_samples, keep_masks, token_keeps = [], [], []
    for types, images, videos in samples:
        image_masks = []
        for _, h, w in images:
            mask = torch.rand(h * w // MERGE**2, generator=gen) < 0.5
            mask[0] = True  # the selector always keeps an image's first token
            image_masks.append(mask)
        keep_masks += image_masks
        # Per prompt token: is it kept (text and video always; images by their mask).
        flat = iter(torch.cat(image_masks).tolist())
        token_keep = [next(flat) if t == 1 else True for t in types]
        token_keeps.append(torch.tensor(token_keep))
        pruned_samples.append(([t for t, k in zip(types, token_keep) if k], images, videos))

    unbatched = []
    for i, (types, images, videos) in enumerate(samples):
        # Unbatched, no padding: the pure function on spans, and pruned_rope_index, vs stock.
        token_types, attention, image_grid, video_grid = _batch([(types, images, videos)])
        ref, ref_delta = _stock(stock_model, token_types, attention, image_grid, video_grid)
        p_types, _, _ = pruned_samples[i]
        p_token_types, p_attention, _, _ = _batch([pruned_samples[i]])
        keep = torch.cat([keep_masks[j] for j in range(sum(len(s[1]) for s in samples[:i]),
                                                       sum(len(s[1]) for s in samples[:i + 1]))])
        ours, delta = pruned_rope_index(stock_model, torch.zeros_like(p_token_types), p_token_types, image_grid,
                                        None if video_grid is None else video_grid.clone(), p_attention, keep)
        assert torch.equal(ours[:, 0], ref[:, 0][:, token_keeps[i]])
        assert len(p_types) + int(delta) == len(types) + int(ref_delta)  # decoding resumes unpruned
        unbatched.append((ours[:, 0], int(delta)))

    # Batched with left padding: each row equals its unbatched result.
    p_token_types, p_attention, image_grid, video_grid = _batch(pruned_samples)
    batched, deltas = pruned_rope_index(stock_model, torch.zeros_like(p_token_types), p_token_types, image_grid,
                                        video_grid, p_attention, torch.cat(keep_masks))
    for i, (positions, delta) in enumerate(unbatched):
        valid = p_attention[i].bool()
        assert torch.equal(batched[:, i, valid], positions) and int(deltas[i]) == delta
        assert not batched[:, i, ~valid].any()  # zeros at padding, as stock


def test_spans_reproduce_stock_and_reject_overlaps(stock_model):
    """The pure function on hand-built spans (how the vLLM plugin calls it) equals stock."""
    types = [0] * 3 + [1] * 6 + [0] * 2 + [2] * 4 + [0] * 2 + [2] * 4 + [0]
    token_types, attention, image_grid, video_grid = _batch(
        [(types, [[1, 2 * MERGE, 3 * MERGE]], [[2, 2 * MERGE, 2 * MERGE]])]
    )
    ref, ref_delta = _stock(stock_model, token_types, attention, image_grid, video_grid)
    ours, delta = pruned_mrope_positions(len(types), [GridSpan(3, 2, 3), GridSpan(11, 2, 2), GridSpan(17, 2, 2)])
    assert torch.equal(ours, ref[:, 0]) and delta == int(ref_delta)
    with pytest.raises(ValueError, match="overlaps"):
        pruned_mrope_positions(10, [GridSpan(0, 2, 2), GridSpan(2, 1, 1)])
    with pytest.raises(ValueError, match="prompt end"):
        pruned_mrope_positions(5, [GridSpan(2, 2, 2)])


def test_pruned_rope_index_rejects_a_run_that_does_not_hold_the_kept_count(stock_model):
    token_types, attention, image_grid, _ = _batch([([0] + [1] * 4 + [0], [[1, 2 * MERGE, 2 * MERGE]], [])])
    keep = torch.tensor([True, False, True, True])
    with pytest.raises(ValueError, match="has 4 placeholder tokens but `image_keep_mask` keeps 3"):
        pruned_rope_index(stock_model, token_types, token_types, image_grid, None, attention, keep)
