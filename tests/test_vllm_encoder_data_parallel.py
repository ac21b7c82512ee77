"""``--mm-encoder-tp-mode data`` sharding of kept patches, without engines.

Oracles: a slow per-image reference (each image's kept patches encoded alone, in image order)
against the sharded encoder simulated rank by rank (the rank lookup and the all-gather are
replaced by a loop over ranks and a concatenation); the greedy balance of vLLM's helper applied to
kept, not full-grid, patch counts. The engine-level check is in test_vllm_parallel.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from pixelprune.core.keep_mask import KeepMask  # noqa: E402
from pixelprune.vllm_model import encoder_data_parallel as dp  # noqa: E402
from pixelprune.vllm_model.encoder_data_parallel import DataParallelPlan, rank_inputs  # noqa: E402

MERGE = 2
CHANNELS = 3


class MergingEncoder(torch.nn.Module):
    """Stand-in ViT: each kept token's feature is its ``MERGE**2`` patch rows side by side; it
    checks that the metadata describes exactly the rows and grids it is given."""

    spatial_merge_size = MERGE
    out_hidden_size = MERGE**2 * CHANNELS
    dtype = torch.float32
    device = torch.device("cpu")

    def forward(self, x, grid_thw, *, encoder_metadata):
        assert x.shape[0] == encoder_metadata["keep"].num_kept * MERGE**2
        assert torch.equal(torch.as_tensor(grid_thw), encoder_metadata["grid"])
        return x.reshape(-1, MERGE**2 * CHANNELS)


def _metadata(visual, grid_thw, keep):
    return {"grid": grid_thw, "keep": keep}


def _images(seed: int, grids: list[tuple[int, int]]):
    """Pixel rows (each row holds its global patch index), grids and a random keep mask (first
    token always kept)."""
    generator = torch.Generator().manual_seed(seed)
    grid_thw = torch.tensor([[1, h, w] for h, w in grids])
    patches = int(grid_thw.prod(-1).sum())
    pixel_values = torch.arange(patches, dtype=torch.float32)[:, None].repeat(1, CHANNELS)
    masks = []
    for h, w in grids:
        mask = torch.rand(h * w // MERGE**2, generator=generator) < 0.5
        mask[0] = True
        masks.append(mask)
    return pixel_values, KeepMask.build(torch.cat(masks), grid_thw, MERGE)


def _reference(visual, pixel_values, keep):
    """Each image encoded alone, in image order: its own kept patch rows (slow walk over its
    tokens), its own grid and mask."""
    out, start = [], 0
    for i, (mask, grid) in enumerate(zip(keep.per_image, keep.grids)):
        rows = [start + token * MERGE**2 + j for token in range(mask.numel()) if mask[token] for j in range(MERGE**2)]
        alone = KeepMask.build(mask, torch.tensor([grid]), MERGE)
        out.append(visual(pixel_values[rows], alone.grid_thw, encoder_metadata=_metadata(visual, alone.grid_thw, alone)))
        start += mask.numel() * MERGE**2
    return out


def _simulate(monkeypatch, world_size, pixel_values, keep):
    """Run the sharded encoder on every rank; the all-gather concatenates the ranks' outputs."""
    visual = MergingEncoder()
    sent = []
    monkeypatch.setattr(dp, "get_tensor_model_parallel_world_size", lambda: world_size)
    monkeypatch.setattr(dp, "tensor_model_parallel_all_gather", lambda t, dim: sent.append(t) or t.repeat(world_size, 1))
    for rank in range(world_size):
        monkeypatch.setattr(dp, "get_tensor_model_parallel_rank", lambda rank=rank: rank)
        dp.encode_kept_patches_data_parallel(visual, pixel_values, keep, _metadata)
    assert len({t.shape for t in sent}) == 1  # equal shapes for the all-gather
    plan = DataParallelPlan.balance(list(keep.kept), world_size, MERGE)
    return plan, plan.reassemble(torch.cat(sent)), _reference(visual, pixel_values, keep)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_sharded_features_come_back_in_image_order(monkeypatch, world_size, seed):
    pixel_values, keep = _images(seed, [(8, 12), (4, 4), (10, 6), (6, 8), (2, 2)])
    plan, sharded, reference = _simulate(monkeypatch, world_size, pixel_values, keep)
    assert len(sharded) == len(reference)
    for got, want in zip(sharded, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # the image's own kept patches
    if world_size > 1:
        assert len(set(plan.order[: plan.counts[0]])) < len(reference)  # images really were split


def test_ranks_without_images_pad_and_contribute_nothing(monkeypatch):
    pixel_values, keep = _images(0, [(8, 8), (4, 6)])
    plan, sharded, reference = _simulate(monkeypatch, 3, pixel_values, keep)
    assert [plan.rank_tokens(r) for r in range(3)].count(0) == 1
    for got, want in zip(sharded, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_rank_inputs_are_the_kept_patches_with_full_grids():
    pixel_values, keep = _images(1, [(4, 4), (6, 4), (2, 4)])
    rows, local = rank_inputs(pixel_values, keep, [2, 0])
    starts = [0, 16, 40]
    expected = []
    for i in [2, 0]:  # slow reference: walk each image's tokens in raster order of merge windows
        for token, kept in enumerate(keep.per_image[i].tolist()):
            if kept:
                expected += [starts[i] + token * MERGE**2 + j for j in range(MERGE**2)]
    assert rows[:, 0].long().tolist() == expected
    assert local.grids == (keep.grids[2], keep.grids[0])  # full grids: full-grid positions
    assert torch.equal(local.mask, torch.cat([keep.per_image[2], keep.per_image[0]]))
    assert local.kept == (keep.kept[2], keep.kept[0]) and local.totals == (keep.totals[2], keep.totals[0])


def test_balance_uses_kept_patches_not_full_grids():
    # Full grids would give image 0 (40 tokens, 2 kept) a rank of its own and the other three
    # to the second rank (30 kept tokens against 2).
    plan = DataParallelPlan.balance([2, 10, 10, 10], world_size=2, merge_size=MERGE)
    loads = sorted(plan.rank_tokens(r) for r in range(2))
    assert loads == [12, 20]
    assert sorted(plan.order) == [0, 1, 2, 3] and sum(plan.counts) == 4


@pytest.mark.parametrize("seed", range(20))
def test_balance_is_the_greedy_largest_first_assignment(seed):
    generator = torch.Generator().manual_seed(seed)
    kept = (torch.randint(1, 200, (int(torch.randint(1, 9, (1,), generator=generator)),), generator=generator)).tolist()
    world_size = int(torch.randint(1, 5, (1,), generator=generator))
    plan = DataParallelPlan.balance(kept, world_size, MERGE)
    loads = [0] * world_size  # slow reference: largest image first to the least-loaded rank
    for k in sorted(kept, reverse=True):
        loads[loads.index(min(loads))] += k
    assert sorted(plan.rank_tokens(r) for r in range(world_size)) == sorted(loads)
    assert sorted(plan.order) == list(range(len(kept)))


def test_a_short_gather_is_an_error():
    plan = DataParallelPlan.balance([3, 5], world_size=2, merge_size=MERGE)
    with pytest.raises(RuntimeError, match="gathered encoder output has 9 rows, expected 10"):
        plan.reassemble(torch.zeros(9, 4))
