"""A slow, obviously correct PixelPrune selector: ALGORITHM.md transcribed token by token.

Used as the oracle for the vectorised selector (and by the selector benchmark). It shares no
code with ``core/selector.py``: its own patch layout, de-normalisation and loops.
"""

from __future__ import annotations

import torch

PATCH = 16
MERGE = 2
TEMPORAL = 2


def patchify(image: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> tuple[torch.Tensor, list[int]]:
    """(H, W, C) float image in [0, 1] -> (pixel_values, [1, H/16, W/16]) in the Qwen2-VL layout."""
    h, w, c = image.shape
    x = (image - torch.tensor(mean)) / torch.tensor(std)
    x = x.permute(2, 0, 1).unsqueeze(0).expand(TEMPORAL, c, h, w)  # both frames equal: a still image
    gh, gw = h // PATCH, w // PATCH
    x = x.reshape(1, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gh * gw, c * TEMPORAL * PATCH * PATCH).contiguous(), [1, gh, gw]


def descriptor_grid(pixel_values: torch.Tensor, gh: int, gw: int, mean, std) -> list[list[torch.Tensor]]:
    """Per token (r, c) on the merged grid: its 4 patches' first frame, de-normalised, flattened."""
    c = len(mean)
    grid = []
    for r in range(gh // MERGE):
        row = []
        for col in range(gw // MERGE):
            token = r * (gw // MERGE) + col
            parts = []
            for j in range(MERGE * MERGE):
                patch = pixel_values[token * MERGE * MERGE + j].float().view(c, TEMPORAL, PATCH * PATCH)
                for ch in range(c):
                    parts.append(patch[ch, 0] * float(std[ch]) + float(mean[ch]))
            row.append(torch.cat(parts))
        grid.append(row)
    return grid


def dist(x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    d = x - y
    if metric == "max":
        return float(d.abs().max())
    if metric == "mae":
        return float(d.abs().mean())
    if metric == "rmse":  # float32 throughout, the square root included (ALGORITHM.md: float32)
        return float(torch.sqrt((d * d).mean()))
    raise AssertionError(metric)


def reference_select_grid(grid, threshold: float, metric: str, method: str, anchored: bool | None) -> list[int]:
    """Kept token indices (raster order) for one image's descriptor grid."""
    metric = "max" if metric == "exact" else metric
    anchored = threshold > 0 if anchored is None else anchored
    gh, gw = len(grid), len(grid[0])

    def similar(x, y) -> bool:
        return dist(x, y, metric) <= threshold

    kept: list[int] = []
    if method == "pred_2d":
        rec = [[None] * gw for _ in range(gh)]
        for r in range(gh):
            for c in range(gw):
                x = grid[r][c]
                src = rec if anchored else grid
                if r == 0 and c == 0:
                    keep = True
                    p = None
                else:
                    if r == 0:
                        p = src[r][c - 1]
                    elif c == 0:
                        p = src[r - 1][c]
                    else:
                        a, b, cc = src[r][c - 1], src[r - 1][c], src[r - 1][c - 1]
                        p = b if (similar(cc, a) and not similar(cc, b)) else a
                    keep = not similar(x, p)
                rec[r][c] = x if keep else p
                if keep:
                    kept.append(r * gw + c)
        return kept

    order = []
    for r in range(gh):
        cols = range(gw) if (method == "raster" or r % 2 == 0) else range(gw - 1, -1, -1)
        order.extend((r, c) for c in cols)
    prev = None  # sliding: previous token; anchored: previous kept token
    for r, c in order:
        x = grid[r][c]
        keep = prev is None or not similar(x, prev)
        if keep:
            kept.append(r * gw + c)
        if keep or not anchored:
            prev = x
    return sorted(kept)


def reference_select(pixel_values, image_grid_thw, *, threshold=0.0, metric="max", method="pred_2d",
                     anchored=None, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)) -> list[list[int]]:
    out, offset = [], 0
    for t, h, w in [tuple(int(v) for v in row) for row in torch.as_tensor(image_grid_thw).tolist()]:
        pv = pixel_values[offset : offset + t * h * w]
        offset += t * h * w
        out.append(reference_select_grid(descriptor_grid(pv, h, w, image_mean, image_std),
                                         threshold, metric, method, anchored))
    return out
