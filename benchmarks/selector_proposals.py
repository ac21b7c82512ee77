"""Prototype speed-ups for ``processing/selector.py``, measured by ``bench_selector.py``.

Built only from the selector's own public pieces (``token_descriptors``, ``select_from_descriptors``),
so the results are the selector's results by construction; the benchmark also asserts they are
identical token for token. Nothing here is used by the package: it shows the lead what a change
would buy before the selector is edited.
"""

from __future__ import annotations

import time

import torch

from pixelprune.processing.selector import GridSpec, select_from_descriptors, token_descriptors


def all_finite_by_sum(desc: torch.Tensor) -> bool:
    """Exactly ``bool(torch.isfinite(desc).all())`` for float32 ``desc``, in one streaming reduction.

    A float64 sum of float32 values cannot overflow (|sum| <= n * 3.4e38 << 1.8e308 for any
    realistic n), while NaN and +-inf propagate (inf + -inf = NaN): the sum is finite iff every
    value is. No bool tensor of the input's size is materialised.
    """
    return bool(torch.isfinite(desc.sum(dtype=torch.float64)))


def select_tokens_proposal(pixel_values: torch.Tensor, image_grid_thw, *, threshold: float = 0.0,
                           metric: str = "max", method: str = "pred_2d", anchored: bool | None = None,
                           image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)) -> list[torch.Tensor]:
    """``select_tokens`` (Qwen3-VL layout, arguments assumed valid) with the sum-based finiteness check."""
    spec = GridSpec()
    mean = torch.as_tensor(image_mean, dtype=torch.float32)
    std = torch.as_tensor(image_std, dtype=torch.float32)
    out, offset = [], 0
    for t, h, w in torch.as_tensor(image_grid_thw).tolist():
        rows = t * h * w
        desc = token_descriptors(pixel_values[offset: offset + rows], h, w, spec=spec,
                                 image_mean=mean, image_std=std)
        offset += rows
        if not all_finite_by_sum(desc):
            raise ValueError("non-finite pixel values")
        keep = select_from_descriptors(desc, h // 2, w // 2, threshold=threshold, metric=metric,
                                       method=method, anchored=anchored)
        out.append(torch.nonzero(keep).reshape(-1))
    return out


def stage_times(pixel_values: torch.Tensor, image_grid_thw, *, threshold: float = 0.0,
                metric: str = "max", anchored: bool | None = None) -> dict[str, float]:
    """Seconds (wall) spent in each stage of the current selector for one image: where the time goes."""
    spec = GridSpec()
    mean = torch.full((3,), 0.5)
    (t, h, w), = torch.as_tensor(image_grid_thw).tolist()
    stages: dict[str, float] = {}

    def clock(name, fn):
        t0 = time.perf_counter()
        r = fn()
        stages[name] = time.perf_counter() - t0
        return r

    desc = clock("descriptors", lambda: token_descriptors(pixel_values, h, w, spec=spec, image_mean=mean,
                                                          image_std=mean))
    clock("isfinite_all", lambda: bool(torch.isfinite(desc).all()))
    clock("finite_by_sum", lambda: all_finite_by_sum(desc))
    clock("select_from_descriptors", lambda: select_from_descriptors(
        desc, h // 2, w // 2, threshold=threshold, metric=metric, anchored=anchored))
    return stages
