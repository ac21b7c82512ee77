"""vLLM multimodal processor for PixelPrune: same selector and settings as the transformers side.

The stock Qwen3-VL processor of vLLM runs the HF processor on the images alone, then expands each
``<|image_pad|>`` of the prompt to the image's token count. This subclass:

* resolves the :class:`~pixelprune.core.settings.PixelPruneSettings` of the call (checkpoint's
  saved ``pixelprune`` block < ``PIXELPRUNE_*`` env < engine ``--mm-processor-kwargs`` < request
  ``mm_processor_kwargs``; keys ``pixelprune_threshold`` etc.) and keeps those keys away from the
  HF processor;
* runs :func:`pixelprune.select_keep_mask` on the processor's ``pixel_values`` and returns
  ``image_keep_mask`` as a per-image multimodal field (cached with the item; the processor cache
  key includes ``mm_processor_kwargs``, so a per-request threshold never reuses another's mask);
* expands each image to its KEPT token count (so prompt length, KV cache and scheduling shrink);
* disables pruning for the profiling dummies (plain white images would prune to one token and
  under-size the encoder budget);
* logs kept / total image tokens per prompt at INFO (logger ``vllm.pixelprune.processor``).

That log line is the observability interface: vLLM 0.32 has no hook for per-request multimodal
statistics other than stage timings (``ObservabilityConfig.enable_mm_processor_stats``, internal,
no CLI flag; the selector is timed inside its ``apply_hf_processor`` stage), and its token
metrics (``vllm:prompt_tokens``, ``vllm:request_prompt_tokens``, ``usage.prompt_tokens``) already
count the kept tokens, since each image is expanded to its kept count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import torch

from ..core.keep_mask import KEEP_MASK_KEY, tokens_per_image
from ..core.pruning import PatchGeometry, prune_image_batch
from ..core.settings import PixelPruneSettings, prefixed, resolve_settings, split_prefixed

from vllm.model_executor.models.qwen3_5 import Qwen3_5MoeProcessingInfo, Qwen3_5ProcessingInfo
from vllm.model_executor.models.qwen3_vl import Qwen3VLMultiModalProcessor, Qwen3VLProcessingInfo
from vllm.model_executor.models.qwen3_vl_moe import Qwen3VLMoeProcessingInfo
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement
from vllm.transformers_utils.repo_utils import get_hf_file_to_dict

logger = logging.getLogger("vllm.pixelprune.processor")

SETTINGS_CONFIG_KEY = "pixelprune"
"""Key of the saved settings block in ``processor_config.json`` / ``preprocessor_config.json``."""
SETTINGS_FILES = ("processor_config.json", "preprocessor_config.json")
"""Where the block is looked up, in order (where the transformers processor saves it, then the legacy file)."""


def saved_settings(model: str, revision: str | None = None) -> PixelPruneSettings:
    """The ``pixelprune`` settings block saved with a checkpoint (defaults when absent).

    ``model`` is what vLLM keeps in ``model_config.model``: a local folder, or a Hub id (vLLM
    substitutes the snapshot path only when offline). The files are read the way vLLM reads the
    model's other config files (``get_hf_file_to_dict``: the folder, else the Hub cache, else a
    download, at ``revision``). Looked up in ``processor_config.json`` then
    ``preprocessor_config.json``; a missing file or block means the built-in defaults (a stock
    checkpoint served under a PixelPrune architecture).
    """
    for name in SETTINGS_FILES:
        config = get_hf_file_to_dict(name, model, revision=revision)
        block = config.get(SETTINGS_CONFIG_KEY) if isinstance(config, Mapping) else None
        if block is not None:
            if not isinstance(block, Mapping):
                where = f"{model}/{name}" + (f" (revision {revision})" if revision else "")
                raise ValueError(f"{where}: {SETTINGS_CONFIG_KEY!r} must be a JSON object, got {block!r}.")
            return PixelPruneSettings.from_dict(block)
    return PixelPruneSettings()


class PixelPruneProcessingInfoMixin:
    """Adds the checkpoint's saved PixelPrune settings to a stock Qwen3-VL processing info."""

    @cached_property
    def pixelprune_defaults(self) -> PixelPruneSettings:
        """Saved settings overridden by ``PIXELPRUNE_*`` environment variables."""
        model_config = self.ctx.model_config
        return resolve_settings(saved_settings(model_config.model, model_config.revision))

    def pixelprune_settings(self, pixelprune_kwargs: Mapping[str, object]) -> PixelPruneSettings:
        """Settings for one call: :func:`~pixelprune.core.settings.resolve_settings` with
        ``pixelprune_kwargs`` (settings by field name, engine-wide ``--mm-processor-kwargs``
        already merged with the request's by vLLM, the request winning) as the top layer."""
        return resolve_settings(self.pixelprune_defaults, call=pixelprune_kwargs)


class PixelPruneQwen3VLProcessingInfo(PixelPruneProcessingInfoMixin, Qwen3VLProcessingInfo):
    pass


class PixelPruneQwen3VLMoeProcessingInfo(PixelPruneProcessingInfoMixin, Qwen3VLMoeProcessingInfo):
    pass


class PixelPruneQwen3_5ProcessingInfo(PixelPruneProcessingInfoMixin, Qwen3_5ProcessingInfo):
    pass


class PixelPruneQwen3_5MoeProcessingInfo(PixelPruneProcessingInfoMixin, Qwen3_5MoeProcessingInfo):
    pass


class PixelPruneQwen3VLMultiModalProcessor(Qwen3VLMultiModalProcessor):
    """Qwen3-VL / Qwen3.5 multimodal processor that prunes images (see the module docstring)."""

    def get_dummy_inputs(self, seq_len, mm_counts, mm_options):
        # Profiling must see full grids: a white dummy would otherwise prune to one token.
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        kwargs = {**inputs.hf_processor_mm_kwargs, prefixed("enabled"): False}
        return dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs)

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        # Engine-wide --mm-processor-kwargs merged with the request's (the request wins).
        merged = self.info.ctx.get_merged_mm_kwargs(hf_kwargs)
        ours, _ = split_prefixed(merged)
        settings = self.info.pixelprune_settings(ours)
        _, hf_only = split_prefixed(hf_kwargs)
        processed = super()._apply_hf_processor_main(mm_items, hf_only)
        if "pixel_values" in processed:
            processed[KEEP_MASK_KEY] = self._image_keep_mask(processed, hf_only, settings)
        return processed

    def _image_keep_mask(
        self, processed: Mapping[str, Any], hf_kwargs: Mapping[str, object], settings: PixelPruneSettings
    ) -> torch.Tensor:
        grid = processed["image_grid_thw"]
        image_processor = self.info.get_image_processor()
        if not settings.enabled:
            return torch.ones(sum(tokens_per_image(grid, image_processor.merge_size)), dtype=torch.bool)
        # The image kwargs of this call (engine + request, flat or under `images_kwargs`). vLLM
        # normalises on device by default (`mm_device_do_normalize`) and then calls the HF
        # processor with do_rescale=False, do_normalize=False: pixel_values are raw 0..255.
        scoped = self.info._merge_and_resolve_mm_processor_kwargs(hf_kwargs)
        image_kwargs = {k: v for k, v in scoped.items() if not k.endswith("_kwargs")}
        image_kwargs.update(scoped.get("images_kwargs", {}))
        geometry = PatchGeometry.from_image_processor(image_processor, image_kwargs)
        pixel_values = processed["pixel_values"]
        if not pixel_values.is_floating_point():  # raw uint8 pixels: exact in float32
            pixel_values = pixel_values.to(torch.float32)
        keep_mask, _ = prune_image_batch(pixel_values, grid, settings, geometry)
        return keep_mask

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        grid = hf_inputs.get("image_grid_thw", torch.empty((0, 3), dtype=torch.long))
        merge_size = self.info.get_hf_config().vision_config.spatial_merge_size
        fields[KEEP_MASK_KEY] = MultiModalFieldConfig.flat_from_sizes(
            "image", torch.tensor(tokens_per_image(grid, merge_size), dtype=torch.long)
        )
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[Any]:
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        image_token_id = self.info.get_hf_config().image_token_id

        def kept_image_tokens(item_idx: int) -> list[int]:
            item = out_mm_kwargs["image"][item_idx]
            if KEEP_MASK_KEY in item:
                count = int(item[KEEP_MASK_KEY].data.sum())
            else:  # precomputed embeddings: nothing was pruned
                merge_size = self.info.get_hf_config().vision_config.spatial_merge_size
                count = tokens_per_image(item["image_grid_thw"].data, merge_size)[0]
            return [image_token_id] * count

        return [
            PromptReplacement(modality="image", target=update.target, replacement=kept_image_tokens)
            if update.modality == "image"
            else update
            for update in updates
        ]

    def apply(self, inputs, timing_ctx):
        result = super().apply(inputs, timing_ctx)
        # The profiling dummies (pruning disabled by get_dummy_inputs) are not worth a log line.
        if inputs.hf_processor_mm_kwargs.get(prefixed("enabled")) is not False:
            self._log_kept(result)
        return result

    def _log_kept(self, result: Mapping[str, Any]) -> None:
        placeholders = result["mm_placeholders"].get("image", [])
        if not placeholders:
            return
        kept = [int(p.length) for p in placeholders]
        merge_size = self.info.get_hf_config().vision_config.spatial_merge_size
        totals = []
        for item in result["mm_kwargs"].get("image", []):
            # Items the sender-side cache already holds come back as None: their total is unknown.
            totals.append(None if item is None else tokens_per_image(item["image_grid_thw"].data, merge_size)[0])
        if all(t is not None for t in totals):
            logger.info(
                "PixelPrune: %d image(s), kept %d of %d image tokens (%s); prompt %d tokens",
                len(kept), sum(kept), sum(totals),
                ", ".join(f"{k}/{t}" for k, t in zip(kept, totals)), len(result["prompt_token_ids"]),
            )
        else:
            logger.info(
                "PixelPrune: %d image(s), kept %d image tokens (%s); prompt %d tokens",
                len(kept), sum(kept), ", ".join(map(str, kept)), len(result["prompt_token_ids"]),
            )
