"""Selector speed: microseconds per token on real documents and screenshots at 1080p, 1440p and 4K.

For each image: the stock Qwen3-VL image processor makes ``pixel_values`` (and is timed: the
selector's cost is shown as a share of it), then ``pixelprune.select_tokens`` is timed at
threshold 0, anchored threshold 0.02 (metric ``max``) and sliding threshold 0.02, next to the naive
per-token reference of the tests (``tests/reference_selector.py``) on the same input, all in one run.
Times are the best of ``--repeats`` calls (the machine is shared; disturbances only add), wall clock
with torch's default threads; CPU time of the process is recorded too.

Targets (issue 2, on the 2-core CPU machine): threshold 0 <= 2 us/token and <= 10% of the image
processor's time; anchored threshold > 0 <= 4 us/token.

    python benchmarks/make_image_set.py        # once
    python benchmarks/bench_selector.py        # table + benchmarks/results/bench_selector.json
    python benchmarks/bench_selector.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    finish, load_images, machine_info, median, open_rgb, stock_image_processor, time_call,
)

import pixelprune  # noqa: E402

TARGET_T0_US, TARGET_T0_SHARE, TARGET_ANCHORED_US = 2.0, 0.10, 4.0
THRESHOLD = 0.02
MODES = {  # name -> select_tokens kwargs
    "t0": dict(threshold=0.0),
    "anchored": dict(threshold=THRESHOLD, metric="max"),
    "sliding": dict(threshold=THRESHOLD, metric="max", anchored=False),
}
CLASSES = ["1080p", "1440p", "4k", "4k-hidpi"]


def pick(records: list[dict], per_class: int, classes: list[str]) -> list[dict]:
    """Up to ``per_class`` images per (type, resolution), spread over the set (deterministic)."""
    out = []
    for kind in ("documents", "screenshots"):
        for res in classes:
            group = [r for r in records if r["type"] == kind and r["resolution"] == res]
            if group:
                step = max(1, len(group) // per_class)
                out += group[::step][:per_class]
    return out


def top_functions(fn, n: int = 8) -> list[tuple[str, float]]:
    """The ``n`` functions with the most own time (ms) in one profiled call: where the time goes."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]
    return [(f"{Path(k[0]).name}:{k[1]}({k[2]})", v[2] * 1e3) for k, v in top]


def bench_image(rec: dict, proc, repeats: int, reference, ref_modes: list[str], profile: bool) -> dict:
    image = open_rgb(rec["path"])
    proc_wall, proc_cpu, feats = time_call(lambda: proc(images=image, return_tensors="pt"), max(1, repeats // 2))
    pv, grid = feats["pixel_values"], feats["image_grid_thw"]
    tokens = int(grid[0, 1] * grid[0, 2]) // 4
    row = dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
               size=f"{rec['width']}x{rec['height']}", grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}",
               tokens=tokens, processor_us=proc_wall / tokens * 1e6, processor_cpu_us=proc_cpu / tokens * 1e6)
    for mode, kw in MODES.items():
        pixelprune.select_tokens(pv, grid, **kw)  # warm-up (allocator, lazy init)
        wall, cpu, kept = time_call(lambda: pixelprune.select_tokens(pv, grid, **kw), repeats)
        row[f"{mode}_us"] = wall / tokens * 1e6
        row[f"{mode}_cpu_us"] = cpu / tokens * 1e6
        row[f"{mode}_kept"] = int(kept[0].numel())
        if mode in ref_modes:
            ref_wall, _, ref = time_call(lambda: reference(pv, grid, **kw), 1)
            if ref[0] != kept[0].tolist():
                raise AssertionError(f"{rec['path']} {mode}: selector and reference disagree")
            row[f"ref_{mode}_us"] = ref_wall / tokens * 1e6
            row[f"ref_{mode}_speedup"] = ref_wall / wall
        if profile:
            row[f"{mode}_profile"] = top_functions(lambda: pixelprune.select_tokens(pv, grid, **kw))
    row["retention_t0"] = row["t0_kept"] / tokens
    row["t0_share_of_processor"] = row["t0_us"] / row["processor_us"]
    row["t0_cpu_share_of_processor"] = row["t0_cpu_us"] / row["processor_cpu_us"]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["type"], r["resolution"]), []).append(r)
    out = []
    keys = ["tokens", "retention_t0", "t0_us", "t0_cpu_us", "anchored_us", "anchored_cpu_us", "sliding_us",
            "ref_t0_us", "ref_t0_speedup", "processor_cpu_us", "ref_anchored_us", "ref_anchored_speedup", "processor_us",
            "t0_share_of_processor", "t0_cpu_share_of_processor"]
    for (kind, res), rs in groups.items():
        s = dict(type=kind, resolution=res, images=len(rs))
        for k in keys:
            vals = [r[k] for r in rs if k in r]
            s[k] = median(vals) if vals else None
        s["t0_ok"] = "yes" if s["t0_us"] <= TARGET_T0_US and s["t0_share_of_processor"] <= TARGET_T0_SHARE else "NO"
        s["anchored_ok"] = "yes" if s["anchored_us"] <= TARGET_ANCHORED_US else "NO"
        out.append(s)
    return out


COLUMNS = [
    ("type", "type", ""), ("resolution", "res", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"),
    ("retention_t0", "kept@0", ".0%"), ("t0_us", "t0 us/tok", ".2f"), ("anchored_us", "anch 0.02 us/tok", ".2f"),
    ("sliding_us", "slid 0.02 us/tok", ".2f"), ("t0_cpu_us", "t0 CPU us/tok", ".2f"),
    ("anchored_cpu_us", "anch CPU us/tok", ".2f"), ("ref_t0_us", "naive t0 us/tok", ".0f"),
    ("ref_t0_speedup", "naive/t0", ".0f"), ("ref_anchored_speedup", "naive/anch", ".0f"),
    ("processor_us", "processor us/tok", ".1f"), ("processor_cpu_us", "processor CPU us/tok", ".1f"), ("t0_share_of_processor", "t0/processor", ".1%"),
    ("t0_cpu_share_of_processor", "t0/processor CPU", ".1%"),
    ("t0_ok", "t0 target", ""), ("anchored_ok", "anch target", ""),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 image per class, 1080p and 4K only, fewer repeats")
    ap.add_argument("--per-class", type=int, default=3, help="images per (type, resolution)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="result name (default bench_selector[_threadsN])")
    ap.add_argument("--profile", action="store_true", help="record each mode's top functions (cProfile) in the JSON")
    ap.add_argument("--no-reference", action="store_true", help="skip the naive per-token reference")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = ["1080p", "4k"] if args.quick else CLASSES
    per_class, repeats = (1, 3) if args.quick else (args.per_class, args.repeats)

    from tests.reference_selector import reference_select  # the tests' oracle: one naive implementation

    records = pick(load_images(args.quick), per_class, classes)
    if not records:
        sys.exit("error: no documents/screenshots in the image set; run benchmarks/make_image_set.py")
    proc = stock_image_processor()
    info = machine_info()
    print(f"# selector benchmark: {info['cpu']}, {info['cpu_count']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), stock image processor backend: {proc.backend_name}")
    rows = []
    for i, rec in enumerate(records):
        ref_modes = [] if args.no_reference else ["t0", "anchored"]
        rows.append(bench_image(rec, proc, repeats, reference_select, ref_modes, args.profile))
        r = rows[-1]
        print(f"[{i + 1}/{len(records)}] {r['image']} {r['grid']} t0 {r['t0_us']:.2f} us/tok, "
              f"anchored {r['anchored_us']:.2f}, processor {r['processor_us']:.1f}", flush=True)
    name = args.out or ("bench_selector" if not args.threads else f"bench_selector_threads{args.threads}")
    finish(name, summarise(rows), COLUMNS, dict(
        machine=info, processor_backend=proc.backend_name, threshold=THRESHOLD, repeats=repeats,
        targets=dict(t0_us=TARGET_T0_US, t0_share=TARGET_T0_SHARE, anchored_us=TARGET_ANCHORED_US),
        images=rows), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
