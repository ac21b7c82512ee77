"""Retention: how many tokens PixelPrune keeps, per image type, threshold and method.

Every image of the set goes through the stock Qwen3-VL image processor (default settings, native
resolution within its 256^2..4096^2 pixel budget) and ``pixelprune.select_tokens`` with metric
``max`` at several thresholds (0 = lossless; > 0 anchored, the default) for the three methods
(``pred_2d``, ``raster``, ``serpentine``).

Writes ``benchmarks/results/bench_retention.json`` and two plots:
``retention_by_type.png`` (distribution at threshold 0 per image type and resolution) and
``retention_vs_threshold.png`` (mean retention vs threshold, per type and method).

    python benchmarks/bench_retention.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR, benchmark_parser, load_images, machine_info, open_rgb, parse_args, print_table, stock_image_processor,
    write_json,
)

import torch  # noqa: E402

import pixelprune  # noqa: E402

THRESHOLDS = [0.0, 0.01, 0.02, 0.05, 0.1]
QUICK_THRESHOLDS = [0.0, 0.02, 0.1]
METHODS = ["pred_2d", "raster", "serpentine"]
TYPES = ["documents", "screenshots", "photos"]


def measure(rec: dict, proc, thresholds: list[float], device="cpu", dtype=torch.float32) -> dict:
    feats = proc(images=open_rgb(rec["path"]), return_tensors="pt")
    pv, grid = feats["pixel_values"].to(device, dtype), feats["image_grid_thw"]
    tokens = int(grid[0, 1] * grid[0, 2]) // 4
    kept = {m: {str(t): int(pixelprune.select_tokens(pv, grid, threshold=t, method=m)[0].numel())
                for t in thresholds} for m in METHODS}
    return dict(image=Path(rec["path"]).name, type=rec["type"], resolution=rec["resolution"],
                size=f"{rec['width']}x{rec['height']}", grid=f"{int(grid[0, 1]) // 2}x{int(grid[0, 2]) // 2}",
                tokens=tokens, kept=kept)


def summarise(rows: list[dict], thresholds: list[float]) -> list[dict]:
    out = []
    for kind in TYPES:
        rs = [r for r in rows if r["type"] == kind]
        if not rs:
            continue
        total = sum(r["tokens"] for r in rs)
        s = dict(type=kind, images=len(rs), tokens=total)
        for m in METHODS:
            for t in thresholds:
                kept = sum(r["kept"][m][str(t)] for r in rs)
                s[f"{m}@{t:g}"] = kept / total  # token-weighted retention
        ret0 = sorted(r["kept"]["pred_2d"]["0.0"] / r["tokens"] for r in rs)
        s["pred_2d@0 min"], s["pred_2d@0 max"] = ret0[0], ret0[-1]
        s["kept@0"] = sum(r["kept"]["pred_2d"]["0.0"] for r in rs)
        s["flop_x@0"] = total / s["kept@0"]  # tokens (and ~ViT/LLM FLOPs) reduction factor
        out.append(s)
    return out


def plot(rows: list[dict], thresholds: list[float], suffix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    # 1. distribution of retention at threshold 0 per type and resolution class
    groups = {}
    for r in rows:
        groups.setdefault(f"{r['type']}\n{r['resolution']}", []).append(r["kept"]["pred_2d"]["0.0"] / r["tokens"])
    order = ["800p", "1080p", "1440p", "4k", "4k-hidpi", "native"]

    def rank(label: str) -> tuple[int, int, str]:
        kind, res = label.split("\n")
        return TYPES.index(kind), order.index(res) if res in order else len(order), res

    labels = sorted(groups, key=rank)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels)), 4.0))
    ax.boxplot([groups[k] for k in labels], showfliers=False)
    for i, k in enumerate(labels, 1):
        ax.scatter([i] * len(groups[k]), groups[k], s=10, alpha=0.6, color="tab:blue", zorder=3)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel("tokens kept (threshold 0, pred_2d)")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("PixelPrune lossless retention per image type (Qwen3-VL processor defaults)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(RESULTS_DIR / f"retention_by_type{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # 2. retention vs threshold, per type (colour) and method (line style)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    styles = {"pred_2d": "-", "raster": "--", "serpentine": ":"}
    for ci, kind in enumerate(TYPES):
        rs = [r for r in rows if r["type"] == kind]
        if not rs:
            continue
        total = sum(r["tokens"] for r in rs)
        for m in METHODS:
            ys = [sum(r["kept"][m][str(t)] for r in rs) / total for t in thresholds]
            ax.plot(thresholds, ys, styles[m], marker="o", ms=3, color=f"C{ci}", label=f"{kind} / {m}")
    ax.set_xlabel("threshold (max |pixel difference|, [0, 1] units; > 0 anchored)")
    ax.set_ylabel("tokens kept (token-weighted)")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=1, loc="center right")
    ax.set_title("Retention vs threshold")
    fig.tight_layout()
    paths.append(RESULTS_DIR / f"retention_vs_threshold{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, repeats=None, quick_help="2 images per type, 3 thresholds")
    ap.add_argument("--replot", action="store_true", help="redraw the plots from the saved JSON only")
    args = parse_args(ap, argv)  # --device/--dtype: where and in which dtype the selector gets the pixels
    if args.replot:
        import json

        saved = json.loads((RESULTS_DIR / f"bench_retention{'_quick' if args.quick else ''}.json").read_text())
        print("\n".join(str(p) for p in plot(saved["images"], saved["thresholds"], "_quick" if args.quick else "")))
        return 0
    if not args.threads:
        torch.set_num_threads(1)  # counts, not timings: one thread wastes nothing on a shared machine
    thresholds = QUICK_THRESHOLDS if args.quick else THRESHOLDS
    records = load_images(args.quick)
    if args.quick:
        records = [r for kind in TYPES for r in [x for x in records if x["type"] == kind][:2]]
    proc = stock_image_processor()
    rows = []
    for i, rec in enumerate(records):
        rows.append(measure(rec, proc, thresholds, args.device, args.torch_dtype))
        r = rows[-1]
        print(f"[{i + 1}/{len(records)}] {r['image']} {r['grid']}: kept {r['kept']['pred_2d']['0.0']}/{r['tokens']}",
              flush=True)
    summary = summarise(rows, thresholds)
    cols = [("type", "type", ""), ("images", "images", "d"), ("tokens", "tokens", "d"), ("kept@0", "kept@0", "d"),
            ("flop_x@0", "fewer tokens @0", ".1f"), ("pred_2d@0 min", "min", ".0%"), ("pred_2d@0 max", "max", ".0%")]
    cols += [(f"{m}@{t:g}", f"{m} @{t:g}", ".1%") for m in METHODS for t in thresholds
             if m == "pred_2d" or t in (0.0, 0.02)]
    print()
    table = print_table(summary, cols)
    plots = plot(rows, thresholds, "_quick" if args.quick else "")
    path = write_json(args.out or "bench_retention", dict(machine=machine_info(), device=str(args.device),
                                                          dtype=args.dtype, thresholds=thresholds, metric="max",
                                              summary=summary, images=rows, table_markdown=table,
                                              plots=[p.name for p in plots]), args.quick)
    print(f"\nwrote {path} and {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
