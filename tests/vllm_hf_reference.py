"""transformers side of the vLLM parity tests, run in a transformers >= 5.20 venv as a subprocess
(vLLM pins an older transformers).

    python tests/vllm_hf_reference.py build FAMILY OUT_DIR
        Build a tiny checkpoint (tests/tiny_models.py) for FAMILY in OUT_DIR.
    python tests/vllm_hf_reference.py generate REQUEST.json RESULT.json
        REQUEST: {"checkpoint", "family", "max_new_tokens", "cases": [{"prompt", "images": [png
        paths], "videos": [{"path": .npy frames (T, H, W, 3) uint8, "fps"}], "settings":
        {"pixelprune_threshold": ...}}]}. RESULT: one {"kept": [per image], "total": [per image],
        "video_kept": [per video: [per slice]], "video_total": [per video: [per slice]],
        "prompt_len", "tokens": [greedy ids]} per case, from the PixelPrune transformers processor
        and model classes (videos pre-sampled: every frame, ``do_sample_frames=False``).
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
    import numpy as np
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
        videos = [np.load(v["path"]) for v in case.get("videos", [])]
        video_kwargs = {}
        if videos:
            video_kwargs = {"videos": videos, "do_sample_frames": False, "video_metadata": [
                {"fps": v["fps"], "total_num_frames": len(frames), "duration": len(frames) / v["fps"],
                 "frames_indices": list(range(len(frames)))} for v, frames in zip(case["videos"], videos)]}
        inputs = processor(text=[case["prompt"]], images=images or None, return_tensors="pt", **video_kwargs,
                           **case.get("settings", {}))
        grids = inputs["image_grid_thw"].tolist() if images else []
        total = [t * h * w // merge**2 for t, h, w in grids]
        keep = inputs.get("image_keep_mask")
        kept = [int(m.sum()) for m in torch.split(keep, total)] if keep is not None else total
        video_grids = inputs["video_grid_thw"].tolist() if videos else []
        slice_total = [[h * w // merge**2] * t for t, h, w in video_grids]
        video_keep = inputs.get("video_keep_mask")
        video_kept = ([m.view(len(n), -1).sum(-1).tolist() for m, n in zip(torch.split(video_keep, [sum(n) for n in slice_total]), slice_total)]
                      if video_keep is not None else slice_total)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=request["max_new_tokens"], do_sample=False)
        prompt_len = inputs["input_ids"].shape[1]
        results.append({"kept": kept, "total": total, "video_kept": video_kept, "video_total": slice_total,
                        "prompt_len": prompt_len, "tokens": out[0, prompt_len:].tolist()})
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"build": build, "generate": generate}[command](*args)
