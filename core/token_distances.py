"""Token descriptors and the distances between them, as ``docs/ALGORITHM.md`` defines them.

A *token* is one merged ``(merge_size * patch_size)``-pixel square: ``merge_size**2`` consecutive
rows of ``pixel_values``. Its descriptor is the first temporal frame of those rows, de-normalised
(``x * std + mean`` in float32), and the distance between two descriptors is the max, mean or
root-mean-square of their difference.

Two ways to get distances, one answer:

* :func:`gather_distance` computes the spec's formula literally for arbitrary pairs of tokens
  (gather, de-normalise, subtract, reduce). The selector uses it for the few pairs it cannot
  answer otherwise.
* :func:`neighbour_distances` answers "how far is every token from its left and its upper
  neighbour?" in one streaming pass over ``pixel_values`` with no copy: each chunk of tokens is
  subtracted from a strided view that stacks both neighbours, *in the normalised domain*, and
  the reduction is scaled by ``std`` afterwards. That value differs from the spec's float32
  formula only by rounding, which is bounded (see :func:`_decision_window`); the few pairs whose
  value lies within that bound of the threshold are recomputed with :func:`gather_distance`. The
  result is therefore *decision-exact*: ``d <= threshold`` and ``d == 0`` give exactly the spec's
  answers for every pair, ties included, at threshold 0 and above.
* :func:`plane_distances` (videos) adds the temporal neighbour (the same place one slice
  earlier) and copies, rather than computes, the spatial distances of tokens that did not change
  since the previous slice. With ``max`` it takes the rounding-bound route above (magnitudes
  bounded along time as well); ``mae``/``rmse`` take the plain route: each cache-sized chunk is
  de-normalised into scratch (the spec's formula itself), then subtracted and reduced, exact by
  construction. Measured on images (issue #13 item 6, numbers at ``_UNIT_ROUNDOFF``) the plain
  route costs 1.6-1.9x the bounded one with ``max``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GridSpec", "TokenSource", "distance", "gather_distance", "neighbour_distances", "plane_distances"]

# Floats per difference chunk (4 MiB of float32): the chunk stays in L2/L3 while it is reduced;
# measured on a 2-core EPYC VM, 2^19..2^21 are within 5% of each other, smaller chunks pay
# per-operation overhead.
_CHUNK_FLOATS = 1 << 20
_UNIT_ROUNDOFF = 2.0**-24  # float32
_TINY = float(np.finfo(np.float32).smallest_subnormal)
# Issue #13 item 6: the plain route (de-normalise each chunk into scratch, subtract, reduce:
# plane_distances) against the bounds below on images, select_tokens per token, interleaved in
# one process on the same pixel_values (8 benchmark images: documents and screenshots at 1080p
# and 4K; 5 rounds; 1 torch thread; process CPU time; load average 22-27 on the 2-core VM):
# medians of paired new/old ratios per class, threshold 0 max 1.78-1.89x, anchored 0.02 max
# 1.56-1.85x, threshold 0 mae 1.11-1.35x (old 12.9-16.7 us/token CPU under that load). Above the
# 10% the issue allowed: images keep the bounds.


@dataclass(frozen=True)
class GridSpec:
    """How the image processor laid out ``pixel_values`` (Qwen3-VL / Qwen3.5 defaults)."""

    merge_size: int = 2
    temporal_patch_size: int = 2
    patch_size: int = 16
    channels: int = 3

    @property
    def row_width(self) -> int:
        """Columns of ``pixel_values``: C * T * P * P."""
        return self.channels * self.temporal_patch_size * self.patch_size**2

    @property
    def descriptor_size(self) -> int:
        """Values in one token descriptor: merge**2 * C * P * P (first temporal frame)."""
        return self.merge_size**2 * self.channels * self.patch_size**2


class _Scratch(threading.local):
    """Per-thread reusable CPU buffers. Allocating the chunk buffers afresh on every call costs
    page faults whose number depends on the allocator's state (measured: 1.7 vs 4.1 us/token
    for the same call in two processes); reusing them makes the selector's time repeatable."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu":  # CUDA's caching allocator already reuses memory
            return torch.empty(numel, dtype=dtype, device=device)
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            # A normal tensor even when called under `torch.inference_mode()`: an inference tensor
            # could not be written by a later call outside inference mode.
            with torch.inference_mode(False):
                buf = self.buffers[name] = torch.empty(numel, dtype=dtype)
        return buf[:numel]


_SCRATCH = _Scratch()


class TokenSource:
    """One image's (or video's) tokens, read straight from its rows of ``pixel_values`` (never
    copied whole).

    ``slices`` temporal slices of ``grid_h/merge x grid_w/merge`` tokens each, one after another
    (an image has one). ``all_frames``: the descriptor holds every temporal frame of the token
    (video, ALGORITHM.md section 7) instead of the first (image, section 2); values are ordered
    as stored (patch, channel, frame, pixel).
    """

    def __init__(self, image_pixel_values: torch.Tensor, grid_h: int, grid_w: int, *, spec: GridSpec,
                 image_mean: torch.Tensor, image_std: torch.Tensor, index: int = 0, slices: int = 1,
                 all_frames: bool = False, kind: str = "Image") -> None:
        self.index, self.kind = index, kind  # name the image / video in errors
        m2, frames, pp = spec.merge_size**2, spec.temporal_patch_size, spec.patch_size**2
        self.gh, self.gw = grid_h // spec.merge_size, grid_w // spec.merge_size
        self.plane = self.gh * self.gw  # tokens per temporal slice
        self.slices = slices
        self.n = slices * self.plane
        self.channels = spec.channels
        rows = image_pixel_values.reshape(self.n, m2, spec.channels, frames, pp)
        # (tokens, merge^2, C, F * P*P): a view, no copy (strided for the first frame only)
        self.frames = rows.reshape(self.n, m2, spec.channels, frames * pp) if all_frames else rows[:, :, :, 0, :]
        self.d = m2 * spec.channels * self.frames.shape[-1]
        self.std = image_std.to(device=self.frames.device, dtype=torch.float32)
        self.mean = image_mean.to(device=self.frames.device, dtype=torch.float32)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Descriptors (de-normalised, float32) of the tokens in ``index`` as ``(len(index), D)``."""
        desc = self.frames.index_select(0, index).to(torch.float32)  # a new tensor: scale in place
        # x * std + mean, two roundings, exactly as ALGORITHM.md writes it
        return desc.mul_(self.std.view(1, 1, -1, 1)).add_(self.mean.view(1, 1, -1, 1)).reshape(len(index), self.d)

    def denormalise(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Descriptors of tokens ``start..stop-1`` into ``out`` (float32, ``(k, m2, C, F*P*P)``),
        the same two roundings as :meth:`rows`."""
        torch.mul(self.frames[start:stop], self.std.view(1, 1, -1, 1), out=out)
        return out.add_(self.mean.view(1, 1, -1, 1))

    def float_slab(self, start: int, stop: int, buffer: str = "slab") -> torch.Tensor:
        """Tokens ``start..stop-1`` as stored (normalised) in float32, ``(stop - start, m2, C, P*P)``:
        a view for float32 input, else a converted copy in the reused buffer named ``buffer``."""
        view = self.frames[start:stop]
        if view.dtype == torch.float32:
            return view
        out = _SCRATCH.get(buffer, view.numel(), torch.float32, view.device).view(view.shape)
        return out.copy_(view)

    def assert_finite(self) -> None:
        """Raise if any pixel of this image's (video's) descriptors is NaN or inf."""
        if not bool(torch.isfinite(self.frames).all()):
            raise ValueError(f"{self.kind} {self.index} has non-finite pixel values (NaN or inf) in pixel_values.")


def _reduce(diff: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, identical) along the last dimension of the differences ``diff`` (overwritten).

    ``mae``'s mean is its sum divided by D (what torch's CPU mean computes, bit for bit; written
    out so every device and route rounds alike), and that sum is 0 exactly when every
    difference is; squares of tiny differences underflow, so ``rmse`` checks identity apart."""
    if metric == "max":
        value = diff.abs_().amax(dim=-1)
        return value, value == 0
    if metric == "mae":
        total = diff.abs_().sum(dim=-1)
        return total / diff.shape[-1], total == 0
    if metric == "rmse":
        identical = diff.abs_().amax(dim=-1) == 0
        return diff.square_().sum(dim=-1).div_(diff.shape[-1]).sqrt_(), identical
    raise ValueError(f"Unknown PixelPrune metric {metric!r}; allowed: 'max', 'mae', 'rmse'.")


def distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance between descriptors along the last dimension, in float32.

    ``max``: max |a - b|; ``mae``: mean |a - b|; ``rmse``: sqrt(mean((a - b)^2)).
    """
    return _reduce(a.to(torch.float32) - b.to(torch.float32), metric)[0]


def gather_distance(src: TokenSource, i: np.ndarray, j: np.ndarray, metric: str) -> np.ndarray:
    """The spec's distance d(token i, token j) for index arrays, chunked; float32 numpy."""
    out = np.empty(len(i), dtype=np.float32)
    step = max(1, _CHUNK_FLOATS // src.d)
    device = src.frames.device
    ti = torch.from_numpy(np.ascontiguousarray(i, dtype=np.int64)).to(device)
    tj = torch.from_numpy(np.ascontiguousarray(j, dtype=np.int64)).to(device)
    for s in range(0, len(i), step):
        k = len(ti[s : s + step])
        both = src.rows(torch.cat([ti[s : s + step], tj[s : s + step]]))  # one gather for both sides
        out[s : s + step] = distance(both[:k], both[k:], metric).cpu().numpy()
    return out


def _reduce_pairs(src: TokenSource, start: int, stop: int, offsets: tuple[int, ...], metric: str,
                  out: torch.Tensor) -> None:
    """Raw per-channel reductions for the tokens ``x`` in ``start..stop-1`` (normalised domain),
    written to ``out`` of shape ``(k, slots, C)``. Slot ``j < len(offsets)``: for the pair
    (x, y = x - offsets[j]), max |x - y| (``max``), sum |x - y| (``mae``) or sum (x - y)^2
    (``rmse``) over the channel's values. For ``mae``/``rmse`` a last slot holds max |x| (the
    rounding bound's magnitude, taken while the chunk is in cache; ``max`` derives it from the
    differences instead, see :func:`_magnitude_bounds`)."""
    lo = start - max(offsets)
    slab = src.float_slab(lo, stop)
    x = slab[start - lo :]
    k, j = stop - start, len(offsets)
    t0, *inner = slab.stride()
    # neighbour j of token start + r is slab token (start - offsets[j] - lo) + r; the offsets are
    # (gw, 1) or a single one, so the neighbours of one token are evenly spaced in the slab
    spacing = (offsets[0] - offsets[1]) * t0 if j == 2 else 0
    neighbours = torch.as_strided(
        slab, (k, j, *x.shape[1:]), (t0, spacing, *inner), slab.storage_offset() + (start - offsets[0] - lo) * t0
    )
    slots = j + (metric != "max")
    work = _SCRATCH.get("diff", k * slots * src.d, torch.float32, x.device).view(k, slots, *x.shape[1:])
    diff = work[:, :j]
    torch.sub(x.unsqueeze(1), neighbours, out=diff)
    # out's last dimension: one column per channel, or one for all channels (uniform std)
    uniform = out.shape[-1] == 1
    target, over = (out[..., 0], (2, 3)) if uniform else (out, 2)
    if metric == "max":
        torch.amax(diff.abs_().amax(dim=-1), dim=over, out=target)
        return
    torch.abs(x, out=work[:, j])
    if metric == "mae":
        diff.abs_()
    else:
        diff.square_()
    torch.sum(diff.sum(dim=-1), dim=over, out=target[:, :j])
    torch.amax(work[:, j].amax(dim=-1), dim=(1, 2) if uniform else 1, out=target[:, j])


def _magnitude_bounds(first: np.ndarray, raw_h: np.ndarray, raw_v: np.ndarray) -> np.ndarray:
    """Upper bounds on max |x| per token and channel from token 0's magnitude and the per-channel
    max |x - y| of neighbour pairs (metric ``max``): |x| <= |y| + |x - y| along a path of
    neighbours, taken down the first column then along each row, and along the first row then
    down each column; the smaller of the two. ``(gh, gw, C)`` float64 inputs, float64 output.

    Rounded float32 differences understate |x - y| by at most a factor (1 + u); the slack factor
    covers that over any path length this grid can have."""
    h = np.where(np.isfinite(raw_h), raw_h, np.inf)  # an overflowed difference bounds nothing
    v = np.where(np.isfinite(raw_v), raw_v, np.inf)
    h[:, 0] = 0.0  # no left neighbour
    v[0] = 0.0  # no upper neighbour
    col0 = first + np.cumsum(v[:, :1], axis=0)  # down the first column
    by_rows = col0 + np.cumsum(h, axis=1)
    row0 = first + np.cumsum(h[:1], axis=1)  # along the first row
    by_cols = row0 + np.cumsum(v, axis=0)
    gh, gw = raw_h.shape[:2]
    return np.minimum(by_rows, by_cols) * (1 + 4 * (gh + gw) * _UNIT_ROUNDOFF)


def _decision_window(metric: str, approx: np.ndarray, tau: float, bound: np.ndarray, d: int) -> np.ndarray:
    """Where the approximate distance cannot decide ``<= tau`` (or ``== 0``): True = recompute.

    The spec computes ``fl(fl(x*s) + m)`` per value, subtracts and reduces in float32; the
    approximation subtracts normalised values, reduces and scales. With u = 2^-24 and
    ``bound`` >= |x*s| + |x*s + m| for every value of the pair, each de-normalised difference is within
    2.01*u*bound + 1.01*u*|d| of ``s * (x - y)``; float32 sums of D terms add at most D*u
    relative error (either order). The windows below are those bounds, doubled:

    * max:  |exact - approx| <= 2.01 u B + 3.1 u max(exact, approx)
    * mae:  ... + (D + 270) u max(exact, approx)
    * rmse: decided on mean squares Q against tau^2, |Q_exact - Q_approx| <= 2.01 u B
      (2 sqrt(Q) + 2.01 u B) + (D + 310) u Q, plus 8 u tau^2 for the final square root.
    """
    u = _UNIT_ROUNDOFF
    a = approx.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if metric == "max":
            w = 8 * u * bound + 16 * u * (a + tau)
            far = np.abs(a - tau) > w
        elif metric == "mae":
            w = 8 * u * bound + (2 * d + 64) * u * (a + tau)
            far = np.abs(a - tau) > w
        else:  # rmse: approx holds mean squares here
            w = 8 * u * bound * (2 * (np.sqrt(a) + tau) + 8 * u * bound) + (2 * d + 64) * u * (a + tau * tau)
            w += 8 * u * tau * tau
            far = np.abs(a - tau * tau) > w
        far &= w > 0
    return ~far  # NaN/inf approximations (overflow) are never "far": recomputed


def neighbour_distances(src: TokenSource, metric: str, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """``H[r, c]`` = d(token(r, c), token(r, c-1)) and ``V[r, c]`` = d(token(r, c), token(r-1, c)),
    float32 numpy ``(gh, gw)``, +inf where the neighbour does not exist.

    Decision-exact (see the module docstring): ``H <= tau`` and ``H == 0`` are the spec's
    answers; values near ``tau`` are the spec's exact distances. Raises ``ValueError`` if the
    image has non-finite pixels.
    """
    gh, gw, n = src.gh, src.gw, src.n
    device = src.frames.device
    std = src.std.double().abs().cpu().numpy()
    # with one std for all channels (Qwen: 0.5) the scale is common: reduce channels together
    c = 1 if bool((std == std[0]).all()) else src.channels
    std = std[:c]
    measure_mag = metric != "max"  # max derives magnitudes from the differences
    # raw[i, 0]: token i vs the token above, raw[i, 1]: vs the token on its left (at c == 0: the
    # previous row's last token, ignored); raw[i, 2]: max |x| (mae/rmse)
    raw = torch.zeros((n, 3 if measure_mag else 2, c), dtype=torch.float32, device=device)
    first = src.frames[0].float().abs().amax(dim=(0, 2)).amax(dim=0, keepdim=c == 1)  # max |x| of token 0
    if measure_mag:
        raw[0, -1] = first
    # tokens 1..gw-1 have a left neighbour only; tokens gw.. have both (only the upper one when
    # gw == 1): the chunks of the main segment write their rows of ``raw`` in place
    segments = [(1, min(gw, n), (1,)), (gw, n, (gw, 1) if gw > 1 else (gw,))]
    for start, stop, offsets in segments:
        slots = len(offsets) + measure_mag
        chunk = max(1, _CHUNK_FLOATS // (slots * src.d))
        direct = slots == raw.shape[1]
        for s in range(start, stop, chunk):
            e = min(stop, s + chunk)
            out = raw[s:e] if direct else torch.empty((e - s, slots, c), dtype=torch.float32, device=device)
            _reduce_pairs(src, s, e, offsets, metric, out)
            if not direct:  # one neighbour: into its slot (0: upper, 1: left)
                raw[s:e, 0 if offsets[0] == gw else 1] = out[:, 0]
                if measure_mag:
                    raw[s:e, -1] = out[:, -1]
    raw_np = raw.cpu().numpy()
    pairs = raw_np[:, :2]
    if metric == "max":
        # NaN/inf pixels make every difference they take part in non-finite, and every token is
        # in a pair; finite overflow is legal (those pairs are recomputed below)
        if not np.isfinite(pairs).all():
            src.assert_finite()
        first = first.cpu().numpy().astype(np.float64)
        grid = pairs.reshape(gh, gw, 2, c).astype(np.float64)
        mag = _magnitude_bounds(first, grid[:, :, 1], grid[:, :, 0]).reshape(n, c)
    else:
        mag = raw_np[:, 2]
        if not np.isfinite(mag).all():
            src.assert_finite()  # raises: every pixel is in some token's magnitude
    # per token: >= |x*s| + |x*s + m| for each of its values
    token_bound = 2 * (mag * std).max(axis=1) + float(src.mean.double().abs().max())
    if metric == "max":
        approx = (pairs * std.astype(np.float32)).max(axis=2)
    else:
        scale = std / src.d if metric == "mae" else std * std / src.d
        with np.errstate(over="ignore"):
            approx = (pairs * scale.astype(np.float32)).sum(axis=2)
    identical = pairs.max(axis=2) == 0  # all differences zero: the descriptors are equal
    tokens = np.arange(n)
    neighbour = np.stack([tokens - gw, tokens - 1], axis=1)
    defined = np.stack([tokens >= gw, tokens % gw > 0], axis=1)
    bound = np.maximum(token_bound[:, None], token_bound[np.maximum(neighbour, 0)])
    recompute = _decision_window(metric, approx, tau, bound, src.d) & ~identical & defined
    value = np.sqrt(approx) if metric == "rmse" else approx
    # a non-identical pair never reads as 0 (its scaled value may underflow)
    value = np.where(identical, np.float32(0), np.maximum(value, np.finfo(np.float32).smallest_subnormal))
    value = value.astype(np.float32)
    at = np.nonzero(recompute)
    if len(at[0]):
        value[at] = gather_distance(src, tokens[at[0]], neighbour[at], metric)
    value[~defined] = np.inf
    return value[:, 1].reshape(gh, gw), value[:, 0].reshape(gh, gw)


def _stored_slab(src: TokenSource, start: int, stop: int, plain: bool, name: str) -> torch.Tensor:
    """Tokens ``start..stop-1`` in float32: de-normalised (``plain``, the spec's values) or as
    stored (a view for float32 input), in the reused buffer ``name``."""
    if plain:
        buf = _SCRATCH.get(name, (stop - start) * src.d, torch.float32, src.frames.device)
        return src.denormalise(start, stop, buf.view(stop - start, *src.frames.shape[1:]))
    return src.float_slab(start, stop, name)


def _video_reduce(diff: torch.Tensor, metric: str, plain: bool, channels: int, value: torch.Tensor,
                  same: torch.Tensor | None) -> None:
    """Reduce the differences ``diff`` ``(k, slots, merge^2, C, F*P*P)`` (overwritten) into ``value``
    ``(k, slots, channels)``: per-channel max |d| of stored values (``channels`` 1: over all
    channels), or (``plain``) the spec's distance, ``same`` set where the descriptors are identical."""
    if plain:
        v, ident = _reduce(diff.flatten(2), metric)
        value[..., 0] = v
        same.copy_(ident)
        return
    if channels == 1:
        torch.amax(diff.abs_().amax(dim=-1), dim=(2, 3), out=value[..., 0])
    else:
        torch.amax(diff.abs_().amax(dim=-1), dim=2, out=value)


def plane_distances(src: TokenSource, metric: str, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every token's distance to its left (``H``), upper (``V``) and temporal (``T``: the same
    place one slice earlier) neighbour, float32 numpy ``(slices, gh, gw)``, +inf where that
    neighbour does not exist (``T`` everywhere in slice 0).

    Decision-exact like :func:`neighbour_distances`: ``<= tau`` is the spec's answer for every
    pair, and a value 0 means identical descriptors (a spec 0). One streaming pass, position chunks outer and slices inner (a chunk
    of slice s-1 is still in cache for the temporal difference of slice s). Two savings:

    * Temporal short cut: a token of slice s identical to slice s-1's at its place (every stored
      value equal; found by the temporal difference, which is always taken), with its left and
      upper neighbours also unchanged, has slice s-1's spatial distances, copied instead of
      computed: same descriptors, same distances. Spatial differences are taken over the runs of
      the other tokens only, so a static screen costs one temporal difference per token after
      slice 0, and a scrolled page with blank margins skips the margins.
    * ``max`` takes :func:`neighbour_distances`' rounding-bound route: differences of the stored
      values, scaled by ``std``, exact recompute (:func:`gather_distance`) where
      :func:`_decision_window` cannot decide. Magnitudes: :func:`_magnitude_bounds` within slice
      0, then |x_s| <= |x_(s-1)| + |x_s - x_(s-1)| along time. ``mae``/``rmse`` de-normalise each
      chunk first (the spec's formula itself: exact, no windows).

    Raises ``ValueError`` if a descriptor has non-finite pixels.
    """
    gh, gw, plane, slices = src.gh, src.gw, src.plane, src.slices
    device, tail = src.frames.device, src.frames.shape[1:]
    plain = metric != "max"
    std = src.std.double().abs().cpu().numpy()
    # with one std for all channels (Qwen: 0.5) the bounded route reduces channels together
    c = 1 if plain or bool((std == std[0]).all()) else src.channels
    std = std[:c]
    # raw[s, p, k]: k = 0 vs the token above, 1 vs the token on the left, 2 vs one slice earlier;
    # per-channel max |x - y| of stored values, or (plain) the distance and same: identical
    raw = torch.zeros((slices, plane, 3, c), dtype=torch.float32, device=device)
    same = torch.zeros((slices, plane, 3), dtype=torch.bool, device=device) if plain else None
    spatial = np.zeros((slices, plane), dtype=bool)  # spatial distances computed here, else copied
    # host views of the temporal results (CPU: no copy) to decide, per chunk, what changed
    host_raw = raw.numpy() if device.type == "cpu" else None
    host_same = same.numpy() if plain and device.type == "cpu" else None

    def moved(s: int, lo: int, p1: int) -> np.ndarray:  # changed since slice s-1 (NaN counts)
        if plain:
            return ~(host_same[s, lo:p1, 2] if host_same is not None else same[s, lo:p1, 2].cpu().numpy())
        t = host_raw[s, lo:p1, 2] if host_raw is not None else raw[s, lo:p1, 2].cpu().numpy()
        return t.any(axis=-1)
    # position 0: the temporal difference only; 1..gw-1: a left neighbour; gw..: both (only the
    # upper one if gw == 1)
    segments = [(0, 1, ()), (1, min(gw, plane), (1,)), (gw, plane, (gw, 1) if gw > 1 else (gw,))]
    for start, stop, offsets in segments:
        j, reach = len(offsets), max(offsets, default=0)
        first_slot = 0 if j and offsets[0] == gw else 1  # slots first_slot .. first_slot + j - 1
        chunk = max(1, _CHUNK_FLOATS // ((j + 1) * src.d))
        for p0 in range(start, stop, chunk):
            p1 = min(stop, p0 + chunk)
            lo, k = p0 - reach, p1 - p0
            prev = None
            for s in range(slices):
                slab = _stored_slab(src, s * plane + lo, s * plane + p1, plain, f"slab{s % 2}")
                x = slab[p0 - lo :]
                if s:
                    diff = _SCRATCH.get("diff", k * src.d, torch.float32, device).view(k, 1, *tail)
                    torch.sub(x, prev, out=diff[:, 0])
                    _video_reduce(diff, metric, plain, c, raw[s, p0:p1, 2:3],
                                  same[s, p0:p1, 2:3] if plain else None)
                prev = x
                if not j:
                    continue
                runs = [(p0, p1)]
                if s:  # only where a token or its left or upper neighbour changed since slice s-1
                    changed = moved(s, lo, p1)
                    need = changed[p0 - lo :] | changed[p0 - lo - 1 : p1 - lo - 1]
                    if reach > 1:
                        need |= changed[:k]
                    runs = _runs(need, p0)
                for a, b in runs:
                    spatial[s, a:b] = True
                    t0, *inner = slab.stride()
                    # neighbour i of position a + r is slab row (a - offsets[i] - lo) + r
                    spacing = (offsets[0] - offsets[1]) * t0 if j == 2 else 0
                    neighbours = torch.as_strided(slab, (b - a, j, *tail), (t0, spacing, *inner),
                                                  slab.storage_offset() + (a - offsets[0] - lo) * t0)
                    diff = _SCRATCH.get("diff", (b - a) * j * src.d, torch.float32, device).view(b - a, j, *tail)
                    torch.sub(slab[a - lo : b - lo].unsqueeze(1), neighbours, out=diff)
                    _video_reduce(diff, metric, plain, c, raw[s, a:b, first_slot : first_slot + j],
                                  same[s, a:b, first_slot : first_slot + j] if plain else None)
    pos = np.arange(plane)
    defined = np.zeros((slices, plane, 3), dtype=bool)
    defined[:, :, 0], defined[:, :, 1], defined[1:, :, 2] = pos >= gw, pos % gw > 0, True
    spatial[0] = True  # slice 0 is always computed
    computed = defined.copy()
    computed[:, :, :2] &= spatial[:, :, None]
    raw_np = raw.cpu().numpy()
    if plane == 1 or not np.isfinite(raw_np).all():
        # NaN/inf pixels: the first slice where a value is non-finite has it in a computed pair
        # (slice 0: every token is in a spatial pair; later: the temporal difference with a value
        # that was not); finite overflow is legal (bounded route: recomputed below)
        src.assert_finite()
    if plain:
        value = np.where(same.cpu().numpy(), np.float32(0), np.maximum(raw_np[..., 0], np.float32(_TINY)))
    else:
        value = _bounded_video_values(src, raw_np, std, computed, tau)
    value[~defined] = np.inf
    for s in range(1, slices):  # copies, in slice order (slice s-1 is final by now)
        copy = ~spatial[s]
        value[s, copy, :2] = value[s - 1, copy, :2]
    h, v, t = (value[:, :, i].reshape(slices, gh, gw) for i in (1, 0, 2))
    return h, v, t


def _runs(need: np.ndarray, offset: int, gap: int = 8) -> list[tuple[int, int]]:
    """The runs of True in ``need`` as ``(start, stop)`` + ``offset``, runs fewer than ``gap`` apart
    merged (a torch call per run costs more than a few tokens' differences)."""
    if not need.any():
        return []
    if need.all():
        return [(offset, offset + len(need))]
    edges = np.flatnonzero(np.diff(np.concatenate([[False], need, [False]]).astype(np.int8)))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and a - runs[-1][1] < gap:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(a + offset, b + offset) for a, b in runs]


def _bounded_video_values(src: TokenSource, raw: np.ndarray, std: np.ndarray, computed: np.ndarray,
                          tau: float) -> np.ndarray:
    """:func:`plane_distances`' ``max`` values ``(slices, plane, 3)`` float32 from the per-channel
    raw differences of stored values: identical pairs 0, pairs the rounding bound cannot decide
    recomputed exactly, the rest scaled (uncomputed entries: anything, overwritten by the caller)."""
    gh, gw, plane, slices = src.gh, src.gw, src.plane, src.slices
    c = raw.shape[-1]
    first = src.frames[0].float().abs().amax(dim=(0, 2))  # per-channel max |x| of token 0
    first = (first.amax(dim=0, keepdim=True) if c == 1 else first).double().cpu().numpy()
    grid0 = raw[0].astype(np.float64).reshape(gh, gw, 3, c)
    mag = np.empty((slices, plane, c))
    mag[0] = _magnitude_bounds(first, grid0[:, :, 1], grid0[:, :, 0]).reshape(plane, c)
    for s in range(1, slices):  # |x_s| <= |x_(s-1)| + |x_s - x_(s-1)|, the rounded difference's (1 + u) covered
        step = raw[s, :, 2].astype(np.float64)
        mag[s] = (mag[s - 1] + np.where(np.isfinite(step), step, np.inf)) * (1 + 4 * _UNIT_ROUNDOFF)
    # per token: >= |x*s| + |x*s + m| for each of its values
    token_bound = (2 * (mag * std).max(axis=2) + float(src.mean.double().abs().max())).reshape(-1)
    approx = (raw * std.astype(np.float32)).max(axis=3)
    identical = raw.max(axis=3) == 0
    tokens = np.arange(slices * plane).reshape(slices, plane)
    neighbour = np.stack([tokens - gw, tokens - 1, tokens - plane], axis=2)
    bound = np.maximum(token_bound.reshape(slices, plane, 1), token_bound[np.maximum(neighbour, 0)])
    recompute = _decision_window("max", approx, tau, bound, src.d) & ~identical & computed
    # a non-identical pair never reads as 0 (its scaled value may underflow)
    value = np.where(identical, np.float32(0), np.maximum(approx, np.float32(_TINY))).astype(np.float32)
    at = np.nonzero(recompute)
    if len(at[0]):
        value[at] = gather_distance(src, tokens[at[0], at[1]], neighbour[at], "max")
    return value
