"""The selector's fast paths against the naive reference where they are easiest to get wrong.

* Decision windows (``core/token_distances.py``): neighbour distances are computed in the
  normalised domain and only pairs within a rounding bound of the threshold are recomputed with
  the spec's formula. Thresholds here are set to *actual* spec distances of the image (exact
  ties), under per-channel and extreme normalisations, so pairs land in those windows.
* Threshold 0 follows the spec's float32 distance, not bit equality.
* Chunk seams: the pass runs in chunks of tokens; tiny chunks put a seam between every pair.
* Anchored pred_2d verifies candidate states in whole-grid passes and falls back to a wavefront;
  every number of passes must give the sequential result.
"""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelprune import select_tokens
from pixelprune.core import selector, token_distances
from reference_selector import descriptor_grid, dist, patchify, reference_select
from test_selector import METHODS, METRICS, TOKEN, level_grids, token_grids, token_image

IMAGENET = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
NORMALISATIONS = [
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # Qwen3-VL / Qwen3.5: one std, channels reduced together
    IMAGENET,  # per-channel std
    ((-40.0, 3.0, 0.25), (250.0, 0.01, 3.0)),  # large and tiny scales: wide rounding bounds
]


def neighbour_distance_values(pv, grid, mean, std, metric):
    """Every spec distance between horizontally or vertically neighbouring tokens (reference code)."""
    desc = descriptor_grid(pv, grid[1], grid[2], mean, std)
    gh, gw = len(desc), len(desc[0])
    out = []
    for r in range(gh):
        for c in range(gw):
            if c:
                out.append(dist(desc[r][c], desc[r][c - 1], metric))
            if r:
                out.append(dist(desc[r][c], desc[r - 1][c], metric))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=st.one_of(token_grids(), level_grids()),
    norm=st.sampled_from(NORMALISATIONS),
    metric=st.sampled_from(METRICS),
    method=st.sampled_from(METHODS),
    anchored=st.sampled_from([None, True, False]),
    pick=st.floats(0, 1),
)
def test_thresholds_equal_to_actual_distances(image, norm, metric, method, anchored, pick):
    """tau is one of the image's own neighbour distances, computed by the reference: the pairs at
    exactly that distance are ties that only the spec's float32 formula decides."""
    mean, std = norm
    pv, grid = patchify(image, mean, std)
    values = sorted(v for v in neighbour_distance_values(pv, grid, mean, std, metric) if v > 0)
    if not values:
        return
    tau = values[min(len(values) - 1, int(pick * len(values)))]
    kw = dict(threshold=tau, metric=metric, method=method, anchored=anchored, image_mean=mean, image_std=std)
    assert select_tokens(pv, [grid], **kw)[0].tolist() == reference_select(pv, [grid], **kw)[0]


def test_ties_land_in_the_rounding_window(monkeypatch):
    """The test above must reach the recompute path: with IMAGENET normalisation the fast value of
    a pair at distance exactly tau differs from the spec's by rounding, and is recomputed."""
    mean, std = IMAGENET
    tokens = torch.stack([torch.full((TOKEN, TOKEN, 3), 0.2), torch.full((TOKEN, TOKEN, 3), 0.2 + 7 / 255)])
    pv, grid = patchify(tokens.permute(1, 0, 2, 3).reshape(TOKEN, 2 * TOKEN, 3), mean, std)
    tau = neighbour_distance_values(pv, grid, mean, std, "max")[0]
    calls = []
    real = token_distances.gather_distance

    def spy(src, i, j, metric):
        calls.append(len(i))
        return real(src, i, j, metric)

    monkeypatch.setattr(token_distances, "gather_distance", spy)
    assert select_tokens(pv, [grid], threshold=tau, image_mean=mean, image_std=std)[0].tolist() == [0]
    assert select_tokens(pv, [grid], threshold=tau * (1 - 1e-6), image_mean=mean, image_std=std,
                         anchored=False)[0].tolist() == [0, 1]
    assert calls, "no pair was recomputed: the tie was decided by the approximation"


def two_tokens(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """pixel_values of a 1 x 2 token image whose normalised values are ``a`` and ``b`` (scalars)."""
    pv = torch.empty(8, 1536)
    pv[:4], pv[4:] = a, b
    return pv


def test_threshold_zero_prunes_values_that_denormalise_equal():
    """Normalised 0 and 1e-9 are different floats, but 0.5 * x + 0.5 is 0.5 for both in float32:
    the spec's distance is 0, so the second token is pruned (as the reference says)."""
    pv = two_tokens(torch.tensor(0.0), torch.tensor(1e-9))
    assert select_tokens(pv, [[1, 2, 4]])[0].tolist() == [0]
    assert reference_select(pv, [[1, 2, 4]])[0] == [0]


def test_threshold_zero_negative_zero_equals_zero():
    pv = two_tokens(torch.tensor(0.0), torch.tensor(-0.0))
    assert select_tokens(pv, [[1, 2, 4]])[0].tolist() == [0]


@pytest.mark.parametrize("threshold", [0.1, 0.02, 1 / 3, 0.7])
def test_threshold_is_compared_exactly(threshold):
    """With metric max the distance below is exactly float32(threshold), which is above the
    threshold for 0.1 and 1/3 and below it for 0.02 and 0.7: similar only in the second case. The
    threshold must not be rounded to the nearest float32 before comparing (numpy would). mean 0
    and std 1 make the de-normalised difference exactly y - x."""
    d = torch.tensor(threshold, dtype=torch.float32)
    pv = two_tokens(torch.tensor(0.0), d)
    kw = dict(threshold=threshold, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    want = [0] if float(d) <= threshold else [0, 1]
    for method in METHODS:
        assert select_tokens(pv, [[1, 2, 4]], metric="max", method=method, **kw)[0].tolist() == want
        for metric in METRICS:  # mae/rmse round differently: the reference decides
            got = select_tokens(pv, [[1, 2, 4]], metric=metric, method=method, **kw)[0].tolist()
            assert got == reference_select(pv, [[1, 2, 4]], metric=metric, method=method, **kw)[0]


def test_threshold_zero_keeps_one_ulp_where_it_survives_denormalisation():
    """Near 1.0 (de-normalised), one float32 step of the normalised value survives x * 0.5 + 0.5
    for every other step; the reference decides, and the selector must agree both ways."""
    x = torch.tensor(0.75)
    for steps in (1, 2, 3):
        y = x
        for _ in range(steps):
            y = torch.nextafter(y, torch.tensor(2.0))
        pv = two_tokens(x, y)
        assert select_tokens(pv, [[1, 2, 4]])[0].tolist() == reference_select(pv, [[1, 2, 4]])[0]


@pytest.mark.parametrize("chunk_floats", [1, 2 * 3072 + 5, 7 * 3072])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    image=token_grids(),
    threshold=st.sampled_from([0.0, 0.03]),
    metric=st.sampled_from(METRICS),
    method=st.sampled_from(METHODS),
)
def test_chunk_seams(monkeypatch, chunk_floats, image, threshold, metric, method):
    """1 token per chunk, and chunk sizes that do not divide rows: every seam position."""
    monkeypatch.setattr(token_distances, "_CHUNK_FLOATS", chunk_floats)
    pv, grid = patchify(image)
    kw = dict(threshold=threshold, metric=metric, method=method)
    assert select_tokens(pv, [grid], **kw)[0].tolist() == reference_select(pv, [grid], **kw)[0]


def ramp_image(gh: int, gw: int, step: float, vertical: bool = False) -> torch.Tensor:
    """Slow ramps over tokens (anchored keeps some, sliding keeps none): long dependency chains."""
    r = torch.arange(gh, dtype=torch.float32)[:, None]
    c = torch.arange(gw, dtype=torch.float32)[None, :]
    levels = ((r if vertical else c) * step + (c if vertical else r) * step / 3) % 1.0
    levels = (levels * 255).round() / 255
    tokens = levels.view(gh, gw, 1, 1, 1).expand(gh, gw, TOKEN, TOKEN, 3)
    return tokens.permute(0, 2, 1, 3, 4).reshape(gh * TOKEN, gw * TOKEN, 3).contiguous()


@pytest.mark.parametrize("passes", [0, 1, 2, 50])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(image=st.one_of(level_grids(), token_grids()), steps=st.integers(1, 3), metric=st.sampled_from(METRICS))
def test_anchored_any_number_of_verification_passes(monkeypatch, passes, image, steps, metric):
    """0 passes: pure wavefront; 50: verification until the fixpoint; in between: both."""
    monkeypatch.setattr(selector._Pred2dAnchored, "_PASSES", passes)
    pv, grid = patchify(image)
    kw = dict(threshold=steps / 64, metric=metric, anchored=True)
    assert select_tokens(pv, [grid], **kw)[0].tolist() == reference_select(pv, [grid], **kw)[0]


@pytest.mark.parametrize("passes", [0, 1, 2, 50])
def test_anchored_predictor_choice_is_verified(monkeypatch, passes):
    """A grid where a pruned token's anchored predictor differs from its sliding one while its
    kept/pruned state does not, and the difference decides a later token: a verification that
    compared only kept/pruned states would accept the sliding candidate here."""
    monkeypatch.setattr(selector._Pred2dAnchored, "_PASSES", passes)
    levels = torch.tensor([[1, 2, 5, 5], [3, 2, 4, 6]], dtype=torch.float32) / 64
    image = token_image(levels.view(2, 4, 1, 1, 1).expand(2, 4, TOKEN, TOKEN, 3).contiguous())
    pv, grid = patchify(image)
    kw = dict(threshold=3 / 64, metric="max", anchored=True)
    assert select_tokens(pv, [grid], **kw)[0].tolist() == reference_select(pv, [grid], **kw)[0]


@pytest.mark.parametrize("passes", [0, 1, 3, 50])
@pytest.mark.parametrize("vertical", [False, True])
def test_anchored_ramps(monkeypatch, passes, vertical):
    """Ramps make anchored differ from sliding along whole rows and columns, so the first
    candidate is wrong in many places and the frontier must advance correctly."""
    monkeypatch.setattr(selector._Pred2dAnchored, "_PASSES", passes)
    image = ramp_image(7, 9, 3 / 255, vertical)
    pv, grid = patchify(image)
    kw = dict(threshold=4 / 255, anchored=True)
    got = select_tokens(pv, [grid], **kw)[0].tolist()
    assert got == reference_select(pv, [grid], **kw)[0]
    assert got != select_tokens(pv, [grid], threshold=4 / 255, anchored=False)[0].tolist()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=token_grids(), threshold=st.sampled_from([0.0, 0.01, 0.03]), metric=st.sampled_from(METRICS))
def test_bf16_input_matches_reference(image, threshold, metric):
    """bf16 pixel_values take the converting path (``TokenSource.float_slab``)."""
    pv, grid = patchify(image)
    pv = pv.to(torch.bfloat16)
    kw = dict(threshold=threshold, metric=metric)
    assert select_tokens(pv, [grid], **kw)[0].tolist() == reference_select(pv, [grid], **kw)[0]


def test_threads_share_nothing():
    """Scratch buffers are per thread: concurrent calls on different images equal sequential ones."""
    images = [ramp_image(9, 11, k / 255, vertical=k % 2 == 0) for k in range(1, 7)]
    inputs = [patchify(im) for im in images]
    want = [select_tokens(pv, [g], threshold=t)[0].tolist() for pv, g in inputs for t in (0.0, 0.02)]
    got: dict[int, list] = {}

    def work(k: int) -> None:
        for _ in range(5):
            got[k] = [select_tokens(pv, [g], threshold=t)[0].tolist() for pv, g in inputs[k:] + inputs[:k]
                      for t in (0.0, 0.02)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(len(inputs)):
        rotated = [want[2 * i + j] for i in list(range(k, len(inputs))) + list(range(k)) for j in range(2)]
        assert got[k] == rotated
