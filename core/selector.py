"""The PixelPrune token selector (pure torch + numpy): which merged tokens of an image to keep.

This is the one implementation of ``docs/ALGORITHM.md`` used by the transformers processors, the
vLLM processor and the CLI. Terminology: a *token* is one merged ``(merge_size * patch_size)``-pixel
square (32x32 px for Qwen3-VL / Qwen3.5), i.e. ``merge_size**2`` consecutive rows of
``pixel_values``; descriptors and distances live in :mod:`.token_distances`.

How it is fast and still exact:

* Every method needs, first, each token's distance to its left (``H``) and upper (``V``)
  neighbour: one streaming pass over ``pixel_values`` (:func:`.token_distances.neighbour_distances`),
  decision-exact at any threshold. Threshold 0 and sliding ``pred_2d`` are then boolean logic on
  ``(grid_h, grid_w)`` grids.
* Anchored ``pred_2d`` (threshold > 0) is sequential by definition, but cell (r, c) depends only on
  (r, c-1), (r-1, c), (r-1, c-1). :class:`_Pred2dAnchored` verifies a candidate (the sliding
  result) on all cells at once and only falls back to a wavefront over anti-diagonals (at most
  grid_h + grid_w steps) from the first anti-diagonal it cannot prove correct.
* Anchored ``raster``/``serpentine`` runs of consecutive kept tokens come from the sliding
  distances; only runs of pruned tokens search forward (vectorised) for the next token that
  differs from their anchor, so the Python loop runs once per pruned run, never per token.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .settings import PixelPruneSettings
from .token_distances import GridSpec, TokenSource, distance, gather_distance, neighbour_distances

__all__ = [
    "GridSpec",
    "PatchGeometry",
    "PreprocessorConfig",
    "select_masks",
    "select_tokens",
    "select_keep_mask",
    "keep_mask_from_indices",
    "TokenSource",
    "select_image",
    "distance",
]


# --------------------------------------------------------------------------------------------------
# Geometry: the one record of how an image processor laid out pixel_values, and its one parser


@dataclasses.dataclass(frozen=True)
class PatchGeometry(GridSpec):
    """How an image processor laid out ``pixel_values`` and how to map them back to [0, 1] pixels:
    the one geometry record the selector, the processors, vLLM and the CLI pass around.

    A :class:`~.token_distances.GridSpec` (the distance kernels' layout: ``merge_size``,
    ``temporal_patch_size``, ``patch_size``, ``channels``) plus ``image_mean`` / ``image_std``,
    the affine map ``pixel = value * std + mean`` back to [0, 1] pixels (the processor's own
    mean/std when it rescales by 1/255 and normalises; see :class:`PreprocessorConfig`).
    ``channels`` is ``len(image_mean)``. Build it with :meth:`from_image_processor` or
    :meth:`from_preprocessor_config`.
    """

    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.merge_size < 1 or self.temporal_patch_size < 1 or self.patch_size < 1:
            raise ValueError(
                f"merge_size={self.merge_size}, temporal_patch_size={self.temporal_patch_size} and "
                f"patch_size={self.patch_size} must all be >= 1."
            )
        mean = tuple(float(v) for v in torch.as_tensor(self.image_mean, dtype=torch.float64).reshape(-1).tolist())
        std = tuple(float(v) for v in torch.as_tensor(self.image_std, dtype=torch.float64).reshape(-1).tolist())
        if len(mean) != len(std):
            raise ValueError(f"image_mean has {len(mean)} channels but image_std has {len(std)}.")
        object.__setattr__(self, "image_mean", mean)
        object.__setattr__(self, "image_std", std)
        object.__setattr__(self, "channels", len(mean))

    @classmethod
    def from_image_processor(cls, image_processor: Any, images_kwargs: Mapping[str, Any] | None = None) -> PatchGeometry:
        """The geometry of a stock image processor, honouring per-call ``images_kwargs`` overrides
        (``patch_size``, ``merge_size``, ``image_mean``, ``do_normalize``, ``do_rescale``, ...)."""
        return PreprocessorConfig.from_image_processor(image_processor, images_kwargs).geometry

    @classmethod
    def from_preprocessor_config(cls, data: Mapping[str, Any]) -> PatchGeometry:
        """The geometry of a ``preprocessor_config.json`` dict (or an image processor's config dict)."""
        return PreprocessorConfig.from_dict(data).geometry

    @property
    def token_size(self) -> int:
        """Side of one merged token in pixels (``patch_size * merge_size``: 32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size


@dataclasses.dataclass(frozen=True)
class PreprocessorConfig:
    """What a Qwen3-VL / Qwen3.5 image processor's configuration says about ``pixel_values``: the
    one parser of a preprocessor config, from an image-processor object (with per-call
    ``images_kwargs`` overrides) or from a config dict (``preprocessor_config.json``, the
    ``image_processor`` block of ``processor_config.json``). Missing values take the Qwen3-VL
    checkpoints' defaults; ``min_pixels`` / ``max_pixels`` are the resize limits (``size``'s
    ``shortest_edge`` / ``longest_edge``, or the legacy keys), ``None`` when absent.
    """

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None

    @classmethod
    def _read(cls, get: Callable[[str], Any]) -> PreprocessorConfig:
        defaults = cls()

        def value(name: str) -> Any:
            found = get(name)
            return getattr(defaults, name) if found is None else found

        size = get("size")

        def edge(key: str, legacy: str) -> Any:  # `size` is a dict in configs, a SizeDict on processors
            found = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
            return get(legacy) if found is None else found

        min_pixels, max_pixels = edge("shortest_edge", "min_pixels"), edge("longest_edge", "max_pixels")

        def channels(name: str) -> tuple[float, ...]:
            found = value(name)
            return (float(found),) * 3 if isinstance(found, (int, float)) else tuple(float(v) for v in found)

        return cls(
            patch_size=int(value("patch_size")),
            merge_size=int(value("merge_size")),
            temporal_patch_size=int(value("temporal_patch_size")),
            image_mean=channels("image_mean"),
            image_std=channels("image_std"),
            do_rescale=get("do_rescale") is not False,
            rescale_factor=float(value("rescale_factor")),
            do_normalize=get("do_normalize") is not False,
            min_pixels=None if min_pixels is None else int(min_pixels),
            max_pixels=None if max_pixels is None else int(max_pixels),
        )

    @classmethod
    def from_image_processor(cls, image_processor: Any, images_kwargs: Mapping[str, Any] | None = None) -> PreprocessorConfig:
        """Read ``image_processor``'s attributes; non-``None`` entries of ``images_kwargs`` win."""
        kw = dict(images_kwargs or {})
        return cls._read(lambda name: getattr(image_processor, name, None) if kw.get(name) is None else kw[name])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessorConfig:
        """Read a config dict (``preprocessor_config.json``)."""
        return cls._read(data.get)

    @property
    def geometry(self) -> PatchGeometry:
        """The affine map back to [0, 1] pixels: the processor's mean/std (0/1 without
        normalisation), divided by 255 without rescaling (raw 0..255 values, as vLLM's
        on-device normalisation hands them) or by ``rescale_factor * 255`` when non-standard."""
        channels = 3
        mean = _per_channel(self.image_mean, channels, default=0.0)
        std = _per_channel(self.image_std, channels, default=1.0)
        if not self.do_normalize:
            mean, std = (0.0,) * channels, (1.0,) * channels
        if not self.do_rescale:
            mean = tuple(m / 255.0 for m in mean)
            std = tuple(s / 255.0 for s in std)
        else:
            factor = float(self.rescale_factor or 1 / 255) * 255.0
            if abs(factor - 1.0) > 1e-9:  # a non-standard rescale factor: values are pixel * factor
                mean = tuple(m / factor for m in mean)
                std = tuple(s / factor for s in std)
        return PatchGeometry(
            merge_size=self.merge_size,
            temporal_patch_size=self.temporal_patch_size,
            patch_size=self.patch_size,
            image_mean=mean,
            image_std=std,
        )


def _per_channel(value: Any, channels: int, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    if isinstance(value, (int, float)):
        return (float(value),) * channels
    return tuple(float(v) for v in value)


def _as_grid(grid_thw: torch.Tensor | Sequence[Sequence[int]], name: str = "image_grid_thw") -> list[tuple[int, int, int]]:
    grid = torch.as_tensor(grid_thw)
    rows = "num_videos" if name.startswith("video") else "num_images"
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"{name} must have shape ({rows}, 3), got {tuple(grid.shape)}.")
    if grid.is_floating_point() or grid.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {grid.dtype}.")
    return [tuple(int(v) for v in row) for row in grid.tolist()]


def _validate_image_grid(index: int, t: int, h: int, w: int, merge_size: int, kind: str = "image") -> None:
    name = kind.capitalize()
    if kind == "image" and t != 1:
        raise ValueError(
            f"Image {index} has grid t={t}: video (t > 1) is not supported by select_tokens; "
            "pass still images (t = 1), or videos to select_video_tokens."
        )
    if t < 1:
        raise ValueError(f"{name} {index} has grid t={t}; a video has t >= 1 temporal slices.")
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} {index} has an empty grid (h={h}, w={w}).")
    if h % merge_size or w % merge_size:
        raise ValueError(
            f"{name} {index} grid (h={h}, w={w}) is not divisible by merge_size={merge_size}."
        )


def _pred2d_sliding(h: np.ndarray, v: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Sliding (and threshold-0) pred_2d, fully vectorised.

    ``h``, ``v``: ``(..., gh, gw)``, one grid or a stack of them (a video's slices). Returns ``keep``
    and ``use_b`` of the same shape, bool: whether each token is predicted from the token above
    (else from the left; token (0, 0) of every grid is always kept)."""
    sim_a = h <= tau  # X ~ A (left)
    sim_b = v <= tau  # X ~ B (up)
    use_b = np.zeros_like(sim_a)
    use_b[..., :, 0] = True  # first column predicts from above
    # interior: C~A is the vertical pair at (r, c-1); C~B is the horizontal pair at (r-1, c)
    use_b[..., 1:, 1:] = sim_b[..., 1:, :-1] & ~sim_a[..., :-1, 1:]
    keep = ~np.where(use_b, sim_b, sim_a)
    keep[..., 0, 0] = True
    return keep, use_b


class _PairDistances:
    """Exact distances between token pairs, each pair computed once per image.

    The anchored wavefront compares references (kept tokens standing in for pruned ones), and the
    same pair of references meets again and again along a boundary between two pruned regions:
    on 4K screenshots 4-7x fewer pairs are gathered with this memo. d(i, j) == d(j, i) bit for
    bit (fl(a - b) == -fl(b - a)), so pairs are stored unordered."""

    def __init__(self, src: TokenSource, metric: str) -> None:
        self.src, self.metric, self.n = src, metric, src.n
        self.keys = np.empty(0, dtype=np.int64)  # sorted min(i, j) * n + max(i, j)
        self.values = np.empty(0, dtype=np.float32)

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        keys = np.minimum(i, j) * self.n + np.maximum(i, j)
        pos = np.minimum(np.searchsorted(self.keys, keys), max(0, len(self.keys) - 1))
        found = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)
        out = np.empty(len(keys), dtype=np.float32)
        out[found] = self.values[pos[found]]
        if not found.all():
            new, inverse = np.unique(keys[~found], return_inverse=True)
            values = gather_distance(self.src, new // self.n, new % self.n, self.metric)
            out[~found] = values[inverse.reshape(-1)]
            at = np.searchsorted(self.keys, new)
            self.keys = np.insert(self.keys, at, new)
            self.values = np.insert(self.values, at, values)
        return out


class _Pred2dAnchored:
    """Anchored pred_2d, exactly the sequential definition, computed mostly in whole-grid passes.

    State of a cell: kept or not and, if pruned, its predictor (left or up). ``ref[i]`` is a
    token whose original descriptor equals token ``i``'s reconstruction: ``i`` itself for kept
    tokens and wherever the reconstruction is the original, else the kept token at the end of
    ``i``'s chain of predictors. Distances that are already known are not recomputed: between
    two tokens that are their own references it is ``H`` or ``V``; between equal references it
    is 0; and a token identical to a neighbour with another reference is within ``tau`` of that
    reference (every pruned token is, by construction), which is all a "similar?" question needs.
    Only the remaining pairs gather descriptors, each pair once (:class:`_PairDistances`).

    Where it runs: anchored and sliding modes differ only downstream of a *lossy* prune (a token
    pruned while not identical to its prediction): until then every reconstruction is the
    original. A cell depends on its left, upper and upper-left neighbours only, so a lossy cell
    (r0, c0) can influence only cells with r >= r0 and c >= c0. The sliding result stands
    everywhere else; only that union of quadrants (the *affected* cells) is computed.

    How: a cell's state is a function F of the states of cells on earlier anti-diagonals. Start
    from a candidate state G (the sliding result) and evaluate F on every affected cell at once.
    If F(G) == G, G is the sequential result (induction over anti-diagonals). Otherwise let k be
    the first anti-diagonal where they differ: G is correct before k and F(G) is correct up to k,
    so G := F(G) advances the proven frontier by at least one diagonal per pass, usually by many.
    After ``_PASSES`` passes the rest runs as a wavefront from the frontier, one anti-diagonal
    per step (at most grid_h + grid_w steps, as ALGORITHM.md describes).
    """

    _PASSES = 4

    def __init__(self, src: TokenSource, metric: str, tau: float, h: np.ndarray, v: np.ndarray, *,
                 plane: int = 0, keep: np.ndarray | None = None, ref: np.ndarray | None = None,
                 decided: np.ndarray | None = None, decided_lossy: np.ndarray | None = None,
                 pair_distance: _PairDistances | None = None) -> None:
        """One image, or temporal slice ``plane`` of a video (``src`` holds all its slices):
        ``h``, ``v`` ``(slices, gh, gw)`` or ``(gh, gw)``; ``keep`` and ``ref`` are the video's
        arrays, filled in for this slice (earlier slices final). ``decided`` cells are already
        pruned by the temporal rule with their ``ref`` set; ``decided_lossy``: those whose
        reconstruction may differ from their original."""
        gh, gw = src.gh, src.gw
        self.gw, self.tau = gw, tau
        self.pair_distance = pair_distance or _PairDistances(src, metric)
        n, size = gh * gw, src.n
        base = plane * n
        self.h, self.v = h.reshape(-1), v.reshape(-1)
        hs, vs = h.reshape(-1, gh, gw)[plane], v.reshape(-1, gh, gw)[plane]
        keep_c, use_b = _pred2d_sliding(hs, vs, tau)
        lossy = ~keep_c & (np.where(use_b, vs, hs) > 0)  # pruned but not identical to its prediction
        if decided is not None:
            keep_c &= ~decided
            lossy = np.where(decided, decided_lossy, lossy)
        affected = np.logical_or.accumulate(np.logical_or.accumulate(lossy, axis=0), axis=1)
        if decided is not None:
            affected &= ~decided
        self.keep = np.ones(size, dtype=bool) if keep is None else keep
        self.keep[base : base + n] = keep_c.reshape(n)
        # unaffected cells: reconstruction == original
        self.ref = np.arange(size, dtype=np.int64) if ref is None else ref
        cells = base + np.flatnonzero(affected)  # raster order
        if not len(cells):
            return
        rr, cc = np.divmod(cells - base, gw)
        diagonal = rr + cc
        pred = np.where(use_b.reshape(n)[cells - base], cells - gw, cells - 1)  # candidate: the sliding predictors
        frontier = int(diagonal.min())  # cells on earlier anti-diagonals are proven correct
        for _ in range(self._PASSES):
            self.ref[cells] = np.where(self.keep[cells], cells, pred)
            self._resolve_refs(cells)
            keep_new, pred_new = self._evaluate(cells, rr, cc)
            changed = (keep_new != self.keep[cells]) | (~keep_new & (pred_new != pred))
            if not changed.any():
                return  # a fixpoint: the sequential result, refs included
            self.keep[cells], pred = keep_new, pred_new
            frontier = int(diagonal[changed].min()) + 1  # F(G) is proven correct before this
        # wavefront from the frontier; cells before it are final
        done = diagonal < frontier
        self.ref[cells] = np.where(self.keep[cells] | ~done, cells, pred)
        self._resolve_refs(cells[done])
        order = np.argsort(diagonal[~done], kind="stable")
        todo, d_todo = cells[~done][order], diagonal[~done][order]
        bounds = np.flatnonzero(np.diff(d_todo)) + 1
        for group in np.split(np.arange(len(todo)), bounds):
            idx = todo[group]
            r, c = np.divmod(idx - base, gw)
            keep_step, pred_step = self._evaluate(idx, r, c)
            self.keep[idx] = keep_step
            self.ref[idx] = np.where(keep_step, idx, self.ref[pred_step])

    def _resolve_refs(self, cells: np.ndarray) -> None:
        """Follow ``ref`` links from ``cells`` to tokens that are their own reference (pointer
        doubling: log2 of the longest chain passes). Links always point to earlier tokens."""
        ref = self.ref
        while True:
            nxt = ref[ref[cells]]
            if np.array_equal(nxt, ref[cells]):
                return
            ref[cells] = nxt

    def _similar_refs(self, x: np.ndarray, y: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """similar(desc[ref[x]], desc[ref[y]]) for neighbouring tokens x, y at distance ``xy``."""
        rx, ry = self.ref[x], self.ref[y]
        x_kept, y_kept = rx == x, ry == y
        out = np.full(len(x), np.nan, dtype=np.float32)
        out[rx == ry] = 0.0
        both = np.isnan(out) & x_kept & y_kept
        out[both] = xy[both]
        # one is kept and identical to the other, which is pruned: within tau of its reference
        out[np.isnan(out) & (x_kept | y_kept) & (xy == 0)] = 0.0
        m = np.isnan(out)
        if m.any():
            out[m] = self.pair_distance(rx[m], ry[m])
        return out <= self.tau

    def _evaluate(self, idx: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F: (kept?, predictor) of the cells ``idx`` given the current ``ref`` of every earlier cell."""
        gw, tau = self.gw, self.tau
        use_b = cc == 0  # first column: predict from above; first row: from the left
        inner = np.flatnonzero((rr > 0) & (cc > 0))
        if len(inner):
            x = idx[inner]
            a, b = x - 1, x - gw
            c = b - 1
            # C~A (vertical pair at A) and C~B (horizontal pair at B) in one batch: one gather
            sim = self._similar_refs(np.concatenate([c, c]), np.concatenate([a, b]),
                                     np.concatenate([self.v[a], self.h[b]]))
            sim_ca, sim_cb = sim[: len(x)], sim[len(x) :]
            use_b[inner] = sim_ca & ~sim_cb
        y = np.where(use_b, idx - gw, idx - 1)  # the predicting neighbour
        xy = np.where(use_b, self.v[idx], self.h[idx])  # d(X, neighbour)
        ry = self.ref[y]
        d = np.where(ry == y, xy, np.nan).astype(np.float32)
        d[np.isnan(d) & (xy == 0)] = 0.0  # identical to a pruned neighbour: within tau of its ref
        m = np.isnan(d)
        if m.any():
            d[m] = self.pair_distance(idx[m], ry[m])
        return d > tau, y


def _scan_order_and_distances(h: np.ndarray, v: np.ndarray, src: TokenSource, method: str,
                              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Token indices of one grid in scan order, and each token's distance to its predecessor in
    that order (inf for the first). ``h``, ``v``: ``(gh, gw)``, or ``(slices, gh, gw)`` for a
    video (``src`` holds the slices one after another; distances then ``(slices, gh * gw)``).
    Consecutive tokens are grid neighbours, so ``H``/``V`` hold the distances, except raster's
    row wrap-arounds, which are gathered (every slice's in one call)."""
    gh, gw = h.shape[-2:]
    h3, v3 = h.reshape(-1, gh, gw), v.reshape(-1, gh, gw)
    grid = np.arange(gh * gw, dtype=np.int64).reshape(gh, gw)
    prev = h3.copy()  # within a left-to-right row: the left neighbour
    if method == "serpentine":
        grid[1::2] = grid[1::2, ::-1]
        prev[:, 1::2, :-1] = h3[:, 1::2, 1:]  # right-to-left rows: the right neighbour
        prev[:, 1::2, -1] = v3[:, 1::2, -1]  # odd rows start under the end of the row above
        prev[:, 2::2, 0] = v3[:, 2::2, 0]  # even rows start under the start of the row above
        prev[:, 1::2] = prev[:, 1::2, ::-1]  # into scan order
    elif gh > 1:
        base = (np.arange(len(h3), dtype=np.int64) * gh * gw)[:, None]
        wrap = gather_distance(src, (base + grid[1:, 0]).reshape(-1), (base + grid[:-1, -1]).reshape(-1), metric)
        prev[:, 1:, 0] = wrap.reshape(len(h3), gh - 1)
    prev = prev.reshape(len(h3), gh * gw)
    prev[:, 0] = np.inf
    return grid.reshape(-1), prev.reshape(-1) if h.ndim == 2 else prev


def _scan_anchored(src: TokenSource, order: np.ndarray, prev_dist: np.ndarray, metric: str, tau: float,
                   decided: np.ndarray | None = None,
                   decided_ref: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Anchored raster / serpentine over one scan (an image, or one slice of a video): a token is
    kept iff not similar to its predecessor's reconstruction. Returns ``keep`` and ``ref`` in scan
    order (``ref``: a token whose original equals the reconstruction).

    ``order``: the scan's token indices; ``prev_dist``: each token's distance to its predecessor.
    ``decided`` (video): tokens already pruned by the temporal rule, reconstructed as token
    ``decided_ref`` (their own index when exact). They compare with nothing, so only a token
    after a pruned predecessor needs that predecessor's reconstruction; runs of kept and decided
    tokens come from known distances, runs of pruned tokens search forward (vectorised) for the
    next token that differs from their anchor: one Python step per pruned run, never per token.
    """
    n = len(order)
    if decided is None:
        decided, decided_ref = np.zeros(n, dtype=bool), order
    keep = ~decided
    keep[0] = True
    ref = np.where(decided, decided_ref, order)
    # a non-decided token after a decided one compares with the decided token's reconstruction
    base = prev_dist.copy()
    after = np.flatnonzero(~decided[1:] & decided[:-1]) + 1
    other = after[(decided_ref[after - 1] != order[after - 1]) & (prev_dist[after] != 0)]
    if len(other):  # (identical to the decided token, or it is exact: the neighbour distance)
        base[other] = gather_distance(src, order[other], decided_ref[other - 1], metric)
    # stop[i]: the first token at or after i that is pruned by the spatial rule from a known predecessor
    pruned = ~decided & (base <= tau)
    pruned[0] = False
    stop = np.minimum.accumulate(np.where(pruned, np.arange(n), n)[::-1])[::-1]
    i = 1
    while i < n:
        j = int(stop[i])  # tokens i..j-1: kept (dissimilar from a known reference) or decided
        if j >= n:
            break
        anchor = int(ref[j - 1])
        keep[j], ref[j] = False, anchor
        i, window = j + 1, 64
        while i < n:  # the predecessor is pruned, reconstructed as ``anchor``
            cand = np.arange(i, min(n, i + window))
            d = np.zeros(len(cand), dtype=np.float32)
            # identical to a pruned predecessor: within tau of its anchor
            need = ~decided[cand] & (prev_dist[cand] != 0)
            if need.any():
                d[need] = gather_distance(src, order[cand[need]], np.full(int(need.sum()), anchor), metric)
            over = np.flatnonzero(decided[cand] | (d > tau))
            stop_at = int(over[0]) if len(over) else len(cand)
            keep[cand[:stop_at]] = False
            ref[cand[:stop_at]] = anchor
            i += stop_at
            if len(over):  # a decided token, or the first that differs from the anchor (kept)
                i += 1
                break
            window *= 2
    return keep, ref


def _scan_select(src: TokenSource, order: np.ndarray, prev_dist: np.ndarray, metric: str, tau: float,
                 anchored: bool) -> np.ndarray:
    """raster / serpentine: keep iff not similar to the previous token in scan order (anchored:
    to the previous token's reconstruction, i.e. the previous *kept* token). Returns keep in scan
    order."""
    if not anchored or tau == 0 or len(order) == 1:
        return ~(prev_dist <= tau)
    return _scan_anchored(src, order, prev_dist, metric, tau)[0]


def _float32_at_most(threshold: float) -> np.float32:
    """The largest float32 <= ``threshold``. Distances are float32; comparing them with this
    float32 is exact, where numpy would round a Python float to the *nearest* float32 (NEP 50)
    and could call a distance just above the threshold similar."""
    tau = np.float32(threshold)
    return np.nextafter(tau, np.float32(-np.inf)) if float(tau) > threshold else tau


def select_image(
    src: TokenSource,
    *,
    threshold: float = 0.0,
    metric: str = "max",
    method: str = "pred_2d",
    anchored: bool | None = None,
) -> torch.Tensor:
    """Keep mask ``(tokens,)`` bool (CPU, raster order) for one image.

    Arguments are assumed validated (see :func:`select_tokens`).
    """
    if src.n == 1:
        src.assert_finite()
        return torch.ones(1, dtype=torch.bool)
    h_np, v_np = neighbour_distances(src, metric, threshold)
    is_anchored = threshold > 0 if anchored is None else bool(anchored)
    tau = _float32_at_most(threshold)  # float32 d <= tau  <=>  d <= threshold, exactly
    if method == "pred_2d":
        if threshold == 0 or not is_anchored:  # threshold 0: anchored == sliding exactly
            keep = _pred2d_sliding(h_np, v_np, tau)[0]
        else:
            keep = _Pred2dAnchored(src, metric, tau, h_np, v_np).keep
        return torch.from_numpy(np.ascontiguousarray(keep.reshape(src.n)))
    order, prev = _scan_order_and_distances(h_np, v_np, src, method, metric)
    keep_scan = _scan_select(src, order, prev, metric, tau, is_anchored)
    keep = np.empty(src.n, dtype=bool)
    keep[order] = keep_scan
    return torch.from_numpy(keep)


def _validated_pixels(pixel_values: Any, image_grid_thw: Any, geometry: PatchGeometry,
                      kind: str = "image") -> tuple[torch.Tensor, list]:
    pv_name, grid_name = ("pixel_values", "image_grid_thw") if kind == "image" else (
        "pixel_values_videos", "video_grid_thw")
    if not isinstance(pixel_values, torch.Tensor):
        pixel_values = torch.as_tensor(np.asarray(pixel_values))
    if pixel_values.ndim != 2:
        raise ValueError(
            f"{pv_name} must be 2-D (num_patches, C*T*P*P), got shape {tuple(pixel_values.shape)}."
        )
    if not (pixel_values.is_floating_point()):
        raise ValueError(f"{pv_name} must be floating point, got dtype {pixel_values.dtype}.")
    if pixel_values.shape[1] != geometry.row_width:
        raise ValueError(
            f"{pv_name} rows have {pixel_values.shape[1]} values, expected C*T*P*P = "
            f"{geometry.channels}*{geometry.temporal_patch_size}*{geometry.patch_size}*{geometry.patch_size} = "
            f"{geometry.row_width}."
        )
    grids = _as_grid(image_grid_thw, grid_name)
    for i, (t, h, w) in enumerate(grids):
        _validate_image_grid(i, t, h, w, geometry.merge_size, kind)
    expected = sum(t * h * w for t, h, w in grids)
    if expected != pixel_values.shape[0]:
        raise ValueError(
            f"{pv_name} has {pixel_values.shape[0]} rows but {grid_name} describes {expected} "
            f"patches ({len(grids)} {kind}(s))."
        )
    return pixel_values, grids


def select_masks(
    pixel_values: Any,
    image_grid_thw: Any,
    geometry: PatchGeometry,
    settings: PixelPruneSettings,
    *,
    seconds: list[float] | None = None,
) -> list[torch.Tensor]:
    """The one internal entry point of the selector: per image, the bool keep mask over its
    merged tokens (CPU, raster order).

    ``geometry`` and ``settings`` are validated records (they validate themselves when built);
    only ``pixel_values`` / ``image_grid_thw`` are checked here (``ValueError`` on inconsistent
    shapes, grids not divisible by ``merge_size``, video grids, non-finite pixels).
    ``settings.enabled`` is not consulted. When ``seconds`` is given, each image's selector wall
    time is appended to it.

    Videos (``t > 1``) go to :func:`.video_selector.select_video_masks`, the same contract per
    video (one :class:`TokenSource` over its ``t`` slices).
    """
    pixel_values, grids = _validated_pixels(pixel_values, image_grid_thw, geometry)
    mean = torch.tensor(geometry.image_mean, dtype=torch.float32)
    std = torch.tensor(geometry.image_std, dtype=torch.float32)
    masks: list[torch.Tensor] = []
    offset = 0
    for i, (t, h, w) in enumerate(grids):
        start = time.perf_counter()
        rows = t * h * w
        src = TokenSource(pixel_values[offset : offset + rows], h, w, spec=geometry,
                          image_mean=mean, image_std=std, index=i)
        offset += rows
        masks.append(select_image(src, threshold=settings.threshold, metric=settings.metric,
                                  method=settings.method, anchored=settings.anchored))
        if seconds is not None:
            seconds.append(time.perf_counter() - start)
    return masks


def _select(
    pixel_values, image_grid_thw, *, merge_size, temporal_patch_size, patch_size,
    image_mean, image_std, threshold, metric, method, anchored,
) -> list[torch.Tensor]:
    geometry = PatchGeometry(merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                             patch_size=patch_size, image_mean=image_mean, image_std=image_std)
    settings = PixelPruneSettings(threshold=threshold, metric=metric, method=method, anchored=anchored)
    return select_masks(pixel_values, image_grid_thw, geometry, settings)


def select_tokens(
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor | Sequence[Sequence[int]],
    *,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    patch_size: int = 16,
    image_mean: Sequence[float] | torch.Tensor = (0.5, 0.5, 0.5),
    image_std: Sequence[float] | torch.Tensor = (0.5, 0.5, 0.5),
    threshold: float = 0.0,
    metric: str = "max",
    method: str = "pred_2d",
    anchored: bool | None = None,
) -> list[torch.Tensor]:
    """Select the tokens PixelPrune keeps, per image.

    Args:
        pixel_values: ``(num_patches, C*T*P*P)`` as a Qwen3-VL / Qwen3.5 image processor returns it
            (any float dtype; distances are computed in float32). CPU or CUDA.
        image_grid_thw: ``(num_images, 3)`` patch grids; ``t`` must be 1 (still images).
        merge_size, temporal_patch_size, patch_size: the processor's layout.
        image_mean, image_std: the processor's normalisation, undone so thresholds are in [0, 1]
            pixel units.
        threshold: tau >= 0; tokens at distance <= tau are similar. 0 = pixel-exact (lossless).
        metric: ``max`` | ``mae`` | ``rmse`` | ``exact`` (``max`` at threshold 0).
        method: ``pred_2d`` | ``raster`` | ``serpentine``.
        anchored: compare with reconstructions (True) or originals (False); ``None``: anchored iff
            threshold > 0.

    Returns:
        Per image, the sorted ``int64`` indices (raster order over the token grid
        ``(h / merge, w / merge)``) of the kept tokens, on ``pixel_values``' device. Token 0 is
        always kept.

    Raises:
        ValueError: on inconsistent shapes, grids not divisible by ``merge_size``, video grids
            (``t > 1``), non-finite pixels, or invalid settings.
    """
    masks = _select(
        pixel_values, image_grid_thw, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        patch_size=patch_size, image_mean=image_mean, image_std=image_std, threshold=threshold,
        metric=metric, method=method, anchored=anchored,
    )
    device = pixel_values.device if isinstance(pixel_values, torch.Tensor) else torch.device("cpu")
    return [torch.nonzero(m).reshape(-1).to(device) for m in masks]


def select_keep_mask(
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor | Sequence[Sequence[int]],
    *,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    patch_size: int = 16,
    image_mean: Sequence[float] | torch.Tensor = (0.5, 0.5, 0.5),
    image_std: Sequence[float] | torch.Tensor = (0.5, 0.5, 0.5),
    threshold: float = 0.0,
    metric: str = "max",
    method: str = "pred_2d",
    anchored: bool | None = None,
) -> torch.Tensor:
    """Like :func:`select_tokens` (same arguments) but returns the flat ``image_keep_mask`` the
    models consume: one bool per merged token of every image, images concatenated (CPU)."""
    masks = _select(
        pixel_values, image_grid_thw, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        patch_size=patch_size, image_mean=image_mean, image_std=image_std, threshold=threshold,
        metric=metric, method=method, anchored=anchored,
    )
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def keep_mask_from_indices(indices: Sequence[torch.Tensor], tokens_per_image: Sequence[int]) -> torch.Tensor:
    """Flat keep mask from per-image kept indices (the inverse of splitting a mask per image)."""
    if len(indices) != len(tokens_per_image):
        raise ValueError(f"Got {len(indices)} index tensors for {len(tokens_per_image)} images.")
    parts = []
    for idx, n in zip(indices, tokens_per_image):
        m = torch.zeros(int(n), dtype=torch.bool)
        m[idx.cpu()] = True
        parts.append(m)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
