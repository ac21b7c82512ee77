"""The PixelPrune video selector: which merged tokens of a video to keep (``docs/ALGORITHM.md`` §7).

A video is ``grid_t`` temporal slices of ``(grid_h/merge) x (grid_w/merge)`` tokens, one after
another in ``pixel_values_videos``; a token's descriptor covers every frame of its slice. Slice 0
is an image (section 4). In a later slice, token (s, 0, 0) is always kept and any other token is
pruned iff it is similar to V, the same place one slice earlier, or to P, its spatial prediction
within the slice (the chosen method); anchored mode compares with reconstructions, a pruned
token reconstructing as V's reconstruction when similar to V (checked first), else as P's.

How it is fast and still exact (the same machinery as images, :mod:`.selector`):

* One streaming pass (:func:`.token_distances.plane_distances`) gives every token's distance to
  its left, upper and temporal neighbour, decision-exact as for images (``<= tau`` is the spec's
  answer): the rounding-bound route for ``max``, and spatial distances copied from the previous
  slice wherever a chunk of tokens is unchanged, so a static screen costs one temporal
  difference per token after slice 0.
* Threshold 0 and sliding mode are then boolean logic over all slices at once: pruned iff
  similar to V or (the image rule within the slice) to P.
* Anchored mode advances slice by slice. V's reconstruction is final once slice s-1 is done, so
  "similar to V's reconstruction" is one vectorised step for the whole slice; those tokens are
  *decided* (pruned, reconstruction known). The rest of the slice is the image's anchored pass
  with the decided tokens fixed: :class:`.selector._Pred2dAnchored` (verified whole-slice
  candidates, wavefront fallback) or :func:`.selector._scan_anchored` (one step per pruned run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .selector import (
    PatchGeometry, _as_grid, _float32_at_most, _PairDistances, _Pred2dAnchored, _pred2d_sliding, _scan_anchored,
    _scan_order_and_distances, _validated_pixels,
)
from .settings import PixelPruneSettings
from .token_distances import TokenSource, plane_distances

__all__ = ["select_video", "select_video_masks", "select_video_tokens", "select_video_keep_mask", "video_kept_per_slice", "video_tokens_per_slice"]


def select_video(src: TokenSource, *, threshold: float = 0.0, metric: str = "max", method: str = "pred_2d",
                 anchored: bool | None = None) -> np.ndarray:
    """Keep mask ``(slices * gh * gw,)`` bool (numpy, slices in order, raster order within each)
    for one video whose ``src`` has ``all_frames`` descriptors. Arguments are assumed validated."""
    t, gh, gw, plane = src.slices, src.gh, src.gw, src.plane
    if plane == 1:  # every token is some slice's (s, 0, 0)
        src.assert_finite()
        return np.ones(src.n, dtype=bool)
    h, v, tm = plane_distances(src, metric, threshold)  # (t, gh, gw) each, decision-exact
    tau = _float32_at_most(threshold)  # float32 d <= tau  <=>  d <= threshold, exactly
    is_anchored = threshold > 0 if anchored is None else bool(anchored)
    if threshold == 0 or not is_anchored:  # threshold 0: anchored == sliding exactly
        sim_t = tm <= tau  # slice 0: +inf, never similar
        sim_t[:, 0, 0] = False
        if method == "pred_2d":
            keep = _pred2d_sliding(h, v, tau)[0] & ~sim_t
        else:
            order, prev = _scan_order_and_distances(h, v, src, method, metric)
            keep_scan = ~(prev <= tau) & ~sim_t.reshape(t, plane)[:, order]
            keep = np.empty((t, plane), dtype=bool)
            keep[:, order] = keep_scan
        return keep.reshape(src.n)
    return _select_anchored(src, h, v, tm, tau, metric, method)


def _select_anchored(src: TokenSource, h: np.ndarray, v: np.ndarray, tm: np.ndarray, tau: np.float32,
                     metric: str, method: str) -> np.ndarray:
    """Anchored, slice by slice (see the module docstring)."""
    t, gh, gw, plane = src.slices, src.gh, src.gw, src.plane
    keep = np.ones(src.n, dtype=bool)
    ref = np.arange(src.n, dtype=np.int64)  # a token whose original equals the reconstruction
    pair_distance = _PairDistances(src, metric)  # one memo for the whole video
    if method != "pred_2d":
        order, prev = _scan_order_and_distances(h, v, src, method, metric)
    decided = decided_lossy = None
    for s in range(t):
        base = s * plane
        cells = base + np.arange(plane, dtype=np.int64)
        if s:
            # similar(X, recon(V)): V's own distance where V is its own reference; identical to V:
            # within tau of V's reconstruction (V is kept, or pruned within tau of it)
            above, tv = cells - plane, tm[s].reshape(plane)
            rv = ref[above]
            d = np.where(rv == above, tv, np.nan).astype(np.float32)
            d[np.isnan(d) & (tv == 0)] = 0.0
            m = np.isnan(d)
            if m.any():
                d[m] = pair_distance(cells[m], rv[m])
            decided = d <= tau
            decided[0] = False  # (s, 0, 0) is always kept
            exact = decided & (rv == above) & (tv == 0)  # reconstruction == original
            ref[cells] = np.where(decided & ~exact, rv, cells)
            decided_lossy = decided & ~exact
        if method == "pred_2d":
            _Pred2dAnchored(src, metric, tau, h, v, plane=s, keep=keep, ref=ref,
                            decided=None if decided is None else decided.reshape(gh, gw),
                            decided_lossy=None if decided is None else decided_lossy.reshape(gh, gw),
                            pair_distance=pair_distance)
        else:
            at = base + order
            keep_scan, ref_scan = _scan_anchored(
                src, at, prev[s], metric, tau,
                None if decided is None else decided[order], None if decided is None else ref[at],
            )
            keep[at], ref[at] = keep_scan, ref_scan
    return keep


def video_tokens_per_slice(video_grid_thw: torch.Tensor | Sequence[Sequence[int]], merge_size: int = 2) -> list[int]:
    """Merged tokens per temporal slice, one entry per video: ``(h / merge) * (w / merge)``."""
    return [(h // merge_size) * (w // merge_size) for _, h, w in _as_grid(video_grid_thw, "video_grid_thw")]


def video_kept_per_slice(video_keep_mask: torch.Tensor, video_grid_thw: torch.Tensor | Sequence[Sequence[int]],
                         merge_size: int = 2) -> list[torch.Tensor]:
    """Per video, the kept token count of each temporal slice (``(t,)`` int64): the length of that
    slice's ``<|video_pad|>`` run, from the flat mask :func:`select_video_keep_mask` returns."""
    grids = _as_grid(video_grid_thw, "video_grid_thw")
    per_slice = video_tokens_per_slice(grids, merge_size)
    sizes = [t * n for (t, _, _), n in zip(grids, per_slice)]
    if sum(sizes) != video_keep_mask.numel():
        raise ValueError(f"video_keep_mask has {video_keep_mask.numel()} entries but video_grid_thw describes "
                         f"{sum(sizes)} tokens (merge_size={merge_size}).")
    return [m.reshape(t, n).sum(dim=1) for m, (t, _, _), n in zip(video_keep_mask.split(sizes), grids, per_slice)]


def select_video_masks(pixel_values_videos: Any, video_grid_thw: Any, geometry: PatchGeometry,
                       settings: PixelPruneSettings) -> list[np.ndarray]:
    """The video counterpart of :func:`.selector.select_masks`: per video, the bool keep mask over
    its merged tokens (numpy, slices in order). ``geometry`` and ``settings`` are validated records;
    only the pixels and grids are checked here (``settings.enabled`` is not consulted)."""
    pixel_values, grids = _validated_pixels(pixel_values_videos, video_grid_thw, geometry, kind="video")
    mean = torch.tensor(geometry.image_mean, dtype=torch.float32)
    std = torch.tensor(geometry.image_std, dtype=torch.float32)
    masks: list[np.ndarray] = []
    offset = 0
    for i, (t, h, w) in enumerate(grids):
        rows = t * h * w
        src = TokenSource(pixel_values[offset : offset + rows], h, w, spec=geometry, image_mean=mean,
                          image_std=std, index=i, slices=t, all_frames=True, kind="Video")
        offset += rows
        masks.append(select_video(src, threshold=settings.threshold, metric=settings.metric,
                                  method=settings.method, anchored=settings.anchored))
    return masks


def _select_videos(pixel_values_videos, video_grid_thw, *, merge_size, temporal_patch_size, patch_size,
                   image_mean, image_std, threshold, metric, method, anchored) -> list[np.ndarray]:
    geometry = PatchGeometry(merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                             patch_size=patch_size, image_mean=image_mean, image_std=image_std)
    settings = PixelPruneSettings(threshold=threshold, metric=metric, method=method, anchored=anchored)
    return select_video_masks(pixel_values_videos, video_grid_thw, geometry, settings)


def select_video_tokens(
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor | Sequence[Sequence[int]],
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
    """Select the tokens PixelPrune keeps, per video (``docs/ALGORITHM.md`` section 7).

    Args:
        pixel_values_videos: ``(num_patches, C*T*P*P)`` as the Qwen3-VL / Qwen3.5 video processor
            returns it (any float dtype; distances in float32). CPU or CUDA.
        video_grid_thw: ``(num_videos, 3)`` patch grids, ``t >= 1`` temporal slices each.
        merge_size, temporal_patch_size, patch_size: the processor's layout.
        image_mean, image_std: the processor's normalisation, undone so thresholds are in [0, 1]
            pixel units.
        threshold, metric, method, anchored: as for :func:`pixelprune.select_tokens`. A token's
            descriptor covers all ``temporal_patch_size`` frames of its slice.

    Returns:
        Per video, the sorted ``int64`` indices ``s * (gh * gw) + r * gw + c`` of the kept tokens
        (``gh = h / merge``, ``gw = w / merge``), on ``pixel_values_videos``' device. Token
        ``s * gh * gw`` (each slice's first) is always kept.

    Raises:
        ValueError: on inconsistent shapes, grids not divisible by ``merge_size``, non-finite
            pixels, or invalid settings.
    """
    masks = _select_videos(
        pixel_values_videos, video_grid_thw, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        patch_size=patch_size, image_mean=image_mean, image_std=image_std, threshold=threshold,
        metric=metric, method=method, anchored=anchored,
    )
    device = pixel_values_videos.device if isinstance(pixel_values_videos, torch.Tensor) else torch.device("cpu")
    return [torch.from_numpy(np.flatnonzero(m)).to(device) for m in masks]


def select_video_keep_mask(
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor | Sequence[Sequence[int]],
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
    """Like :func:`select_video_tokens` (same arguments) but returns the flat ``video_keep_mask``:
    one bool per merged token of every video, videos concatenated, slices in order (CPU).

    Per-slice kept counts (each slice's ``<|video_pad|>`` run):
    ``mask.split(per_slice_sizes)`` with :func:`video_tokens_per_slice`, or
    ``mask.view(-1, tokens_per_slice).sum(1)`` for one video."""
    masks = _select_videos(
        pixel_values_videos, video_grid_thw, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        patch_size=patch_size, image_mean=image_mean, image_std=image_std, threshold=threshold,
        metric=metric, method=method, anchored=anchored,
    )
    return torch.from_numpy(np.concatenate(masks)) if masks else torch.zeros(0, dtype=torch.bool)
