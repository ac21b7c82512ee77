"""``pixelprune export``: repo layout, generated remote code, idempotency, OUT/BASE safety, model card,
bad BASE errors, Hub download/upload code paths (mocked) and the CLI. Loading the exported repos with
trust_remote_code is tested in ``test_export_remote.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tiny_models import ARCHITECTURES

from pixelprune.cli import main
from pixelprune.hub_configs import exporter, remote_code
from pixelprune.hub_configs.exporter import MARKER, ExportError, export
from pixelprune.hub_configs.families import load_families
from pixelprune.hub_configs.remote_code import RemoteCodeError, flatten_modules, import_violations
from pixelprune.core.settings import PixelPruneSettings

FAMILY = "qwen3_vl"


def tree(folder: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (sha256 of the content, symlink target or None), for every entry of ``folder`` but
    the marker (which records modification times)."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), os.readlink(p) if p.is_symlink() else None)
        for p in sorted(folder.iterdir()) if p.name != MARKER
    }


def full_tree(folder: Path) -> dict[str, tuple[str, int]]:
    """name -> (sha256, mtime_ns), to prove BASE is never modified."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def sample_image(document_png) -> Path:
    return document_png


@pytest.fixture(scope="module")
def base(tiny_checkpoint, tmp_path_factory) -> Path:
    """A writable copy of the tiny Qwen3-VL checkpoint with a base model card carrying a license."""
    path = tmp_path_factory.mktemp("export_base") / "Qwen3-VL-Tiny"
    shutil.copytree(tiny_checkpoint(FAMILY), path)
    (path / "README.md").write_text("---\nlicense: apache-2.0\npipeline_tag: image-text-to-text\n---\n# base\n")
    return path


@pytest.fixture(scope="module")
def exported(base, sample_image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_out") / "repo"
    export(base, out, sample_images=[sample_image], base_model="Qwen/Qwen3-VL-Tiny")
    return out


def test_config_keeps_model_type_and_names_our_classes(base, exported):
    family = load_families()[FAMILY]
    config, base_config = (json.loads((p / "config.json").read_text()) for p in (exported, base))
    assert config["model_type"] == base_config["model_type"] == FAMILY
    assert config["architectures"] == ["PixelPruneQwen3VLForConditionalGeneration"]
    assert config["auto_map"] == {
        "AutoModel": "qwen3_vl.PixelPruneQwen3VLModel",
        "AutoModelForImageTextToText": "qwen3_vl.PixelPruneQwen3VLForConditionalGeneration",
        "AutoModelForMultimodalLM": "qwen3_vl.PixelPruneQwen3VLForConditionalGeneration",
    }
    assert family.auto_map == config["auto_map"]
    # Everything else is the base config, untouched.
    rest = {k: v for k, v in config.items() if k not in ("architectures", "auto_map")}
    assert rest == {k: v for k, v in base_config.items() if k != "architectures"}
    # Every class the auto_map names exists in the generated file it points to.
    for target in config["auto_map"].values():
        module, cls = target.split(".")
        assert f"\nclass {cls}(" in (exported / f"{module}.py").read_text()


def test_processor_config_carries_class_auto_map_and_settings(exported):
    processor = json.loads((exported / "processor_config.json").read_text())
    assert processor["processor_class"] == "PixelPruneQwen3VLProcessor"
    assert processor["auto_map"] == {"AutoProcessor": "processing_pixelprune.PixelPruneQwen3VLProcessor"}
    assert PixelPruneSettings.from_dict(processor["pixelprune"]) == PixelPruneSettings()
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        assert json.loads((exported / name).read_text())["processor_class"] == "PixelPruneQwen3VLProcessor"


def test_tokenizer_chat_template_generation_config_copied_and_weights_linked(base, exported):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (exported / name).read_bytes() == (base / name).read_bytes(), name
        assert not (exported / name).is_symlink()
    weights = exported / "model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (base / "model.safetensors").resolve()
    assert not list(exported.glob("*.py")) or all(p.name in _expected_remote_files() for p in exported.glob("*.py"))


def _expected_remote_files() -> set[str]:
    return {
        "qwen3_vl.py", "transformers_compat.py", "pixelprune_mixin.py", "keep_mask.py", "rope_index.py",
        "mrope_positions.py", "kept_patch_encoding.py", "processing_pixelprune.py", "pruning.py", "selector.py", "settings.py",
        "token_distances.py", "video_selector.py",
    }


def test_remote_files_are_the_package_sources_with_flat_imports(exported):
    files = flatten_modules(["modeling/qwen3_vl.py", "processing/processing_pixelprune.py"])
    assert {f.name for f in files} == _expected_remote_files() == {p.name for p in exported.glob("*.py")}
    siblings = {Path(f.name).stem for f in files}
    for generated in files:
        written = (exported / generated.name).read_text()
        source = remote_code.package_source(generated.source.removeprefix("pixelprune/")).read_text()
        banner, _, body = written.partition("\n")
        assert banner.startswith("# Generated by `pixelprune export`") and generated.source in banner
        # Only the relative import headers differ from the package source.
        for line_out, line_src in zip(body.splitlines(), source.splitlines(), strict=True):
            if line_out != line_src:
                assert line_src.lstrip().startswith("from ..") and line_out.lstrip().startswith("from .")
        assert "from .." not in body
        assert import_violations(body, generated.name, siblings) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nimport torch\nfrom transformers import AutoConfig\nimport numpy as np\n", []),
        ("try:\n    import PIL\nexcept ImportError:\n    PIL = None\n", []),
        ("from .settings import X\n", []),
        ("import PIL\n", ["imports 'PIL'"]),
        ("def f():\n    import yaml\n", ["imports 'yaml'"]),  # transformers checks function-level imports too
        ("from pixelprune.processing import selector\n", ["imports 'pixelprune.processing'"]),
        ("from ..core.selector import X\n", ["relative import ..core.selector"]),
        ("from .unknown import X\n", ["relative import .unknown"]),
    ],
)
def test_import_check(source, expected):
    problems = import_violations(source, "m.py", {"settings"})
    assert len(problems) == len(expected)
    for problem, text in zip(problems, expected):
        assert text in problem and problem.startswith("m.py:")


def test_export_fails_when_a_package_module_breaks_the_remote_code_rules(base, tmp_path, monkeypatch):
    real = remote_code.package_source

    def patched(module_path: str) -> Path:
        if module_path == "core/settings.py":
            bad = tmp_path / "settings.py"
            bad.write_text(real(module_path).read_text() + "\nimport PIL.Image\n")
            return bad
        return real(module_path)

    monkeypatch.setattr(remote_code, "package_source", patched)
    with pytest.raises(RemoteCodeError, match=r"settings\.py:\d+: imports 'PIL\.Image'"):
        flatten_modules(["processing/processing_pixelprune.py"])
    with pytest.raises(ExportError, match="would not load with only transformers installed"):
        export(base, tmp_path / "out", sample_images=[])
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_reexport_is_idempotent_and_base_untouched(base, sample_image, tmp_path):
    before = full_tree(base)
    out = tmp_path / "repo"
    export(base, out, sample_images=[sample_image])
    first = tree(out)
    export(base, out, sample_images=[sample_image])
    assert tree(out) == first
    # A re-export with other options replaces exactly what the previous one wrote.
    export(base, out, sample_images=[sample_image], weights="copy", settings=PixelPruneSettings(threshold=0.05))
    second = tree(out)
    assert second.keys() == first.keys() and not (out / "model.safetensors").is_symlink()
    assert second["model.safetensors"][0] == first["model.safetensors"][0]
    assert json.loads((out / "processor_config.json").read_text())["pixelprune"]["threshold"] == 0.05
    assert full_tree(base) == before


def test_refuses_foreign_non_empty_out_unless_force(base, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="not empty and was not written by pixelprune export.*--force"):
        export(base, out, sample_images=[])
    assert (out / "config.json").read_text() == "{}"
    export(base, out, sample_images=[], force=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "config.json").read_text())["auto_map"]
    export(base, out, sample_images=[])  # now ours: no --force needed


@pytest.mark.parametrize("where", ["same", "inside"])
def test_refuses_out_that_would_touch_base(base, where):
    out = base if where == "same" else base / "pixelprune"
    before = full_tree(base)
    with pytest.raises(ExportError, match="must not be BASE"):
        export(base, out, sample_images=[])
    assert full_tree(base) == before


def test_copy_weights_preserves_sharded_index(tiny_checkpoint, tmp_path):
    from transformers import Qwen3VLForConditionalGeneration

    base = tmp_path / "sharded"
    shutil.copytree(tiny_checkpoint(FAMILY), base, ignore=shutil.ignore_patterns("model.safetensors"))
    Qwen3VLForConditionalGeneration.from_pretrained(tiny_checkpoint(FAMILY)).save_pretrained(base, max_shard_size="1MB")
    shards = sorted(p.name for p in base.glob("model-*.safetensors"))
    assert len(shards) > 1 and (base / "model.safetensors.index.json").is_file()
    out = tmp_path / "out"
    result = export(base, out, weights="copy", sample_images=[])
    assert result.weights_mode == "copy"
    for name in [*shards, "model.safetensors.index.json"]:
        assert not (out / name).is_symlink() and (out / name).read_bytes() == (base / name).read_bytes()
    loaded = Qwen3VLForConditionalGeneration.from_pretrained(out)
    reference = Qwen3VLForConditionalGeneration.from_pretrained(base)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))


def _bad_bases(base: Path, root: Path) -> dict[str, tuple[Path | str, str]]:
    empty = root / "empty"
    empty.mkdir(parents=True)
    llama = root / "llama"
    shutil.copytree(base, llama)
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    no_weights = root / "no_weights"
    shutil.copytree(base, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    lost_shard = root / "lost_shard"
    shutil.copytree(base, lost_shard)
    (lost_shard / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002.safetensors"}}))
    broken = root / "broken"
    shutil.copytree(base, broken)
    (broken / "config.json").write_text("{not json")
    no_tokenizer = root / "no_tokenizer"
    shutil.copytree(base, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "vocab.json"))
    return {
        "missing config": (empty, "has no config.json: it is not a transformers checkpoint folder"),
        "unsupported model type": (
            llama, "model_type 'llama' is not supported by PixelPrune; supported: qwen3_5 (Qwen3.5), "
            "qwen3_5_moe (Qwen3.5-MoE), qwen3_vl (Qwen3-VL), qwen3_vl_moe (Qwen3-VL-MoE)."
        ),
        "missing weights": (no_weights, "has no weights: expected model.safetensors"),
        "missing shard": (lost_shard, "names shard(s) missing from BASE: model-00002.safetensors"),
        "invalid config": (broken, "config.json is not readable JSON"),
        "missing tokenizer": (no_tokenizer, "has no tokenizer"),
        "not a folder nor a hub id": ("./does/not/exist", "no such folder, and it is not a Hub model id"),
        "a file": (base / "config.json", "is a file; pass a checkpoint folder or a Hub model id"),
    }


def test_bad_base_gives_one_clear_error(base, tmp_path, capsys):
    for case, (bad, message) in _bad_bases(base, tmp_path / "bad").items():
        out = tmp_path / "out" / case.replace(" ", "_")
        with pytest.raises(ExportError) as info:
            export(bad, out, sample_images=[])
        assert message in str(info.value), case
        assert not out.exists(), case
        capsys.readouterr()
        assert main(["export", str(bad), str(out)]) == 1, case
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pixelprune export: error: ") and message in lines[0], case


def test_model_card_metadata_parses(exported):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"  # from the base's card
    assert data["base_model"] == "Qwen/Qwen3-VL-Tiny"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-text-to-text"
    assert {"pixelprune", FAMILY}.issubset(data["tags"])
    text = card.text
    assert "https://huggingface.co/Qwen/Qwen3-VL-Tiny" in text
    assert "trust_remote_code=True" in text and "vllm serve" in text and "mm_processor_kwargs" in text
    assert "pixelprune_threshold=" in text and "PIXELPRUNE_THRESHOLD" in text
    assert "$" not in text.replace("$ ", "")  # every template placeholder was filled


def test_card_retention_matches_stock_processor_and_selector(base, exported, sample_image):
    """Oracle: the stock image processor of BASE + the shared selector give the card's numbers."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from pixelprune import select_tokens

    processor = AutoImageProcessor.from_pretrained(base)
    processed = processor(images=[Image.open(sample_image).convert("RGB")], return_tensors="pt")
    grid = processed["image_grid_thw"]
    kept = select_tokens(
        processed["pixel_values"], grid, merge_size=processor.merge_size, patch_size=processor.patch_size,
        temporal_patch_size=processor.temporal_patch_size, image_mean=processor.image_mean, image_std=processor.image_std,
    )[0].numel()
    total = int(grid.prod()) // processor.merge_size**2
    assert 0 < kept < total
    row = f"| {sample_image.name} | {int(grid[0, 2]) * 16} x {int(grid[0, 1]) * 16} | threshold 0 (lossless) | {total} | {kept} | {kept / total:.1%} |"
    assert row in (exported / "README.md").read_text()


def test_default_sample_images_are_measured(base, tmp_path):
    result = export(base, tmp_path / "repo", settings=PixelPruneSettings(threshold=0.02))
    names = [Path(row.image).name for row in next(iter(result.retention.values()))]
    assert names == ["sample_document.png", "sample_screenshot.png"]
    assert list(result.retention) == ["threshold 0.02 (max, anchored)", "threshold 0 (lossless)"]
    # A positive threshold never keeps more than the lossless setting.
    for strict, lossless in zip(*result.retention.values()):
        assert strict.tokens == lossless.tokens and strict.kept <= lossless.kept < lossless.tokens


def test_hub_id_base_is_downloaded_with_snapshot_download(base, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        calls.append((repo_id, kwargs))
        return str(base)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "repo"
    export("Qwen/Qwen3-VL-2B-Instruct", out, sample_images=[])
    assert calls == [("Qwen/Qwen3-VL-2B-Instruct", {"repo_type": "model"})]
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.base_model == "Qwen/Qwen3-VL-2B-Instruct"

    def failing(repo_id: str, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(ExportError, match="'Qwen/Nope'.*downloading it from the Hub failed: offline"):
        export("Qwen/Nope", tmp_path / "nope", sample_images=[])


def test_push_to_hub_creates_repo_and_uploads_without_marker(base, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "repo"
    assert main(["export", str(base), str(out), "--push-to-hub", "me/tiny-pixelprune", "--private"]) == 0
    (create, repo_id, create_kwargs), (upload, upload_kwargs) = calls
    assert (create, repo_id, create_kwargs["private"], create_kwargs["exist_ok"]) == ("create_repo", "me/tiny-pixelprune", True, True)
    assert upload == "upload_folder" and upload_kwargs["folder_path"] == str(out)
    assert upload_kwargs["repo_id"] == "me/tiny-pixelprune" and MARKER in upload_kwargs["ignore_patterns"]
    # The card's snippets use the repo id.
    assert 'from_pretrained("me/tiny-pixelprune", trust_remote_code=True' in (out / "README.md").read_text()


def test_cli_export_settings_and_usage_errors(base, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["export", str(base), str(out), "--threshold", "0.02", "--metric", "mae", "--method", "raster",
                 "--copy-weights", "--sample-images", str(base / "config.json")]) == 0
    settings = json.loads((out / "processor_config.json").read_text())["pixelprune"]
    assert PixelPruneSettings.from_dict(settings) == PixelPruneSettings(threshold=0.02, metric="mae", method="raster")
    assert not (out / "model.safetensors").is_symlink()
    stdout = capsys.readouterr().out
    assert "Exported Qwen3-VL (qwen3_vl)" in stdout and "weights copied" in stdout
    assert main(["export", str(base), str(tmp_path / "x"), "--private"]) == 2
    assert "--private only applies with --push-to-hub" in capsys.readouterr().err
    assert main(["export", str(base), str(tmp_path / "x"), "--metric", "cosine"]) == 2
    assert "Unknown PixelPrune metric 'cosine'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("family", ["qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
def test_other_families_use_their_templates(family, tiny_export):
    out = tiny_export(family)
    spec = load_families()[family]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family and config["architectures"] == [spec.architecture]
    assert spec.stock_architecture == ARCHITECTURES[family]
    assert (out / f"{family}.py").is_file() and (out / "processing_pixelprune.py").is_file()
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["auto_map"]["AutoProcessor"] == f"processing_pixelprune.{spec.processor_class}"


def test_exporter_module_has_no_optional_imports_at_top_level():
    """``pixelprune export --help`` must work without huggingface_hub/tqdm: those load lazily."""
    source = Path(exporter.__file__).read_text()
    top = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top if "huggingface_hub" in line or "tqdm" in line], top
    assert sys.modules["pixelprune.hub_configs.exporter"] is exporter


def test_card_infers_metadata_and_names_no_local_path(tiny_checkpoint, tmp_path, caplog):
    from huggingface_hub import ModelCard

    base = tmp_path / "fine-tuned"
    shutil.copytree(tiny_checkpoint(FAMILY), base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "_name_or_path": "Qwen/Qwen3-VL-2B-Instruct"}))
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# my fine-tune\n")
    out = tmp_path / "out" / "repo"
    with caplog.at_level("WARNING"):
        export(base, out, sample_images=[], repo_id="me/tiny-pixelprune")
    assert not caplog.records  # everything known: nothing to warn about
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "Qwen/Qwen3-VL-2B-Instruct" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "image-text-to-text" and data["library_name"] == "transformers"
    assert {"custom_code", "pixelprune", FAMILY} <= set(data["tags"])
    assert 'repo = "me/tiny-pixelprune"' in card.text
    assert str(tmp_path) not in card.text and "_name_or_path" not in (out / "config.json").read_text()
    assert "pixelprune export Qwen/Qwen3-VL-2B-Instruct repo " in card.text

    caplog.clear()
    bare = tmp_path / "bare"
    shutil.copytree(tiny_checkpoint(FAMILY), bare)
    with caplog.at_level("WARNING"):
        export(bare, tmp_path / "out2" / "repo", sample_images=[])
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "--repo-id" in warned and "--base-model" in warned and "--license" in warned
    card = ModelCard.load(tmp_path / "out2" / "repo" / "README.md")
    assert "license" not in card.data.to_dict() and "base_model" not in card.data.to_dict()
    assert 'repo = "YOUR_HUB_USER/repo"' in card.text and str(tmp_path) not in card.text


def test_card_snippet_is_valid_python_that_needs_no_network(exported):
    import ast
    import re

    text = (exported / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1
    ast.parse(blocks[0])
    assert "http" not in blocks[0] and "Image.new(" in blocks[0]
    # Install instructions that work today; the published form only as "once published".
    assert "pip install ./pixelprune" in text and "python -m build --wheel" in text
    published = [line for line in text.splitlines() if 'pip install "pixelprune[' in line]
    assert published and all(line.startswith("# once pixelprune is published on PyPI: ") for line in published)
    assert "--trust-request-mm-kwargs" in text and "python -m vllm.entrypoints.openai.api_server" in text
    assert "accelerate" in text and "pillow" in text.lower()


def test_card_vit_flops_use_the_models_own_vision_tower(exported, sample_image, base):
    from pixelprune.vit_flops import QWEN3_VL_2B_VISION, VisionTowerConfig, estimate_vit_flops

    tower = VisionTowerConfig.from_vision_config(json.loads((base / "config.json").read_text())["vision_config"])
    assert tower != QWEN3_VL_2B_VISION
    text = (exported / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| {sample_image.name} |"))
    tokens, kept = int(row.split("|")[4]), int(row.split("|")[5])
    own = estimate_vit_flops([4 * tokens], [4 * kept], tower).saved_fraction
    assert row.rstrip(" |").endswith(f"{own:.1%}")
    assert f"depth {tower.depth}, width {tower.hidden_size}" in text and "Qwen3-VL-2B" not in text


def test_export_help_lists_every_setting_option(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for option in ("--threshold", "--metric", "--method", "--anchored", "--sliding", "--repo-id"):
        assert option in help_text
    assert "max, mae, rmse, exact" in help_text


def test_non_finite_threshold_is_refused_and_nothing_written(base, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["export", str(base), str(out), "--threshold", "inf", "--sample-images", str(base / "config.json")]) != 0
    assert "inf" in capsys.readouterr().err.lower()
    assert not out.exists()
    from pixelprune.hub_configs.export_plan import json_bytes

    with pytest.raises(ExportError, match="would not be strict JSON"):
        json_bytes({"threshold": float("inf")}, "processor_config.json")


def test_cli_export_video_setting_is_saved_and_shown_in_the_card(base, tmp_path):
    """`--video` is saved with the repo (the processor then prunes videos by default) and the
    card's settings table shows it; without the flag the saved value stays the default (off)."""
    out = tmp_path / "repo"
    assert main(["export", str(base), str(out), "--video", "--copy-weights",
                 "--sample-images", str(base / "config.json")]) == 0
    saved = json.loads((out / "processor_config.json").read_text())["pixelprune"]
    assert saved["video"] is True and PixelPruneSettings.from_dict(saved).prunes_videos
    assert "| `video` | true |" in (out / "README.md").read_text()
    plain = tmp_path / "plain"
    assert main(["export", str(base), str(plain), "--copy-weights", "--sample-images", str(base / "config.json")]) == 0
    assert json.loads((plain / "processor_config.json").read_text())["pixelprune"]["video"] is False
    assert "| `video` | false |" in (plain / "README.md").read_text()
