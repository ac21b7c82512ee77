"""Exported repos load with trust_remote_code and nothing but transformers (issue 5).

Every family's tiny checkpoint is exported once; ONE fresh subprocess (``HF_HUB_OFFLINE=1``, the
``pixelprune`` package blocked by a meta-path finder, since the venv has it installed editable)
loads each repo with ``trust_remote_code=True``, runs ``apply_chat_template`` + ``generate`` on a
redundant image (and, where torchvision is installed for the stock video processor, on a typing
video with ``pixelprune_video=True``), and also records what happens without ``trust_remote_code``
and with the stock classes. The tests compare that against the package's own classes run on the base checkpoint
(the oracle) and against the stock classes run on the base.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from images import typing_video
from tiny_models import ARCHITECTURES, FAMILIES

from pixelprune.hub_configs.families import load_families

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 6
PROMPT = "Read the document."

# Runs in the fresh interpreter. argv: a JSON file {family: {"out": ..., "base": ...}}, the image
# path, the folder for the results (one torch file per family) and the video's frame PNGs.
SUBPROCESS_SCRIPT = textwrap.dedent(
    r'''
    import importlib.abc, json, sys

    BLOCKED = {"pixelprune", "processing", "modeling", "hub_configs", "vllm_model"}

    class BlockPixelPrune(importlib.abc.MetaPathFinder):
        """The venv has pixelprune installed: make it (and the repo's top-level folders) unimportable."""
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockPixelPrune())
    try:
        import pixelprune  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("pixelprune is importable: the test would not prove anything")

    import torch
    import transformers
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import is_torchvision_available

    repos = json.load(open(sys.argv[1]))
    image = Image.open(sys.argv[2]).convert("RGB")
    results = sys.argv[3]
    frames = [Image.open(path).convert("RGB") for path in sys.argv[4:]]
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": %(prompt)r}]}]
    video_messages = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": %(prompt)r}]}]

    def run(processor, model, messages=messages, **kwargs):
        inputs = processor.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt", **kwargs
        )
        with torch.no_grad():
            logits = model(**inputs).logits
            generated = model.generate(**inputs, max_new_tokens=%(max_new_tokens)d, do_sample=False)
        return {"inputs": dict(inputs), "logits": logits, "generated": generated}

    for family, paths in repos.items():
        out, base = paths["out"], paths["base"]
        record = {}
        processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True).eval()
        record["remote_classes"] = [type(processor).__module__ + "." + type(processor).__name__,
                                    type(model).__module__ + "." + type(model).__name__]
        record["remote"] = run(processor, model)
        record["stats"] = [(s.kept_tokens, s.total_tokens) for s in processor.last_pruning_stats]
        if is_torchvision_available():  # the stock video processor needs torchvision
            record["remote_video"] = run(processor, model, video_messages, pixelprune_video=True)
            record["video_stats"] = [list(s.kept_per_slice) for s in processor.last_video_pruning_stats]

        # Without trust_remote_code: the processor must refuse, the model loads as stock.
        for flag in (None, False):
            kwargs = {} if flag is None else {"trust_remote_code": flag}
            try:
                AutoProcessor.from_pretrained(out, **kwargs)
                record[f"processor_without_trust_{flag}"] = "loaded"
            except Exception as exc:
                record[f"processor_without_trust_{flag}"] = f"{type(exc).__name__}: {exc}"
        plain = AutoModelForImageTextToText.from_pretrained(out)
        record["model_without_trust"] = type(plain).__module__ + "." + type(plain).__name__

        # The stock classes load the exported repo: same weights as the base, stock behaviour.
        stock_cls = getattr(transformers, paths["stock_architecture"])
        stock_out = stock_cls.from_pretrained(out).eval()
        stock_base = stock_cls.from_pretrained(base).eval()
        record["same_weights"] = all(
            torch.equal(a, b) for a, b in zip(stock_out.state_dict().values(), stock_base.state_dict().values())
        ) and list(stock_out.state_dict()) == list(stock_base.state_dict())
        if is_torchvision_available():  # the stock processor needs torchvision for its video part
            from transformers import Qwen3VLProcessor
            record["stock_out"] = run(Qwen3VLProcessor.from_pretrained(out), stock_out)
            record["stock_base"] = run(Qwen3VLProcessor.from_pretrained(base), stock_base)
        # With the remote processor disabled per call, the remote model is the stock model.
        inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                               return_dict=True, return_tensors="pt", pixelprune_enabled=False)
        with torch.no_grad():
            record["remote_disabled_logits"] = model(**inputs).logits
            record["stock_logits_unpruned"] = stock_base(**inputs).logits
        torch.save(record, f"{results}/{family}.pt")
    '''
) % {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS}


@pytest.fixture(scope="module")
def image_path(document_png) -> Path:
    return document_png


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tiny_export) -> dict[str, dict[str, str]]:
    families = load_families()
    return {
        family: {
            "base": str(tiny_checkpoint(family)),
            "out": str(tiny_export(family)),
            "stock_architecture": families[family].stock_architecture,
        }
        for family in FAMILIES
    }


@pytest.fixture(scope="module")
def video_frames(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("video_frames")
    paths = []
    for i, frame in enumerate(typing_video()):
        paths.append(folder / f"frame_{i}.png")
        frame.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def remote_results(exported, image_path, video_frames, tmp_path_factory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("remote_run")
    (work / "repos.json").write_text(json.dumps(exported))
    (work / "script.py").write_text(SUBPROCESS_SCRIPT)
    results = work / "results"
    results.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXELPRUNE_", "PYTHON"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(work / "hf_home"),
        HF_MODULES_CACHE=str(work / "hf_modules"),
    )
    proc = subprocess.run(
        [sys.executable, "-I", str(work / "script.py"), str(work / "repos.json"), str(image_path), str(results),
         *map(str, video_frames)],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {family: torch.load(results / f"{family}.pt", weights_only=False) for family in exported}


def _package_reference(family: str, base: str, media: Path | list[Path], **kwargs) -> dict:
    """The package's own classes on the base checkpoint: the oracle for the remote code.

    ``media`` is an image path, or a video's frame paths (then ``kwargs`` turn video pruning on).
    """
    from PIL import Image

    import pixelprune.modeling as modeling
    from pixelprune.processing import processing_pixelprune as processors

    spec = load_families()[family]
    processor = getattr(processors, spec.processor_class).from_pretrained(base)
    model = getattr(modeling, spec.architecture).from_pretrained(base).eval()
    if isinstance(media, list):
        item = {"type": "video", "video": [Image.open(path).convert("RGB") for path in media]}
    else:
        item = {"type": "image", "image": Image.open(media).convert("RGB")}
    messages = [{"role": "user", "content": [item, {"type": "text", "text": PROMPT}]}]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt", **kwargs
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return {"inputs": dict(inputs), "logits": logits, "generated": generated}


@pytest.mark.parametrize("family", FAMILIES)
def test_remote_code_loads_without_pixelprune_and_matches_package(family, exported, remote_results, image_path):
    record = remote_results[family]
    spec = load_families()[family]
    processor_cls, model_cls = record["remote_classes"]
    # Loaded from the repo's generated files, not from an installed package.
    assert processor_cls.startswith("transformers_modules.") and processor_cls.endswith(spec.processor_class)
    assert model_cls.startswith("transformers_modules.") and model_cls.endswith(spec.architecture)

    remote = record["remote"]
    keep = remote["inputs"]["image_keep_mask"]
    (kept, total), = record["stats"]
    assert 0 < kept < total == keep.numel(), "the redundant image must be pruned"
    image_token_id = json.loads((Path(exported[family]["out"]) / "config.json").read_text())["image_token_id"]
    assert int((remote["inputs"]["input_ids"] == image_token_id).sum()) == kept == int(keep.sum())

    reference = _package_reference(family, exported[family]["base"], image_path)
    assert set(remote["inputs"]) == set(reference["inputs"])
    for key, value in reference["inputs"].items():
        assert torch.equal(remote["inputs"][key], value), key
    torch.testing.assert_close(remote["logits"], reference["logits"], rtol=0, atol=1e-5)
    assert torch.equal(remote["generated"], reference["generated"])
    assert remote["generated"].shape[1] > remote["inputs"]["input_ids"].shape[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_remote_code_prunes_video_as_the_package_does(family, exported, remote_results, video_frames):
    record = remote_results[family]
    if "remote_video" not in record:
        pytest.skip("the stock Qwen3-VL video processor needs torchvision (not installed)")
    remote = record["remote_video"]
    keep = remote["inputs"]["video_keep_mask"]
    (per_slice,) = record["video_stats"]
    assert len(per_slice) > 1 and 0 < sum(per_slice) == int(keep.sum()) < keep.numel(), "the video must be pruned"
    video_token_id = json.loads((Path(exported[family]["out"]) / "config.json").read_text())["video_token_id"]
    assert int((remote["inputs"]["input_ids"] == video_token_id).sum()) == int(keep.sum())

    reference = _package_reference(family, exported[family]["base"], video_frames, pixelprune_video=True)
    assert set(remote["inputs"]) == set(reference["inputs"])
    for key, value in reference["inputs"].items():
        assert torch.equal(remote["inputs"][key], value), key
    torch.testing.assert_close(remote["logits"], reference["logits"], rtol=0, atol=1e-5)
    assert torch.equal(remote["generated"], reference["generated"])


@pytest.mark.parametrize("family", FAMILIES)
def test_without_trust_remote_code_processor_refuses_and_model_is_stock(family, remote_results):
    record = remote_results[family]
    for flag in (None, False):
        outcome = record[f"processor_without_trust_{flag}"]
        assert outcome.startswith("ValueError") and "trust_remote_code=True" in outcome, outcome
    assert record["model_without_trust"] == (
        f"transformers.models.{family}.modeling_{family}.{ARCHITECTURES[family]}"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_classes_load_exported_repo(family, remote_results):
    record = remote_results[family]
    assert record["same_weights"]
    # Pruning disabled: the remote model is exactly the stock model.
    assert torch.equal(record["remote_disabled_logits"], record["stock_logits_unpruned"])
    if "stock_out" not in record:
        pytest.skip("the stock Qwen3VLProcessor needs torchvision (not installed)")
    stock_out, stock_base = record["stock_out"], record["stock_base"]
    assert "image_keep_mask" not in stock_out["inputs"]
    for key, value in stock_base["inputs"].items():
        assert torch.equal(stock_out["inputs"][key], value), key
    assert torch.equal(stock_out["logits"], stock_base["logits"])
    assert torch.equal(stock_out["generated"], stock_base["generated"])
