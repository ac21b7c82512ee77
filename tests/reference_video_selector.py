"""A slow, obviously correct PixelPrune video selector: ALGORITHM.md section 7 transcribed token by token.

The oracle for ``core/video_selector.py`` (and the selector benchmark's naive video row). It shares
no code with the package: its own patch layout, de-normalisation and loops; only the distance
formula comes from the image reference (``reference_selector.dist``).
"""

from __future__ import annotations

import torch

from reference_selector import MERGE, PATCH, TEMPORAL, dist


def patchify_video(frames: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> tuple[torch.Tensor, list[int]]:
    """(F, H, W, C) float frames in [0, 1], F a multiple of 2 -> (pixel_values_videos, [F/2, H/16, W/16])
    in the Qwen2-VL / Qwen3-VL video layout: slice s holds frames 2s and 2s+1."""
    f, h, w, c = frames.shape
    x = (frames - torch.tensor(mean)) / torch.tensor(std)
    t, gh, gw = f // TEMPORAL, h // PATCH, w // PATCH
    x = x.permute(0, 3, 1, 2).reshape(t, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * gh * gw, c * TEMPORAL * PATCH * PATCH).contiguous(), [t, gh, gw]


def video_descriptors(pixel_values: torch.Tensor, t: int, gh: int, gw: int, mean, std) -> list[list[list[torch.Tensor]]]:
    """desc[s][r][c]: token (s, r, c)'s 4 patches over BOTH frames of slice s, de-normalised, flattened
    in the stored order (patch, channel, frame, pixel)."""
    c = len(mean)
    h, w = gh // MERGE, gw // MERGE
    out = []
    for s in range(t):
        grid = []
        for r in range(h):
            row = []
            for col in range(w):
                token = s * h * w + r * w + col
                parts = []
                for j in range(MERGE * MERGE):
                    patch = pixel_values[token * MERGE * MERGE + j].float().view(c, TEMPORAL, PATCH * PATCH)
                    for ch in range(c):
                        for frame in range(TEMPORAL):
                            parts.append(patch[ch, frame] * float(std[ch]) + float(mean[ch]))
                row.append(torch.cat(parts))
            grid.append(row)
        out.append(grid)
    return out


def scan_order(h: int, w: int, method: str) -> list[tuple[int, int]]:
    order = []
    for r in range(h):
        cols = range(w) if (method in ("raster", "pred_2d") or r % 2 == 0) else range(w - 1, -1, -1)
        order.extend((r, c) for c in cols)
    return order


def reference_select_video_grid(desc, threshold: float, metric: str, method: str, anchored: bool | None) -> list[int]:
    """Kept token indices s * (h * w) + r * w + c for one video's descriptors, section 7 literally."""
    metric = "max" if metric == "exact" else metric
    anchored = threshold > 0 if anchored is None else anchored
    t, h, w = len(desc), len(desc[0]), len(desc[0][0])

    def similar(x, y) -> bool:
        return dist(x, y, metric) <= threshold

    rec = [[[None] * w for _ in range(h)] for _ in range(t)]  # reconstructions
    kept = []
    for s in range(t):
        src = rec if anchored else desc  # what V, P and P's context are
        prev = None  # raster / serpentine: the previous token of the scan (by position)
        for r, c in scan_order(h, w, method):
            x = desc[s][r][c]
            # the spatial prediction P within slice s (section 4)
            if method == "pred_2d":
                if r == 0 and c == 0:
                    p = None
                elif r == 0:
                    p = src[s][r][c - 1]
                elif c == 0:
                    p = src[s][r - 1][c]
                else:
                    a, b, cc = src[s][r][c - 1], src[s][r - 1][c], src[s][r - 1][c - 1]
                    p = b if (similar(cc, a) and not similar(cc, b)) else a
            else:
                p = None if prev is None else src[s][prev[0]][prev[1]]
            prev = (r, c)
            if r == 0 and c == 0:  # (s, 0, 0): always kept
                keep, recon = True, x
            elif s > 0 and similar(x, src[s - 1][r][c]):  # temporal predictor V, checked first
                keep, recon = False, rec[s - 1][r][c]
            elif p is not None and similar(x, p):
                keep = False
                recon = p if anchored else None  # sliding: reconstructions are not used
            else:
                keep, recon = True, x
            rec[s][r][c] = recon if recon is not None else x
            if keep:
                kept.append(s * h * w + r * w + c)
    return sorted(kept)


def reference_select_video(pixel_values_videos, video_grid_thw, *, threshold=0.0, metric="max", method="pred_2d",
                           anchored=None, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)) -> list[list[int]]:
    out, offset = [], 0
    for t, h, w in [tuple(int(v) for v in row) for row in torch.as_tensor(video_grid_thw).tolist()]:
        pv = pixel_values_videos[offset : offset + t * h * w]
        offset += t * h * w
        out.append(reference_select_video_grid(video_descriptors(pv, t, h, w, image_mean, image_std),
                                               threshold, metric, method, anchored))
    return out
