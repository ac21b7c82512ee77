"""The video selector (ALGORITHM.md section 7) against a slow per-token reference, known structural
answers, the image selector where section 7 says they agree, and its error contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pixelprune
from pixelprune import (
    select_tokens, select_video_keep_mask, select_video_tokens, video_kept_per_slice, video_tokens_per_slice,
)
from pixelprune.core import selector, token_distances
from reference_selector import dist, patchify
from reference_video_selector import patchify_video, reference_select_video, video_descriptors
from test_selector import METHODS, METRICS, TOKEN, quantised

IMAGENET = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
NORMALISATIONS = [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), IMAGENET]
SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def frames_from_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """(t, 2, gh, gw, 32, 32, 3) token contents per slice and frame -> (2t, gh*32, gw*32, 3) frames."""
    t, f, gh, gw = tokens.shape[:4]
    return tokens.permute(0, 1, 2, 4, 3, 5, 6).reshape(t * f, gh * TOKEN, gw * TOKEN, 3)


def kept(frames: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **kw) -> list[int]:
    pv, grid = patchify_video(frames, mean, std)
    return select_video_tokens(pv, [grid], image_mean=mean, image_std=std, **kw)[0].tolist()


def reference(frames: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **kw) -> list[int]:
    pv, grid = patchify_video(frames, mean, std)
    return reference_select_video(pv, [grid], image_mean=mean, image_std=std, **kw)[0]


# --------------------------------------------------------------------------- strategies

@st.composite
def videos(draw, max_side: int = 5):
    """1..4 slices of a small token grid with planted temporal repeats: each slice copies the one
    before and changes some tokens (new palette entries, small noise, or only the second frame of
    the slice), so V-, P- and both-similar tokens all occur."""
    t = draw(st.integers(1, 4))
    gh, gw = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    k = draw(st.integers(1, 4))
    flat = draw(st.booleans())
    shape = (k, 1, 1, 3) if flat else (k, TOKEN, TOKEN, 3)
    palette = quantised(torch.rand(*shape, generator=g)).expand(k, TOKEN, TOKEN, 3)
    noise = draw(st.sampled_from([0.0, 2 / 255, 6 / 255, 20 / 255]))
    change = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    slices = []
    current = palette[torch.randint(0, k, (gh, gw), generator=g)]
    for s in range(t):
        if s:
            changed = torch.rand(gh, gw, generator=g) < change
            current = torch.where(changed[..., None, None, None], palette[torch.randint(0, k, (gh, gw), generator=g)],
                                  current)
        second = current
        if noise:
            noisy = torch.rand(gh, gw, generator=g) < 0.5
            delta = (torch.rand(gh, gw, TOKEN, TOKEN, 3, generator=g) * 2 - 1) * noise
            second = torch.where(noisy[..., None, None, None], quantised(current + delta), current)
            if draw(st.booleans()):  # the noise in both frames of the slice
                current = second
        slices.append(torch.stack([current, second]))
    return frames_from_tokens(torch.stack(slices))


@st.composite
def level_videos(draw):
    """Flat tokens at multiples of 1/64 per channel, repeated in time: distances equal thresholds
    exactly (ties) and similarity is often non-transitive."""
    t = draw(st.integers(1, 4))
    gh, gw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    levels = torch.tensor(draw(st.lists(st.integers(0, 5), min_size=gh * gw * 3, max_size=gh * gw * 3)),
                          dtype=torch.float32).view(gh, gw, 3) / 64
    out = []
    for _ in range(t):
        step = torch.tensor(draw(st.lists(st.integers(-1, 1), min_size=gh * gw, max_size=gh * gw)),
                            dtype=torch.float32).view(gh, gw, 1) / 64
        keep_still = draw(st.booleans())
        levels = levels if keep_still else (levels + step).clamp(0, 1)
        tok = levels.view(gh, gw, 1, 1, 3).expand(gh, gw, TOKEN, TOKEN, 3)
        out.append(torch.stack([tok, tok]))
    return frames_from_tokens(torch.stack(out))


# --------------------------------------------------------------------------- against the reference

@settings(max_examples=150, **SLOW)
@given(video=videos(), threshold=st.sampled_from([0.0, 0.01, 0.03, 0.1]), metric=st.sampled_from(METRICS),
       method=st.sampled_from(METHODS), anchored=st.sampled_from([None, True, False]))
def test_matches_reference(video, threshold, metric, method, anchored):
    kw = dict(threshold=threshold, metric=metric, method=method, anchored=anchored)
    assert kept(video, **kw) == reference(video, **kw)


@settings(max_examples=150, **SLOW)
@given(video=level_videos(), steps=st.integers(0, 3), metric=st.sampled_from(METRICS),
       method=st.sampled_from(METHODS), anchored=st.sampled_from([None, True, False]))
def test_matches_reference_with_exact_ties(video, steps, metric, method, anchored):
    kw = dict(threshold=steps / 64, metric=metric, method=method, anchored=anchored)
    assert kept(video, **kw) == reference(video, **kw)


def neighbour_distance_values(pv, grid, mean, std, metric) -> list[float]:
    """Every spec distance between spatially or temporally neighbouring video tokens (reference code)."""
    desc = video_descriptors(pv, *grid, mean, std)
    out = []
    for s, plane in enumerate(desc):
        for r, row in enumerate(plane):
            for c, x in enumerate(row):
                for y in ([row[c - 1]] if c else []) + ([plane[r - 1][c]] if r else []) + (
                        [desc[s - 1][r][c]] if s else []):
                    out.append(dist(x, y, metric))
    return out


@settings(max_examples=120, **SLOW)
@given(video=st.one_of(videos(4), level_videos()), norm=st.sampled_from(NORMALISATIONS),
       metric=st.sampled_from(METRICS), method=st.sampled_from(METHODS),
       anchored=st.sampled_from([None, True, False]), pick=st.floats(0, 1))
def test_thresholds_equal_to_actual_distances(video, norm, metric, method, anchored, pick):
    """tau is one of the video's own neighbour distances (reference code): the pairs at exactly
    that distance are ties only the spec's float32 formula decides."""
    mean, std = norm
    pv, grid = patchify_video(video, mean, std)
    values = sorted(v for v in neighbour_distance_values(pv, grid, mean, std, metric) if v > 0)
    if not values:
        return
    tau = values[min(len(values) - 1, int(pick * len(values)))]
    kw = dict(threshold=tau, metric=metric, method=method, anchored=anchored, image_mean=mean, image_std=std)
    assert select_video_tokens(pv, [grid], **kw)[0].tolist() == reference_select_video(pv, [grid], **kw)[0]


@pytest.mark.parametrize("passes", [0, 1, 50])
@settings(max_examples=40, **SLOW)
@given(video=st.one_of(videos(), level_videos()), steps=st.integers(1, 3), metric=st.sampled_from(METRICS))
def test_anchored_any_number_of_verification_passes(monkeypatch, passes, video, steps, metric):
    """Each slice's anchored pred_2d: pure wavefront, verification to the fixpoint, and both."""
    monkeypatch.setattr(selector._Pred2dAnchored, "_PASSES", passes)
    kw = dict(threshold=steps / 64, metric=metric, anchored=True)
    assert kept(video, **kw) == reference(video, **kw)


@pytest.mark.parametrize("chunk_floats", [1, 2 * 6144 + 5])
@settings(max_examples=30, **SLOW)
@given(video=videos(), threshold=st.sampled_from([0.0, 0.03]), metric=st.sampled_from(METRICS),
       method=st.sampled_from(METHODS))
def test_chunk_seams(monkeypatch, chunk_floats, video, threshold, metric, method):
    """One token per chunk, and chunks that do not divide rows: every seam, in every slice."""
    monkeypatch.setattr(token_distances, "_CHUNK_FLOATS", chunk_floats)
    kw = dict(threshold=threshold, metric=metric, method=method)
    assert kept(video, **kw) == reference(video, **kw)


@settings(max_examples=30, **SLOW)
@given(video=videos(), threshold=st.sampled_from([0.0, 0.03]), metric=st.sampled_from(METRICS))
def test_bf16_input_matches_reference(video, threshold, metric):
    pv, grid = patchify_video(video)
    pv = pv.to(torch.bfloat16)
    kw = dict(threshold=threshold, metric=metric)
    assert select_video_tokens(pv, [grid], **kw)[0].tolist() == reference_select_video(pv, [grid], **kw)[0]


@settings(max_examples=20, **SLOW)
@given(clips=st.lists(videos(4), min_size=2, max_size=3), threshold=st.sampled_from([0.0, 0.03]),
       method=st.sampled_from(METHODS))
def test_videos_are_independent_and_mask_matches_indices(clips, threshold, method):
    parts = [patchify_video(v) for v in clips]
    pv = torch.cat([p for p, _ in parts])
    grids = [g for _, g in parts]
    together = select_video_tokens(pv, grids, threshold=threshold, method=method)
    alone = [select_video_tokens(p, [g], threshold=threshold, method=method)[0] for p, g in parts]
    assert [x.tolist() for x in together] == [x.tolist() for x in alone]
    assert all(x.dtype == torch.int64 for x in together)
    mask = select_video_keep_mask(pv, grids, threshold=threshold, method=method)
    sizes = [t * n for (t, _, _), n in zip(grids, video_tokens_per_slice(grids))]
    assert mask.dtype == torch.bool and mask.numel() == sum(sizes)
    assert [torch.nonzero(m).reshape(-1).tolist() for m in mask.split(sizes)] == [x.tolist() for x in together]
    counts = video_kept_per_slice(mask, grids)
    assert [c.tolist() for c in counts] == [
        torch.bincount(x // n, minlength=t).tolist() for x, (t, _, _), n in zip(together, grids, video_tokens_per_slice(grids))]


# --------------------------------------------------------------------------- the fast distance pass

def perturbed(x: torch.Tensor, kind: str, steps: int) -> torch.Tensor:
    """A copy of stored values ``x`` with one planted change the rounding bound must get right."""
    y = x.clone().view(-1)
    at = steps * 97 % y.numel()
    if kind == "ulp":  # 1..3 float32 steps of one stored value, either way
        for _ in range(abs(steps)):
            y[at] = torch.nextafter(y[at], torch.tensor(2.0 if steps > 0 else -2.0))
    elif kind == "tiny":  # de-normalises to the same value (mean 0.5) or one step away
        y[at] = y[at] + 1e-9 * steps
    elif kind == "negzero":
        y[y == 0] = -0.0
    elif kind == "level":  # a whole 8-bit level: decided by the approximation
        y[at] = y[at] + steps / 255
    return y.view_as(x)


@st.composite
def planted_videos(draw):
    """(pixel_values_videos, grid, mean, std): flat unquantised tokens, each slice a copy of the one
    before (as stored) with planted changes of a few float32 steps, 1e-9, -0.0 or an 8-bit level,
    to temporal and spatial neighbours; a token copied from its left neighbour now and then."""
    t, gh, gw = draw(st.integers(2, 4)), draw(st.integers(1, 4)), draw(st.integers(2, 5))
    mean, std = draw(st.sampled_from(NORMALISATIONS))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = torch.rand(gh, gw, 1, 1, 3, generator=g)
    if draw(st.booleans()):
        levels[..., 0] = torch.tensor(mean[0])  # stored value 0: -0.0 can be planted
    frames = levels.expand(gh, gw, TOKEN, TOKEN, 3).permute(0, 2, 1, 3, 4).reshape(gh * TOKEN, gw * TOKEN, 3)
    pv, grid = patchify_video(frames.expand(2 * t, *frames.shape).contiguous(), mean, std)
    rows = pv.view(t, gh * gw, 4, pv.shape[1])  # (slice, token, patch, values)
    for s in range(t):
        if s:
            rows[s] = rows[s - 1]
        for _ in range(draw(st.integers(0, 3))):
            tok = draw(st.integers(0, gh * gw - 1))
            kind = draw(st.sampled_from(["ulp", "tiny", "negzero", "level", "left"]))
            if kind == "left":
                rows[s, tok] = rows[s, tok - 1]
            else:
                rows[s, tok] = perturbed(rows[s, tok], kind, draw(st.sampled_from([-3, -1, 1, 2, 3])))
    return pv, grid, mean, std


def decisions(values: list[float], tau: float) -> list[bool]:
    return [v <= tau for v in values]


@pytest.mark.parametrize("chunk_floats", [1, 2 * 6144 + 5, None])
@settings(max_examples=20, **SLOW)
@given(case=st.one_of(planted_videos(), videos(4).map(lambda v: (*patchify_video(v), *NORMALISATIONS[0]))),
       metric=st.sampled_from(METRICS), pick=st.floats(0, 1))
def test_plane_distances_are_decision_exact(monkeypatch, chunk_floats, case, metric, pick):
    """Every H, V and T of the fast pass (rounding bounds, slices copied where nothing changed, any
    chunking) decides ``<= tau`` as the spec's float32 formula (reference code), at tau 0 and at
    tau equal to one of the video's own distances; a value 0 is a spec 0 (the selector's shortcut
    for identical pairs; a pair that only rounds to 0 may read tiny when tau > 0); +inf exactly
    where there is no neighbour."""
    if chunk_floats:
        monkeypatch.setattr(token_distances, "_CHUNK_FLOATS", chunk_floats)
    pv, (t, h, w), mean, std = case
    gh, gw = h // 2, w // 2
    desc = video_descriptors(pv, t, h, w, mean, std)
    want = {"h": [], "v": [], "t": []}
    for s in range(t):
        for r in range(gh):
            for c in range(gw):
                x = desc[s][r][c]
                want["h"].append(dist(x, desc[s][r][c - 1], metric) if c else float("inf"))
                want["v"].append(dist(x, desc[s][r - 1][c], metric) if r else float("inf"))
                want["t"].append(dist(x, desc[s - 1][r][c], metric) if s else float("inf"))
    positive = sorted(v for vs in want.values() for v in vs if 0 < v < float("inf"))
    taus = [0.0] + ([positive[min(len(positive) - 1, int(pick * len(positive)))]] if positive else [])
    src = token_distances.TokenSource(pv, h, w, spec=selector.PatchGeometry(), image_mean=torch.tensor(mean),
                                      image_std=torch.tensor(std), slices=t, all_frames=True, kind="Video")
    for tau in taus:
        got = dict(zip("hvt", token_distances.plane_distances(src, metric, tau)))
        for name in "hvt":
            values = got[name].reshape(-1).tolist()
            if name != "t":  # (s, 0, 0) has no spatial neighbour; its T is defined
                want[name][:: gh * gw] = [float("inf")] * t
            assert [v == float("inf") for v in values] == [v == float("inf") for v in want[name]], name
            assert decisions(values, tau) == decisions(want[name], tau), (name, tau)
            assert all(w == 0 for v, w in zip(values, want[name]) if v == 0), (name, tau)


@pytest.mark.parametrize("chunk_floats", [1, None])
@settings(max_examples=40, **SLOW)
@given(case=planted_videos(), metric=st.sampled_from(METRICS), method=st.sampled_from(METHODS),
       anchored=st.sampled_from([None, True, False]), pick=st.floats(0, 1))
def test_planted_rounding_cases_match_reference(monkeypatch, chunk_floats, case, metric, method, anchored, pick):
    """The selector on videos whose temporal and spatial pairs differ by a few float32 steps, by
    values that de-normalise equal, by -0.0, at tau 0 and at tau equal to an actual distance."""
    if chunk_floats:
        monkeypatch.setattr(token_distances, "_CHUNK_FLOATS", chunk_floats)
    pv, grid, mean, std = case
    values = sorted(v for v in neighbour_distance_values(pv, grid, mean, std, metric) if v > 0)
    for tau in [0.0] + ([values[min(len(values) - 1, int(pick * len(values)))]] if values else []):
        kw = dict(threshold=tau, metric=metric, method=method, anchored=anchored, image_mean=mean, image_std=std)
        assert select_video_tokens(pv, [grid], **kw)[0].tolist() == reference_select_video(pv, [grid], **kw)[0]


def two_slices(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """pixel_values_videos of a 2-slice, 1 x 2 token video: slice 0 holds stored values 0.3 and
    0.9, slice 1 the same but its second token's values are ``a`` and then ``b`` (scalars)."""
    pv = torch.empty(2, 2, 4, 1536)
    pv[:, 0], pv[:, 1] = 0.3, 0.9
    pv[1, 1, :2], pv[1, 1, 2:] = a, b
    return pv.view(16, 1536), [2, 2, 4]


@pytest.mark.parametrize("mean, std", NORMALISATIONS)
def test_temporal_ties_land_in_the_rounding_window(monkeypatch, mean, std):
    """A temporal pair at distance exactly tau whose fast (stored-domain) value differs from the
    spec's by rounding: the selector must recompute it, and with the recompute switched off it
    would decide this very case wrongly (so a too-narrow window fails here)."""
    f32 = np.float32
    b = f32(0.9)

    def spec(a):  # the spec's distance: max over channels of the de-normalised differences
        return max(abs(f32(f32(a * f32(s)) + f32(m)) - f32(f32(b * f32(s)) + f32(m))) for m, s in zip(mean, std))

    def fast(a):  # what the stored-domain approximation sees
        return max(f32(abs(f32(a - b)) * f32(s)) for s in std)

    # the first 8-bit level step whose two values disagree (some always do: rounding differs)
    a = next(a for a in (f32(b + f32(k / 255 / std[0])) for k in range(1, 200)) if spec(a) != fast(a))
    pv, grid = two_slices(torch.tensor(float(a)), torch.tensor(0.9))
    kw = dict(image_mean=mean, image_std=std, metric="max")
    desc = video_descriptors(pv, *grid, mean, std)
    tau = dist(desc[1][0][1], desc[0][0][1], "max")
    assert tau == float(spec(a))
    fast = float(fast(a))
    calls = []
    real = token_distances.gather_distance

    def spy(src, i, j, metric):
        calls.append(len(i))
        return real(src, i, j, metric)

    monkeypatch.setattr(token_distances, "gather_distance", spy)
    for threshold in (tau, float(np.nextafter(np.float32(tau), np.float32(0))), min(tau, fast)):
        for anchored in (True, False):
            want = reference_select_video(pv, [grid], threshold=threshold, anchored=anchored, **kw)[0]
            assert select_video_tokens(pv, [grid], threshold=threshold, anchored=anchored, **kw)[0].tolist() == want
    assert calls, "no pair was recomputed: the tie was decided by the approximation"
    # without the recompute, the approximation alone gets one of the thresholds above wrong
    monkeypatch.setattr(token_distances, "_decision_window", lambda metric, approx, *a: np.zeros(approx.shape, bool))
    wrong = [th for th in (tau, float(np.nextafter(np.float32(tau), np.float32(0))), min(tau, fast))
             if select_video_tokens(pv, [grid], threshold=th, anchored=False, **kw)[0].tolist()
             != reference_select_video(pv, [grid], threshold=th, anchored=False, **kw)[0]]
    assert wrong


def test_temporal_values_that_denormalise_equal_are_pruned_at_zero():
    """Stored 0 and 1e-9 differ, but 0.5 * x + 0.5 is 0.5 for both: the spec's temporal distance is
    0 (pruned); 1e-6 survives de-normalisation (kept). -0.0 equals 0.0."""
    for b, want in ((1e-9, [0, 1, 2]), (1e-6, [0, 1, 2, 3]), (-0.0, [0, 1, 2])):
        pv = torch.zeros(2, 2, 4, 1536)  # token 1: stored 0 in both slices but for one value
        pv[1, 1, 3, 100] = b
        pv[0, 0], pv[1, 0] = 0.25, 0.75  # (s, 0, 0) differs: slice 1's tokens cannot copy slice 0's
        pv = pv.view(16, 1536)
        assert reference_select_video(pv, [[2, 2, 4]])[0] == want
        assert select_video_tokens(pv, [[2, 2, 4]])[0].tolist() == want
        assert select_video_tokens(pv.to(torch.bfloat16), [[2, 2, 4]])[0].tolist() == reference_select_video(
            pv.to(torch.bfloat16), [[2, 2, 4]])[0]


# --------------------------------------------------------------------------- structure

def noise_tokens(shape, seed: int) -> torch.Tensor:
    return quantised(torch.rand(*shape, TOKEN, TOKEN, 3, generator=torch.Generator().manual_seed(seed)))


def page(gh: int, gw: int, seed: int = 0) -> torch.Tensor:
    """A document-like token grid: blank background, some rows of distinct 'text' tokens."""
    tokens = torch.ones(gh, gw, TOKEN, TOKEN, 3)
    text = noise_tokens((gh, gw), seed)
    rows = torch.arange(gh) % 3 != 2
    cols = (torch.arange(gw) > 0) & (torch.arange(gw) < gw - 1)
    where = rows[:, None] & cols[None, :]
    return torch.where(where[..., None, None, None], text, tokens)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_static_video_keeps_one_token_per_later_slice(method, threshold):
    tokens = page(5, 6)
    t = 4
    frames = frames_from_tokens(tokens.expand(t, 2, *tokens.shape))
    pv, grid = patchify(tokens.permute(0, 2, 1, 3, 4).reshape(5 * TOKEN, 6 * TOKEN, 3))
    first = select_tokens(pv, [grid], threshold=threshold, method=method)[0].tolist()
    assert first != list(range(30))  # the page itself has something to prune
    got = kept(frames, threshold=threshold, method=method)
    assert got == first + [s * 30 for s in range(1, t)]


@pytest.mark.parametrize("anchored", [None, True])
def test_a_call_under_inference_mode_does_not_break_later_calls(monkeypatch, anchored):
    # The selector reuses CPU scratch buffers; one first made under `torch.inference_mode()` (a
    # benchmark, a serving loop) must stay writable by a later call outside it, and vice versa.
    monkeypatch.setattr(token_distances, "_SCRATCH", token_distances._Scratch())
    tokens = page(5, 6)
    frames = frames_from_tokens(torch.stack([tokens, noise_tokens((5, 6), 2)]).unsqueeze(1).expand(2, 2, 5, 6, -1, -1, -1))
    kw = dict(threshold=0.02, anchored=True) if anchored else {}
    with torch.inference_mode():
        first = kept(frames, **kw)
    assert kept(frames, **kw) == first == reference(frames, **kw)
    with torch.inference_mode():
        assert kept(frames, **kw) == first


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("anchored", [None, True, False])
def test_slices_that_differ_everywhere_keep_everything(method, anchored):
    frames = frames_from_tokens(noise_tokens((3, 2, 4, 5), 1))
    assert kept(frames, threshold=0.02, method=method, anchored=anchored) == list(range(3 * 20))
    assert kept(frames, method=method) == list(range(3 * 20))


def scrolled(tokens: torch.Tensor, t: int, gh: int) -> torch.Tensor:
    """t slices of a gh-row window scrolled down the page by exactly one token row per slice."""
    return frames_from_tokens(torch.stack([tokens[s : s + gh].expand(2, *tokens[s : s + gh].shape) for s in range(t)]))


def test_scroll_by_one_token_row_is_not_motion_compensated():
    """Temporal prediction is co-located only: after a one-row scroll no token equals the token at
    its place one slice earlier, so a page of distinct tokens keeps every token of every slice
    (a motion-compensated predictor would keep one new row per slice)."""
    t, gh, gw = 4, 4, 5
    frames = scrolled(noise_tokens((gh + t, gw), 2), t, gh)
    assert kept(frames) == list(range(t * gh * gw))


def test_scroll_by_one_token_row_of_uniform_rows():
    """Rows that are uniform and all different: within a slice each row keeps its first token
    (section 4); scrolled by one row, no token matches its place one slice earlier (V is the row
    that used to be there), so every slice keeps gh tokens: t * gh in all."""
    t, gh, gw = 4, 4, 5
    rows = noise_tokens((gh + t, 1), 3).expand(gh + t, gw, TOKEN, TOKEN, 3)
    frames = scrolled(rows, t, gh)
    for method in METHODS:
        # serpentine scans odd rows from the right: their first token is the last column
        last = gw - 1 if method == "serpentine" else 0
        want = [s * gh * gw + r * gw + (last if r % 2 else 0) for s in range(t) for r in range(gh)]
        assert kept(frames, method=method) == want
        assert kept(frames, method=method) == reference(frames, method=method)


def test_static_background_with_a_typing_cursor():
    """One token changes per slice on a static page: each later slice keeps (s, 0, 0) and the changed token."""
    gh, gw, t = 4, 6, 3
    base = page(gh, gw)
    slices = []
    for s in range(t):
        tokens = base.clone()
        tokens[1, 2 + s] = noise_tokens((1,), 10 + s)[0]  # the character typed in slice s
        base = tokens
        slices.append(tokens.expand(2, *tokens.shape))
    got = kept(frames_from_tokens(torch.stack(slices)))
    later = [x for x in got if x >= gh * gw]
    assert later == [gh * gw, gh * gw + 1 * gw + 3, 2 * gh * gw, 2 * gh * gw + 1 * gw + 4]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("levels, anchored_want, sliding_want", [
    ([[0, 10, 20, 40], [30, 11, 11, 13]], [0, 1, 2, 3, 4, 7], [0, 1, 2, 3, 4]),
    ([[0, 10, 20, 40], [30, 11, 13, 60]], [0, 1, 2, 3, 4, 6, 7], [0, 1, 2, 3, 4, 7]),
])
def test_anchored_prediction_through_a_temporally_pruned_token(method, levels, anchored_want, sliding_want):
    """Two 1 x 4 slices of flat tokens (levels / 64). Slice 1's second token is pruned by the
    temporal rule while not identical to V: it stands in as V's value (10, not its own 11), and a
    later token compares with that stand-in (13 is 3 away: kept), where originals (sliding) give 2
    (pruned). First row: an identical token in between passes the stand-in on; second row: the next
    token compares with it directly. Levels are exact in float32: nothing is decided by rounding."""
    tokens = (torch.tensor(levels, dtype=torch.float32) / 64).view(2, 1, 1, 4, 1, 1, 1)
    frames = frames_from_tokens(tokens.expand(2, 2, 1, 4, TOKEN, TOKEN, 3).contiguous())
    kw = dict(threshold=2 / 64, metric="max", method=method)
    assert kept(frames, anchored=True, **kw) == reference(frames, anchored=True, **kw) == anchored_want
    assert kept(frames, anchored=False, **kw) == reference(frames, anchored=False, **kw) == sliding_want


# --------------------------------------------------------------------------- the image rule, descriptors

@settings(max_examples=40, **SLOW)
@given(video=videos(), threshold=st.sampled_from([0.0, 0.01, 0.03]), method=st.sampled_from(METHODS),
       anchored=st.sampled_from([None, False]))
def test_single_slice_still_video_equals_the_image_selector(video, threshold, method, anchored):
    """t = 1 with both frames equal: section 7's slice 0 is section 4 and, for ``max``, the
    two-frame descriptor's distance is the one-frame distance: the image selector's answer."""
    still = video[:1].expand(2, *video.shape[1:]).contiguous()
    pv, grid = patchify_video(still)
    kw = dict(threshold=threshold, metric="max", method=method, anchored=anchored)
    assert select_video_tokens(pv, [grid], **kw)[0].tolist() == select_tokens(pv, [grid], **kw)[0].tolist()


def test_descriptor_covers_both_frames_of_a_slice():
    """A token whose first frame equals its neighbour's but whose second frame differs is pruned
    by the image selector (first frame only) and kept by the video selector."""
    tokens = torch.full((1, 2, 1, 3, TOKEN, TOKEN, 3), 0.25)
    tokens[0, 1, 0, 2] = 0.75  # token (0, 0, 2), second frame only
    pv, grid = patchify_video(frames_from_tokens(tokens))
    assert select_tokens(pv, [grid])[0].tolist() == [0]
    assert select_video_tokens(pv, [grid])[0].tolist() == [0, 2]
    assert reference_select_video(pv, [grid])[0] == [0, 2]


def test_temporal_repeat_in_a_later_slice_second_frame_only():
    """The temporal comparison also covers both frames: a change in the second frame of slice 1 keeps the token."""
    tokens = noise_tokens((2, 2, 2, 3), 4)
    tokens[1] = tokens[0]
    tokens[1, 1, 1, 1] = 1 - tokens[1, 1, 1, 1]
    pv, grid = patchify_video(frames_from_tokens(tokens))
    assert select_video_tokens(pv, [grid])[0].tolist() == list(range(6)) + [6, 6 + 4]


def test_bf16_input_does_not_merge_distinct_pixels():
    """Adjacent 8-bit levels stay distinct through bf16 and de-normalisation, in either frame."""
    tokens = torch.full((2, 2, 1, 2, TOKEN, TOKEN, 3), 128 / 255)
    tokens[1, 1, 0, 1, 5, 7, 2] = 129 / 255  # slice 1, second frame, token (1, 0, 1), one value
    pv, grid = patchify_video(frames_from_tokens(tokens))
    assert select_video_tokens(pv.to(torch.bfloat16), [grid])[0].tolist() == [0, 2, 3]


def test_other_normalisation_is_undone():
    tokens = noise_tokens((2, 2, 2, 2), 5)
    tokens[1] = tokens[0]
    frames = frames_from_tokens(tokens)
    mean, std = IMAGENET
    for threshold in (0.0, 0.02):
        assert kept(frames, mean, std, threshold=threshold) == reference(frames, mean, std, threshold=threshold)
        assert kept(frames, mean, std, threshold=threshold) == kept(frames, threshold=threshold)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_cuda_matches_cpu(threshold):
    tokens = page(6, 7).expand(3, 2, 6, 7, TOKEN, TOKEN, 3).clone()
    tokens[1, :, 2, 3] = 0.0
    tokens[2, 1, 4, 4] = 0.5
    pv, grid = patchify_video(frames_from_tokens(tokens))
    for method in METHODS:
        cpu = select_video_tokens(pv, [grid], threshold=threshold, method=method)[0]
        gpu = select_video_tokens(pv.cuda(), [grid], threshold=threshold, method=method)[0]
        assert gpu.device.type == "cuda" and gpu.cpu().tolist() == cpu.tolist()


# --------------------------------------------------------------------------- errors

@pytest.fixture
def valid():
    return patchify_video(torch.rand(4, 64, 96, 3))


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=-0.1), "threshold=-0.1"),
    (dict(metric="l2"), "'l2'; allowed: 'max', 'mae', 'rmse', 'exact'"),
    (dict(method="zigzag"), "'zigzag'; allowed: 'pred_2d', 'raster', 'serpentine'"),
    (dict(metric="exact", threshold=0.1), "metric='exact'"),
    (dict(merge_size=0), "merge_size=0"),
])
def test_invalid_settings(valid, kwargs, message):
    pv, grid = valid
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_video_tokens(pv, [grid], **kwargs)


def test_grid_errors_name_the_video_and_the_value(valid):
    pv, (t, h, w) = valid
    with pytest.raises(ValueError, match=r"pixel_values_videos has 48 rows but video_grid_thw describes 72"):
        select_video_tokens(pv, [[3, h, w]])
    with pytest.raises(ValueError, match=r"Video 0 has grid t=0"):
        select_video_tokens(pv[:0], [[0, h, w]])
    with pytest.raises(ValueError, match=r"Video 0 grid \(h=3, w=6\) is not divisible by merge_size=2"):
        select_video_tokens(torch.zeros(36, 1536), [[2, 3, 6]])
    with pytest.raises(ValueError, match=r"video_grid_thw must have shape \(num_videos, 3\)"):
        select_video_tokens(pv, [t, h, w])
    with pytest.raises(ValueError, match=r"pixel_values_videos rows have 768 values, expected C\*T\*P\*P"):
        select_video_tokens(pv[:, :768], [[t, h, w]])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("shape", [(2, 4, 6), (3, 2, 2)])
def test_non_finite_pixels_in_any_frame(bad, shape):
    """A NaN/inf in the second frame of the last slice (or of a one-token slice) is refused."""
    pv, grid = patchify_video(torch.rand(2 * shape[0], 16 * shape[1], 16 * shape[2], 3))
    pv[-1, -1] = bad  # last patch, last value: the second frame
    with pytest.raises(ValueError, match="Video 0 has non-finite pixel values"):
        select_video_tokens(pv, [grid])


def test_exported():
    assert pixelprune.select_video_tokens is select_video_tokens
    assert {"select_video_tokens", "select_video_keep_mask"} <= set(pixelprune.__all__)
