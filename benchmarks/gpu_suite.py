"""GPU validation suite: correctness on the device, then stock vs PixelPrune speed at real widths.

One command, offline, on a GPU machine (about 3-4 minutes on an H200)::

    python benchmarks/gpu_suite.py --device cuda --dtype bfloat16

1. **Correctness on the device** (tiny random checkpoints of ``tests/tiny_models.py``, ``--dtype``,
   ``--attn``; the oracles are the test suite's own helpers, computed in float32 on the CPU):

   * ``selector``: the keep mask of the benchmark images' pixel values on the device equals the CPU one;
   * ``<family> pruned``: the PixelPrune model on document images equals the oracle (Qwen3-VL: the
     stock model with pruned tokens masked as attention keys, ``masked_stock_logits``; Qwen3.5: the
     stock model on the shorter sequence, ``shorter_sequence_oracle``), one prompt and a left-padded
     batch of two. Tolerance: 4x the error of the *stock* model in ``--dtype`` on the device against
     the same stock model in float32 on the CPU (what the dtype alone costs), at least 2e-5 + 1e-4 of
     the logits' scale; the check also asserts the oracle is discriminating (the unmasked stock
     model differs from it by more than the tolerance);
   * ``<family> nothing prunable``: on noise images (every token kept) the PixelPrune class equals the
     stock class bit for bit on the device, logits and 8 greedy tokens, one prompt and a left-padded batch.

2. **Speed** at the real Qwen3-VL-2B and Qwen3.5-2B widths and FULL depth (random weights, built on
   the device in ``--dtype``), on the benchmark documents and screenshots: selector (CPU, where the
   processor runs it), ViT, LLM prefill (``bench_prefill.bench_image``: stock and PixelPrune calls
   interleaved) and end-to-end ``generate`` (``--max-new-tokens``, selector included for PixelPrune),
   timed with CUDA events, next to the FLOP-ideal speed-up of ViT + prefill.

Writes one JSON (``benchmarks/results/gpu_suite[_<device>].json`` or ``--json``), prints one table,
and exits 1 when a correctness check failed.

**What the GPU machine lacks is carried.** The project's GPU machine has torch (CUDA) and
transformers 5.17 (below the supported >=5.19), no package registry and a 64 MiB limit on what is
sent with the working tree. ``--prepare`` (run it where pip can download, with the transformers
5.24 test environment's python) writes ``benchmarks/gpu_carry/`` (ignored by git, ~25 MB): the
wheels of transformers 5.24 and the versions of its runtime dependencies that transformers checks at
import (tokenizers, huggingface-hub, safetensors, regex for Python 3.10-3.14, typer), pytest (the
oracles live in test modules) and a few benchmark images. Send that folder along; at start-up the
suite installs what is missing with ``pip install --no-index --no-deps --target
benchmarks/gpu_carry/site`` (nothing outside the folder is touched) and puts it first on
``sys.path``; pixelprune itself is imported from the working tree (a package of symlinks mapping
the repository's folders, as pyproject's package-dir does, when it is not installed).

On a GPU machine with pip access none of that is needed: ``pip install -e '.[transformers]'``
(plus ``flash-attn`` for ``--attn flash_attention_2``) and run the command.

CPU mode (CI, ``tests/test_gpu_suite.py``): ``--device cpu --dtype float32 --tiny`` runs the same
checks and the same measurement code at tiny widths in seconds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TESTS_DIR = REPO_ROOT / "tests"
CARRY_DIR = BENCH_DIR / "gpu_carry"
SUPPORTED_TRANSFORMERS = (5, 19)
# What is carried, at the LOWEST versions transformers 5.24 accepts (it checks tokenizers,
# huggingface-hub, safetensors and regex at import), so that what the machine has is kept
# whenever it is new enough: a carried wheel is installed only where the installed version is
# missing or older. pytest: the oracles live in test modules.
CARRIED = {"transformers": "5.24.0", "tokenizers": "0.23.1", "huggingface-hub": "1.31.0", "safetensors": "0.8.0",
           "regex": "2025.10.22", "typer": "0.20.0", "pytest": "8.4.2", "pluggy": "1.6.0", "iniconfig": "2.1.0"}
PYTHONS = ("3.11", "3.12", "3.13", "3.14")  # transformers 5.24 needs >= 3.11; regex has one wheel per version
CARRIED_IMAGES_PER_TYPE = 2

sys.path.insert(0, str(BENCH_DIR))


# ------------------------------------------------------------------------------------------------
# carrying what the GPU machine lacks
# ------------------------------------------------------------------------------------------------


def prepare(carry: Path) -> None:
    """Download the wheels and copy the benchmark images into ``carry`` (needs pip access)."""
    wheels = carry / "wheels"
    shutil.rmtree(carry, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), "--only-binary=:all:",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64"]
    pins = [f"{name}=={version}" for name, version in CARRIED.items()]
    for python in PYTHONS:  # for manylinux x86_64 (the GPU machine) whatever this machine is
        subprocess.run(pip + ["--python-version", python, *pins], check=True)
    images = _source_images(quick=False)
    picked = []
    for rec in images:
        if rec["type"] in ("documents", "screenshots") and rec["resolution"] in ("1080p", "native", "sample") \
                and sum(r["type"] == rec["type"] for r in picked) < CARRIED_IMAGES_PER_TYPE:
            target = carry / "images" / rec["type"] / Path(rec["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rec["path"], target)
            picked.append(dict(rec, path=str(target.relative_to(carry / "images"))))
    (carry / "images" / "manifest.json").write_text(json.dumps(picked, indent=1))
    size = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    print(f"wrote {carry}: {len(list(wheels.glob('*.whl')))} wheels, {len(picked)} images, {size / 2**20:.1f} MiB")


def _transformers_version() -> tuple[int, int] | None:
    try:
        parts = importlib.metadata.version("transformers").split(".")
        return int(parts[0]), int(parts[1])
    except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
        return None


def _outdated(carried: dict[str, str]) -> list[str]:
    """The carried distributions that are missing here or older than the carried version."""
    from packaging.version import Version

    names = []
    for name, version in carried.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            names.append(name)
            continue
        if Version(installed) < Version(version):
            names.append(name)
    return names


def ensure_environment(carry: Path) -> list[str]:
    """Make transformers >= 5.19, pytest and pixelprune importable (before any of them is imported).

    Returns notes on what was done. Installs carried wheels (``pip install --no-index --no-deps
    --target <carry>/site``) only when transformers is too old or pytest is missing, and then only
    the distributions missing or older than carried.
    """
    notes = []
    site = carry / "site"
    needs_transformers = (_transformers_version() or (0, 0)) < SUPPORTED_TRANSFORMERS
    needs_pytest = importlib.util.find_spec("pytest") is None
    if (needs_transformers or needs_pytest) and not site.exists():
        if not (carry / "wheels").is_dir():
            found = _transformers_version()
            raise SystemExit(
                f"gpu_suite: transformers {'.'.join(map(str, found)) if found else 'missing'} (need >= 5.19) or pytest "
                f"missing, and no carried wheels in {carry / 'wheels'}: run `python benchmarks/gpu_suite.py --prepare` "
                "where pip can download, or `pip install -e '.[transformers]' pytest`."
            )
        wanted = {k: v for k, v in CARRIED.items() if needs_transformers or k in ("pytest", "pluggy", "iniconfig")}
        install = [f"{name}=={wanted[name]}" for name in _outdated(wanted)]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links",
                        str(carry / "wheels"), "--target", str(site), *install], check=True)
        notes.append(f"installed carried wheels into {site}: {' '.join(install)}")
    if site.exists():
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
        importlib.invalidate_caches()
        notes.append(f"using {site}")
    if importlib.util.find_spec("pixelprune") is None or importlib.util.find_spec("pixelprune.core") is None:
        sys.path.insert(0, str(_package_farm()))
        notes.append("pixelprune imported from the working tree (symlink package)")
    return notes


def _package_farm() -> Path:
    """A folder holding ``pixelprune/`` assembled from the repository's folders by symlinks, as
    pyproject's ``[tool.setuptools.package-dir]`` maps them (``pixelprune.core`` = ``core/``, ...)."""
    import re

    farm = Path(tempfile.mkdtemp(prefix="pixelprune_pkg_"))
    text = (REPO_ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    mapping = dict(re.findall(r'^"([\w.]+)"\s*=\s*"([\w./-]+)"', section, flags=re.M))
    root = farm / "pixelprune"
    root.mkdir()
    for entry in (REPO_ROOT / mapping.pop("pixelprune")).iterdir():
        (root / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        (root / package.split(".", 1)[1]).symlink_to(REPO_ROOT / folder)
    return farm


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------


def _source_images(quick: bool, carry: Path | None = None) -> list[dict]:
    """Benchmark image records: the carried ones, else the image set, else the repo's sample images."""
    from common import load_images

    if carry is not None and (carry / "images" / "manifest.json").exists():
        return load_images(quick, carry / "images")
    try:
        return load_images(quick)
    except FileNotFoundError:
        from PIL import Image

        records = []
        for path, kind in ((REPO_ROOT / "assets" / "sample_document.png", "documents"),
                           (REPO_ROOT / "assets" / "sample_screenshot.png", "screenshots")):
            with Image.open(path) as im:
                records.append(dict(path=str(path), type=kind, resolution="sample", width=im.width, height=im.height))
        return records


# ------------------------------------------------------------------------------------------------
# correctness
# ------------------------------------------------------------------------------------------------


def _check(name: str, passed: bool, **detail) -> dict:
    status = "ok" if passed else "FAILED"
    print(f"  [{status}] {name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in detail.items()), flush=True)
    return dict(name=name, passed=bool(passed), **detail)


def _to(batch: dict, device, dtype) -> dict:
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in batch.items()}


def _compare(name: str, ours: list, oracle: list, naive: list, noise: float) -> dict:
    """ours / oracle / naive: per-prompt float32 CPU logits at the surviving positions."""
    err = max(float((a - b).abs().max()) for a, b in zip(ours, oracle, strict=True))
    naive_err = max(float((a - b).abs().max()) for a, b in zip(naive, oracle, strict=True))
    scale = max(float(b.abs().max()) for b in oracle)
    tol = max(4 * noise, 2e-5 + 1e-4 * scale)
    return _check(name, err <= tol < naive_err, max_err=err, tol=tol, dtype_noise=noise, unmasked_err=naive_err)


def check_selector(records: list[dict], device, max_pixels: int) -> dict:
    import torch

    from common import open_rgb, stock_image_processor

    import pixelprune

    proc = stock_image_processor()
    mismatched, tokens = [], 0
    for rec in records:
        feats = proc(images=open_rgb(rec["path"]), return_tensors="pt",
                     size={"shortest_edge": 65536, "longest_edge": max_pixels})
        cpu = pixelprune.select_keep_mask(feats["pixel_values"], feats["image_grid_thw"])
        on_device = pixelprune.select_keep_mask(feats["pixel_values"].to(device), feats["image_grid_thw"].to(device))
        tokens += cpu.numel()
        if not torch.equal(on_device.cpu(), cpu):
            mismatched.append(Path(rec["path"]).name)
    return _check(f"selector on {device} == CPU", not mismatched, images=len(records), tokens=tokens,
                  mismatched=",".join(mismatched) or "none")


def checks_qwen3_vl(work: Path, device, dtype, attn: str) -> list[dict]:
    import torch
    import transformers

    from images import uint8_noise_image, word_page_image
    from model_oracles import (
        ORACLE_ATTENTION, build_inputs, masked_stock_logits, register_oracle_attention, stock_inputs_for,
    )
    from tiny_models import build_tiny_checkpoint, build_tiny_tokenizer

    from pixelprune.modeling import PixelPruneQwen3VLForConditionalGeneration as Ours

    path = build_tiny_checkpoint("qwen3_vl", work / "qwen3_vl")
    tokenizer = build_tiny_tokenizer("qwen3_vl")
    stock_cls = transformers.Qwen3VLForConditionalGeneration
    ours = Ours.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device).eval()
    stock = stock_cls.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device).eval()
    reference = stock_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    register_oracle_attention()
    oracle = stock_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    oracle.model.visual.config._attn_implementation = ORACLE_ATTENTION
    prompts = [["Read ", word_page_image(224, 160, seed=0), " and ", word_page_image(160, 128, seed=1), " please."],
               ["Short ", word_page_image(192, 128, seed=2), "?"]]
    results = []
    with torch.no_grad():
        singles = [build_inputs(tokenizer, [p]) for p in prompts]
        batch = build_inputs(tokenizer, prompts, padding_side="left")
        ours_rows, oracle_rows, naive_rows, noise = [], [], [], 0.0
        batch_logits = ours(**_to(batch, device, dtype)).logits.float().cpu()
        for i, single in enumerate(singles):
            full, survives = stock_inputs_for(single, tokenizer)
            oracle_rows.append(masked_stock_logits(oracle, full, survives, single["image_keep_mask"]))
            full_ref = reference(**full).logits[0]
            naive_rows.append(full_ref[survives])
            noise = max(noise, float((stock(**_to(full, device, dtype)).logits[0].float().cpu() - full_ref).abs().max()))
            ours_rows.append(ours(**_to(single, device, dtype)).logits[0].float().cpu())
        results.append(_compare("qwen3_vl pruned == masked oracle", ours_rows, oracle_rows, naive_rows, noise))
        valid = batch["attention_mask"].bool()
        results.append(_compare("qwen3_vl pruned, left-padded batch == masked oracle",
                                [batch_logits[i][valid[i]] for i in range(len(prompts))], oracle_rows, naive_rows,
                                noise))
        results += _nothing_prunable("qwen3_vl", ours, stock, [
            build_inputs(tokenizer, [["Look ", uint8_noise_image(160, 128, seed=3), " here."]]),
            build_inputs(tokenizer, [["Look ", uint8_noise_image(160, 128, seed=3), " here."], [uint8_noise_image(96, 64, seed=4), "?"]],
                         padding_side="left")], device, dtype)
    return results


def _nothing_prunable(family: str, ours, stock, batches: list[dict], device, dtype) -> list[dict]:
    import torch

    results = []
    for batch in batches:
        assert bool(batch["image_keep_mask"].all()), "noise images must keep every token"
        label = "one prompt" if batch["input_ids"].shape[0] == 1 else "left-padded batch"
        inputs = _to(batch, device, dtype)
        stock_inputs = {k: v for k, v in inputs.items() if k != "image_keep_mask"}
        logits_equal = torch.equal(ours(**inputs).logits, stock(**stock_inputs).logits)
        kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
        tokens_equal = torch.equal(ours.generate(**inputs, **kwargs), stock.generate(**stock_inputs, **kwargs))
        results.append(_check(f"{family} nothing prunable == stock ({label})", logits_equal and tokens_equal,
                              logits_equal=logits_equal, greedy_tokens_equal=tokens_equal))
    return results


def checks_qwen3_5(work: Path, device, dtype, attn: str) -> list[dict]:
    import torch

    import test_modeling_qwen3_5 as t35
    from images import document_image, noise_image
    from tiny_models import build_tiny_checkpoint

    path = build_tiny_checkpoint("qwen3_5", work / "qwen3_5")
    fam = t35.Family("qwen3_5", path)  # float32 CPU stock + ours: the oracle side
    ours = fam.our_cls.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device).eval()
    stock = fam.stock_cls.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device).eval()
    prompts = [(t35.DOC_PROMPT, t35.doc_images()),
               ([t35.TEXT_B, 0, t35.TEXT_C], [document_image(160, 128, seed=5)])]
    results = []
    with torch.no_grad():
        singles = [t35.model_inputs(fam, segments, images) for segments, images in prompts]
        ours_rows, oracle_rows, naive_rows, noise = [], [], [], 0.0
        for (segments, images), single in zip(prompts, singles):
            oracle_rows.append(t35.shorter_sequence_oracle(fam, segments, images).logits[0])
            full = t35.model_inputs(fam, segments, images, prune=False)
            _, _, survives = t35.build_sequence(fam, segments, full["image_grid_thw"], single["image_keep_mask"],
                                                prune=False)
            full_ref = fam.stock(**full).logits[0]
            naive_rows.append(full_ref[survives])
            noise = max(noise, float((stock(**_to(full, device, dtype)).logits[0].float().cpu() - full_ref).abs().max()))
            ours_rows.append(ours(**_to(single, device, dtype)).logits[0].float().cpu())
        results.append(_compare("qwen3_5 pruned == shorter-sequence oracle", ours_rows, oracle_rows, naive_rows, noise))
        batch = t35.left_pad_batch(fam, singles)
        batch_logits = ours(**_to(batch, device, dtype)).logits.float().cpu()
        valid = batch["attention_mask"].bool()
        results.append(_compare("qwen3_5 pruned, left-padded batch == shorter-sequence oracle",
                                [batch_logits[i][valid[i]] for i in range(len(prompts))], oracle_rows, naive_rows,
                                noise))
        noise_prompts = [(t35.DOC_PROMPT, [noise_image(128, 96, seed=3), noise_image(96, 64, seed=4)]),
                         ([t35.TEXT_C, 0], [noise_image(64, 64, seed=6)])]
        noise_singles = [t35.model_inputs(fam, s, i) for s, i in noise_prompts]
        results += _nothing_prunable("qwen3_5", ours, stock, [noise_singles[0], t35.left_pad_batch(fam, noise_singles)],
                                     device, dtype)
    return results


# ------------------------------------------------------------------------------------------------
# speed
# ------------------------------------------------------------------------------------------------


def measure_family(family: str, records: list[dict], args) -> list[dict]:
    import torch

    from bench_models import FULL_DEPTH, make_inputs
    from bench_prefill import bench_image
    from common import interleaved, median, open_rgb, stock_image_processor

    import pixelprune

    vit_depth, llm_layers = (1, 2) if args.tiny else FULL_DEPTH[family]
    model, config = bench_models_build(family, vit_depth, llm_layers, args)
    proc = stock_image_processor()
    rows = []
    # warm-up (lazy initialisation, allocator, kernel selection) on the smallest image, not recorded
    bench_image(min(records, key=lambda r: r["width"] * r["height"]), family, model, config, proc, 1, args.max_pixels,
                args.clock)
    for rec in records:
        row = bench_image(rec, family, model, config, proc, args.repeats, args.max_pixels, args.clock)
        feats = proc(images=open_rgb(rec["path"]), return_tensors="pt",
                     size={"shortest_edge": 65536, "longest_edge": args.max_pixels})
        keep = pixelprune.select_keep_mask(feats["pixel_values"], feats["image_grid_thw"])
        pv = feats["pixel_values"].to(model.device, model.dtype)
        generate = {}
        for name, mask in (("stock", None), ("pixelprune", keep)):
            inputs = {k: v.to(model.device) for k, v in make_inputs(
                family, feats["image_grid_thw"], keep.numel() if mask is None else int(keep.sum())).items()}
            inputs["pixel_values"] = pv
            if mask is not None:
                inputs["image_keep_mask"] = mask
            generate[name] = (lambda inputs=inputs: model.generate(
                **inputs, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False))
        with torch.inference_mode():
            timed = interleaved(generate, args.repeats, device=model.device)
        row["stock_generate_ms"] = median(timed["stock"][args.clock]) * 1e3
        row["pixelprune_generate_ms"] = row["selector_ms"] + median(timed["pixelprune"][args.clock]) * 1e3
        row["generate_speedup"] = row["stock_generate_ms"] / row["pixelprune_generate_ms"]
        row["family"] = family
        rows.append(row)
        print(f"  {family} {row['image']} {row['grid']} kept {row['retention']:.0%}: ViT x{row['vit_speedup']:.2f}, "
              f"prefill x{row['llm_speedup']:.2f}, sel+ViT+prefill x{row['model_speedup']:.2f} "
              f"(FLOP-ideal x{row['ideal_model_speedup']:.2f}), generate x{row['generate_speedup']:.2f}", flush=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def bench_models_build(family: str, vit_depth: int, llm_layers: int, args):
    from bench_models import build_model

    return build_model(family, vit_depth, llm_layers, args.attn, device=args.device, dtype=args.torch_dtype,
                       tiny=args.tiny)


TIMING_KEYS = ("tokens", "retention", "selector_ms", "stock_vit_ms", "pixelprune_vit_ms", "stock_llm_ms",
               "pixelprune_llm_ms", "vit_speedup", "llm_speedup", "model_speedup", "ideal_model_speedup",
               "model_vs_ideal", "stock_generate_ms", "pixelprune_generate_ms", "generate_speedup")
COLUMNS = [
    ("family", "model", ""), ("type", "type", ""), ("images", "n", "d"), ("tokens", "tokens", ".0f"),
    ("retention", "kept", ".0%"), ("selector_ms", "selector ms", ".1f"),
    ("stock_vit_ms", "ViT stock ms", ".1f"), ("pixelprune_vit_ms", "ViT PP ms", ".1f"),
    ("stock_llm_ms", "prefill stock ms", ".1f"), ("pixelprune_llm_ms", "prefill PP ms", ".1f"),
    ("model_speedup", "sel+ViT+prefill x", ".2f"), ("ideal_model_speedup", "FLOP-ideal x", ".2f"),
    ("model_vs_ideal", "of ideal", ".0%"), ("stock_generate_ms", "generate stock ms", ".0f"),
    ("pixelprune_generate_ms", "generate PP ms", ".0f"), ("generate_speedup", "generate x", ".2f"),
]


def summarise(rows: list[dict]) -> list[dict]:
    from common import median

    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        for kind in ("documents", "screenshots"):
            rs = [r for r in rows if r["family"] == family and r["type"] == kind]
            if rs:
                out.append(dict(family=family, type=kind, images=len(rs),
                                **{k: median([r[k] for r in rs]) for k in TIMING_KEYS}))
    return out


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from common import benchmark_parser

    ap = benchmark_parser(__doc__, repeats=3, measure=True, per_type=2, max_pixels=16777216,
                          quick_help="1 image per type and 2 rounds")
    ap.add_argument("--tiny", action="store_true", help="tiny widths and depth for the speed part (CPU mode, CI)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="generated tokens in the end-to-end timing")
    ap.add_argument("--families", nargs="+", default=["qwen3_vl", "qwen3_5"], help="models of the speed part")
    ap.add_argument("--carry", type=Path, default=CARRY_DIR, help="carried wheels and images (see --prepare)")
    ap.add_argument("--prepare", action="store_true", help="download the wheels and copy the images into --carry")
    ap.add_argument("--json", type=Path, default=None, help="result path (default benchmarks/results/gpu_suite_<device>.json)")
    raw = ap.parse_args(argv)
    if raw.prepare:
        prepare(raw.carry)
        return 0
    notes = ensure_environment(raw.carry)
    sys.path.insert(1, str(TESTS_DIR))
    from common import RESULTS_DIR, machine_info, parse_args, print_table

    args = parse_args(ap, argv)
    if args.quick:
        args.per_type, args.repeats = 1, 2
    import torch
    import transformers

    start = time.perf_counter()
    info = machine_info()
    # Qwen3.5's linear attention runs transformers' PyTorch fallback without these kernels (slower)
    info["linear_attention_kernels"] = {name: importlib.util.find_spec(name) is not None
                                        for name in ("fla", "causal_conv1d")}
    print(f"# GPU suite: {info.get('gpu', info['cpu'])}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {args.dtype} on {args.device}, {args.attn}, {args.clock} clock"
          + "".join(f"\n# {n}" for n in notes), flush=True)
    records = [r for r in _source_images(args.quick, args.carry) if r["type"] in ("documents", "screenshots")]
    records = [r for kind in ("documents", "screenshots") for r in [x for x in records if x["type"] == kind][:args.per_type]]
    print("correctness:", flush=True)
    checks = [check_selector(records, args.device, args.max_pixels)]
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as work:
        checks += checks_qwen3_vl(Path(work), args.device, args.torch_dtype, args.attn)
        checks += checks_qwen3_5(Path(work), args.device, args.torch_dtype, args.attn)
    print("speed:", flush=True)
    rows = []
    for family in args.families:
        rows += measure_family(family, records, args)
    summary = summarise(rows)
    print()
    table = print_table(summary, COLUMNS)
    passed = all(c["passed"] for c in checks)
    print(f"\ncorrectness: {sum(c['passed'] for c in checks)}/{len(checks)} checks passed"
          + ("" if passed else ": FAILED " + "; ".join(c["name"] for c in checks if not c["passed"])))
    payload = dict(
        suite="gpu_suite", device=str(args.device), dtype=args.dtype, attn=args.attn, clock=args.clock,
        tiny=args.tiny, widths="tiny" if args.tiny else "real (Qwen3-VL-2B, Qwen3.5-2B), full depth, random weights",
        max_pixels=args.max_pixels, repeats=args.repeats, max_new_tokens=args.max_new_tokens,
        machine=dict(info, transformers=transformers.__version__), environment_notes=notes,
        checks=checks, all_passed=passed, summary=summary, table_markdown=table, images=rows,
        elapsed_s=time.perf_counter() - start,
    )
    path = args.json or RESULTS_DIR / f"gpu_suite_{args.device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path} in {payload['elapsed_s']:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
