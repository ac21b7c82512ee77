"""The selector against a slow per-token reference, known structural answers and its error contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelprune import select_keep_mask, select_tokens
from pixelprune.core.selector import keep_mask_from_indices
from reference_selector import patchify, reference_select

TOKEN = 32  # pixels per merged token side
METHODS = ["pred_2d", "raster", "serpentine"]
METRICS = ["max", "mae", "rmse"]


def token_image(tokens: torch.Tensor) -> torch.Tensor:
    """(gh, gw, 32, 32, 3) token contents -> (gh*32, gw*32, 3) image."""
    gh, gw = tokens.shape[:2]
    return tokens.permute(0, 2, 1, 3, 4).reshape(gh * TOKEN, gw * TOKEN, 3)


def image_from_ids(ids: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Token grid of palette indices -> image, each token a copy of its palette entry."""
    return token_image(palette[ids])


def quantised(x: torch.Tensor) -> torch.Tensor:
    """Snap to 8-bit levels, like decoded images."""
    return (x.clamp(0, 1) * 255).round() / 255


def selected(image: torch.Tensor, **kw) -> list[int]:
    pv, grid = patchify(image)
    return select_tokens(pv, [grid], **kw)[0].tolist()


# --------------------------------------------------------------------------- property tests

@st.composite
def token_grids(draw):
    """Random grids with planted repeats: a small palette, optional per-token noise of a chosen
    amplitude so that thresholds cut through the distances."""
    gh = draw(st.integers(1, 6))
    gw = draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    palette = quantised(torch.rand(k, TOKEN, TOKEN, 3, generator=g))
    # flat palette entries make distances of all metrics comparable to the thresholds below
    flat = draw(st.booleans())
    if flat:
        palette = quantised(torch.rand(k, 1, 1, 3, generator=g).expand(k, TOKEN, TOKEN, 3))
    ids = torch.randint(0, k, (gh, gw), generator=g)
    tokens = palette[ids]
    noise = draw(st.sampled_from([0.0, 2 / 255, 6 / 255, 20 / 255]))
    if noise:
        noisy = torch.rand(gh, gw, generator=g) < 0.5
        delta = (torch.rand(gh, gw, TOKEN, TOKEN, 3, generator=g) * 2 - 1) * noise
        tokens = torch.where(noisy[..., None, None, None], quantised(tokens + delta), tokens)
    return token_image(tokens)


@st.composite
def level_grids(draw):
    """Flat tokens whose per-channel levels are multiples of 1/64: de-normalisation, differences,
    means and square roots are then exact in float32, so distances equal thresholds exactly (ties)
    and similarity is often non-transitive (a ~ b, b ~ c, a !~ c): the cases that separate the
    anchored predictor's branches."""
    gh = draw(st.integers(1, 8))
    gw = draw(st.integers(1, 8))
    grey = draw(st.booleans())
    levels = draw(st.lists(st.integers(0, 6), min_size=gh * gw * (1 if grey else 3),
                           max_size=gh * gw * (1 if grey else 3)))
    v = torch.tensor(levels, dtype=torch.float32).view(gh, gw, -1) / 64
    v = v.expand(gh, gw, 3)
    return token_image(v.view(gh, gw, 1, 1, 3).expand(gh, gw, TOKEN, TOKEN, 3).contiguous())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=level_grids(),
    steps=st.integers(1, 3),
    metric=st.sampled_from(METRICS),
    method=st.sampled_from(METHODS),
    anchored=st.sampled_from([None, True, False]),
)
def test_matches_reference_with_exact_ties(image, steps, metric, method, anchored):
    pv, grid = patchify(image)
    threshold = steps / 64
    got = select_tokens(pv, [grid], threshold=threshold, metric=metric, method=method, anchored=anchored)
    want = reference_select(pv, [grid], threshold=threshold, metric=metric, method=method, anchored=anchored)
    assert got[0].tolist() == want[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=token_grids(),
    threshold=st.sampled_from([0.0, 0.0, 1 / 255, 0.01, 0.03, 0.1, 0.5]),
    metric=st.sampled_from(METRICS),
    method=st.sampled_from(METHODS),
    anchored=st.sampled_from([None, True, False]),
)
def test_matches_reference(image, threshold, metric, method, anchored):
    pv, grid = patchify(image)
    got = select_tokens(pv, [grid], threshold=threshold, metric=metric, method=method, anchored=anchored)
    want = reference_select(pv, [grid], threshold=threshold, metric=metric, method=method, anchored=anchored)
    assert got[0].tolist() == want[0]


@settings(max_examples=40, deadline=None)
@given(image=token_grids(), method=st.sampled_from(METHODS), metric=st.sampled_from(METRICS))
def test_threshold_zero_anchored_equals_sliding(image, method, metric):
    a = selected(image, method=method, metric=metric, threshold=0.0, anchored=True)
    s = selected(image, method=method, metric=metric, threshold=0.0, anchored=False)
    assert a == s


@settings(max_examples=25, deadline=None)
@given(images=st.lists(token_grids(), min_size=2, max_size=4), threshold=st.sampled_from([0.0, 0.03]))
def test_images_are_independent(images, threshold):
    parts = [patchify(im) for im in images]
    pv = torch.cat([p for p, _ in parts])
    grids = [g for _, g in parts]
    together = select_tokens(pv, grids, threshold=threshold)
    alone = [select_tokens(p, [g], threshold=threshold)[0] for p, g in parts]
    assert [t.tolist() for t in together] == [a.tolist() for a in alone]
    mask = select_keep_mask(pv, grids, threshold=threshold)
    sizes = [g[1] * g[2] // 4 for g in grids]
    assert torch.equal(mask, keep_mask_from_indices(together, sizes))


def test_anchored_differs_from_sliding_on_a_gradient():
    """A slow horizontal ramp: sliding compares neighbours (all within tau) and prunes everything
    after the first column; anchored bounds the drift and must keep some tokens."""
    gw = 12
    levels = torch.arange(gw, dtype=torch.float32) * (3 / 255)
    tokens = levels.view(1, gw, 1, 1, 1).expand(2, gw, TOKEN, TOKEN, 3)
    image = token_image(tokens.contiguous())
    tau = 4 / 255
    sliding = selected(image, threshold=tau, anchored=False)
    anchored = selected(image, threshold=tau, anchored=True)
    assert sliding == [0]
    assert anchored == [0, 2, 4, 6, 8, 10]  # each kept token stands in for itself and one more


# --------------------------------------------------------------------------- structural cases

def test_constant_image_keeps_one_token():
    image = torch.full((224, 320, 3), 0.7)
    for method in METHODS:
        assert selected(image, method=method) == [0]


def test_noise_keeps_all():
    image = torch.rand(224, 288, 3, generator=torch.Generator().manual_seed(0))
    n = (224 // TOKEN) * (288 // TOKEN)
    for method in METHODS:
        for threshold in (0.0, 0.01):
            assert selected(image, method=method, threshold=threshold) == list(range(n))


def stripes(gh: int, gw: int, vertical: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    n = gw if vertical else gh
    colours = torch.rand(n, 3, generator=g)
    colours[1:] = torch.where((colours[1:] - colours[:-1]).abs().amax(-1, keepdim=True) < 0.05,
                              1 - colours[1:], colours[1:])
    ids = torch.arange(gw).expand(gh, gw) if vertical else torch.arange(gh)[:, None].expand(gh, gw)
    palette = colours.view(n, 1, 1, 3).expand(n, TOKEN, TOKEN, 3)
    return image_from_ids(ids, palette)


def test_vertical_stripes():
    gh, gw = 5, 7
    image = stripes(gh, gw, vertical=True)
    assert selected(image, method="pred_2d") == list(range(gw))  # the first row only
    assert selected(image, method="raster") == list(range(gh * gw))


def test_horizontal_stripes():
    gh, gw = 6, 5
    image = stripes(gh, gw, vertical=False)
    first_col = [r * gw for r in range(gh)]
    assert selected(image, method="pred_2d") == first_col
    assert selected(image, method="raster") == first_col
    # serpentine: odd rows start at the right end
    assert selected(image, method="serpentine") == [r * gw + (0 if r % 2 == 0 else gw - 1) for r in range(gh)]


def test_rectangle_inside_background_keeps_four():
    gh, gw = 7, 9
    ids = torch.zeros(gh, gw, dtype=torch.long)
    ids[2:5, 3:7] = 1
    palette = torch.tensor([[1.0, 1.0, 1.0], [0.1, 0.2, 0.3]]).view(2, 1, 1, 3).expand(2, TOKEN, TOKEN, 3)
    image = image_from_ids(ids, palette)
    assert selected(image, method="pred_2d") == [0, 2 * gw + 3, 2 * gw + 7, 5 * gw + 3]


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1)])
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_grids(shape, method):
    gh, gw = shape
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 2, (gh, gw), generator=g)
    palette = torch.rand(2, 1, 1, 3, generator=g).expand(2, TOKEN, TOKEN, 3)
    image = image_from_ids(ids, palette)
    pv, grid = patchify(image)
    for threshold in (0.0, 0.2):
        got = select_tokens(pv, [grid], method=method, threshold=threshold)[0].tolist()
        assert got == reference_select(pv, [grid], method=method, threshold=threshold)[0]
        assert got[0] == 0


def test_bf16_input_does_not_merge_distinct_pixels():
    """Normalised values one bf16 step apart must stay distinct after de-normalisation: in bf16
    arithmetic x * std + mean rounds both to the same value; in float32 it does not."""
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    pv = torch.full((8, 1536), -0.99609375, dtype=torch.bfloat16)
    pv[4:8] = -0.9921875  # one bf16 step up: the second token
    s, m = torch.tensor(std, dtype=torch.bfloat16), torch.tensor(mean, dtype=torch.bfloat16)
    assert torch.equal(pv[0, :3] * s + m, pv[4, :3] * s + m)  # what bf16 arithmetic would do
    grid = [[1, 2, 4]]
    assert select_tokens(pv, grid, image_mean=mean, image_std=std)[0].tolist() == [0, 1]
    assert select_tokens(pv.float(), grid, image_mean=mean, image_std=std)[0].tolist() == [0, 1]


def test_other_normalisation_is_undone():
    """Thresholds are in [0, 1] pixel units whatever the processor's mean/std."""
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    tokens = torch.stack([torch.full((TOKEN, TOKEN, 3), 0.5), torch.full((TOKEN, TOKEN, 3), 0.5 + 5 / 255)])
    image = token_image(tokens.unsqueeze(0))
    pv, grid = patchify(image, mean, std)
    kw = dict(image_mean=mean, image_std=std)
    assert select_tokens(pv, [grid], threshold=4 / 255, **kw)[0].tolist() == [0, 1]
    assert select_tokens(pv, [grid], threshold=6 / 255, **kw)[0].tolist() == [0]


def test_exact_alias():
    image = stripes(3, 4, vertical=True)
    assert selected(image, metric="exact") == selected(image, metric="max", threshold=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    image = stripes(6, 8, vertical=True)
    pv, grid = patchify(image)
    for threshold in (0.0, 0.05):
        cpu = select_tokens(pv, [grid], threshold=threshold)[0]
        gpu = select_tokens(pv.cuda(), [grid], threshold=threshold)[0]
        assert gpu.device.type == "cuda" and gpu.cpu().tolist() == cpu.tolist()


# --------------------------------------------------------------------------- errors

@pytest.fixture
def valid():
    return patchify(torch.rand(64, 96, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(threshold=-0.1), "threshold=-0.1"),
        (dict(threshold=float("nan")), "threshold=nan"),
        (dict(metric="l2"), "metric 'l2'"),
        (dict(method="zigzag"), "method 'zigzag'"),
        (dict(metric="exact", threshold=0.1), "exact"),
    ],
)
def test_invalid_settings(valid, kwargs, message):
    pv, grid = valid
    with pytest.raises(ValueError, match=message):
        select_tokens(pv, [grid], **kwargs)


def test_rows_must_match_grid(valid):
    pv, grid = valid
    with pytest.raises(ValueError, match="rows"):
        select_tokens(pv[:-4], [grid])


def test_row_width_must_match(valid):
    pv, grid = valid
    with pytest.raises(ValueError, match="C\\*T\\*P\\*P"):
        select_tokens(pv[:, :-1], [grid])


def test_grid_must_be_divisible_by_merge(valid):
    pv, _ = valid
    with pytest.raises(ValueError, match="not divisible by merge_size"):
        select_tokens(pv, [[1, 3, 8]])


def test_video_is_refused():
    pv, grid = patchify(torch.rand(32, 32, 3))
    with pytest.raises(ValueError, match="video"):
        select_tokens(torch.cat([pv, pv]), [[2, grid[1], grid[2]]])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels(valid, bad):
    pv, grid = valid
    pv = pv.clone()
    pv[5, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        select_tokens(pv, [grid])
