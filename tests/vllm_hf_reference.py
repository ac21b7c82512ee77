"""transformers side of the vLLM parity tests, run in a transformers >= 5.20 venv as a subprocess
(vLLM pins an older transformers).

    python tests/vllm_hf_reference.py build FAMILY OUT_DIR
        Build a tiny checkpoint (tests/tiny_models.py) for FAMILY in OUT_DIR.
    python tests/vllm_hf_reference.py generate REQUEST.json RESULT.json
        REQUEST: {"checkpoint", "family", "max_new_tokens", "cases": [{"prompt", "images": [png
        paths], "settings": {"pixelprune_threshold": ...}}]}. RESULT: one {"kept": [per image],
        "total": [per image], "prompt_len", "tokens": [greedy ids]} per case, from the PixelPrune
        transformers processor and model classes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

_CLASSES = {
    "qwen3_vl": ("PixelPruneQwen3VLProcessor", "PixelPruneQwen3VLForConditionalGeneration"),
    "qwen3_vl_moe": ("PixelPruneQwen3VLProcessor", "PixelPruneQwen3VLMoeForConditionalGeneration"),
    "qwen3_5": ("PixelPruneQwen3_5Processor", "PixelPruneQwen3_5ForConditionalGeneration"),
    "qwen3_5_moe": ("PixelPruneQwen3_5Processor", "PixelPruneQwen3_5MoeForConditionalGeneration"),
}


def build(family: str, out_dir: str) -> None:
    from tiny_models import build_tiny_checkpoint

    build_tiny_checkpoint(family, out_dir)


def generate(request_path: str, result_path: str) -> None:
    import torch
    from PIL import Image

    import pixelprune.modeling as modeling
    import pixelprune.processing.processing_pixelprune as processors

    request = json.loads(Path(request_path).read_text())
    processor_name, model_name = _CLASSES[request["family"]]
    processor = getattr(processors, processor_name).from_pretrained(request["checkpoint"])
    model = getattr(modeling, model_name).from_pretrained(request["checkpoint"], dtype=torch.float32).eval()
    merge = processor.image_processor.merge_size
    results = []
    for case in request["cases"]:
        images = [Image.open(p).convert("RGB") for p in case["images"]]
        inputs = processor(text=[case["prompt"]], images=images or None, return_tensors="pt", **case.get("settings", {}))
        grids = inputs["image_grid_thw"].tolist() if images else []
        total = [t * h * w // merge**2 for t, h, w in grids]
        keep = inputs.get("image_keep_mask")
        kept = [int(m.sum()) for m in torch.split(keep, total)] if keep is not None else total
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=request["max_new_tokens"], do_sample=False)
        prompt_len = inputs["input_ids"].shape[1]
        results.append({"kept": kept, "total": total, "prompt_len": prompt_len, "tokens": out[0, prompt_len:].tolist()})
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"build": build, "generate": generate}[command](*args)
