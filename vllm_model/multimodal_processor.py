"""vLLM multimodal processor for PixelPrune: same selector and settings as the transformers side.

The stock Qwen3-VL processor of vLLM runs the HF processor on the images alone, then expands each
``<|image_pad|>`` of the prompt to the image's token count. This subclass:

* resolves the :class:`~pixelprune.core.settings.PixelPruneSettings` of the call (checkpoint's
  saved ``pixelprune`` block < ``PIXELPRUNE_*`` env < engine ``--mm-processor-kwargs`` < request
  ``mm_processor_kwargs``; keys ``pixelprune_threshold`` etc.) and keeps those keys away from the
  HF processor;
* runs the shared selector on the processor's ``pixel_values`` and returns ``image_keep_mask``
  as a per-image multimodal field (cached with the item; the processor cache key includes
  ``mm_processor_kwargs``, so a per-request threshold never reuses another's mask);
* when the settings prune videos (``video``, opt-in: ``pixelprune_video: true``), does the same
  for ``pixel_values_videos`` (``video_keep_mask``, a per-video field, ALGORITHM.md section 7);
  without video pruning every video gets an all-kept mask and the stock expansion;
* expands each image to its KEPT token count, and each video slice (between the stock
  ``<t seconds>`` timestamps, built by the stock ``get_video_repl``) to that slice's kept count,
  so prompt length, KV cache and scheduling shrink;
* disables pruning for the profiling dummies (plain white images or static dummy videos would
  prune to a few tokens and under-size the encoder budget);
* logs kept / total image and video tokens per prompt at INFO (logger ``vllm.pixelprune.processor``).

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

from ..core.keep_mask import KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY, KeepMask, tokens_per_image
from ..core.pruning import PatchGeometry, prune_image_batch, prune_video_batch
from ..core.settings import PixelPruneSettings, prefixed, resolve_settings, split_prefixed

from vllm.model_executor.models.qwen3_5 import Qwen3_5MoeProcessingInfo, Qwen3_5ProcessingInfo
from vllm.model_executor.models.qwen3_vl import Qwen3VLMultiModalProcessor, Qwen3VLProcessingInfo
from vllm.model_executor.models.qwen3_vl_moe import Qwen3VLMoeProcessingInfo
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails
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
        if "pixel_values_videos" in processed:
            processed[VIDEO_KEEP_MASK_KEY] = self._video_keep_mask(processed, hf_only, settings)
        return processed

    def _modality_kwargs(self, hf_kwargs: Mapping[str, object], scope: str) -> dict[str, object]:
        """The processor kwargs of this call for one modality (engine + request, flat or under
        ``scope``, ``"images_kwargs"`` / ``"videos_kwargs"``). vLLM normalises on device by default
        (``mm_device_do_normalize``) and then calls the HF processor with ``do_rescale=False,
        do_normalize=False`` for images and videos alike: the pixel values are raw 0..255, which
        the geometry built from these kwargs accounts for."""
        resolved = self.info._merge_and_resolve_mm_processor_kwargs(hf_kwargs)
        kwargs = {k: v for k, v in resolved.items() if not k.endswith("_kwargs")}
        kwargs.update(resolved.get(scope, {}))
        return kwargs

    def _image_keep_mask(
        self, processed: Mapping[str, Any], hf_kwargs: Mapping[str, object], settings: PixelPruneSettings
    ) -> torch.Tensor:
        grid = processed["image_grid_thw"]
        image_processor = self.info.get_image_processor()
        if not settings.enabled:
            return torch.ones(sum(tokens_per_image(grid, image_processor.merge_size)), dtype=torch.bool)
        geometry = PatchGeometry.from_image_processor(image_processor, self._modality_kwargs(hf_kwargs, "images_kwargs"))
        keep_mask, _ = prune_image_batch(_exact_float(processed["pixel_values"]), grid, settings, geometry)
        return keep_mask

    def _video_keep_mask(
        self, processed: Mapping[str, Any], hf_kwargs: Mapping[str, object], settings: PixelPruneSettings
    ) -> torch.Tensor:
        grid = processed["video_grid_thw"]
        video_processor = self.info.get_video_processor()
        if not settings.prunes_videos:
            return torch.ones(sum(tokens_per_image(grid, video_processor.merge_size)), dtype=torch.bool)
        geometry = PatchGeometry.from_image_processor(video_processor, self._modality_kwargs(hf_kwargs, "videos_kwargs"))
        keep_mask, _ = prune_video_batch(_exact_float(processed["pixel_values_videos"]), grid, settings, geometry)
        return keep_mask

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        merge_size = self.info.get_hf_config().vision_config.spatial_merge_size
        for key, modality, grid_key in ((KEEP_MASK_KEY, "image", "image_grid_thw"),
                                        (VIDEO_KEEP_MASK_KEY, "video", "video_grid_thw")):
            grid = hf_inputs.get(grid_key, torch.empty((0, 3), dtype=torch.long))
            fields[key] = MultiModalFieldConfig.flat_from_sizes(
                modality, torch.tensor(tokens_per_image(grid, merge_size), dtype=torch.long)
            )
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[Any]:
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        hf_config = self.info.get_hf_config()
        image_token_id = hf_config.image_token_id
        merge_size = hf_config.vision_config.spatial_merge_size

        def kept_image_tokens(item_idx: int) -> list[int]:
            item = out_mm_kwargs["image"][item_idx]
            if KEEP_MASK_KEY in item:
                count = int(item[KEEP_MASK_KEY].data.sum())
            else:  # precomputed embeddings: nothing was pruned
                count = tokens_per_image(item["image_grid_thw"].data, merge_size)[0]
            return [image_token_id] * count

        def video_replacement(stock: Any) -> Any:
            def kept_video_tokens(item_idx: int) -> Any:
                item = out_mm_kwargs["video"][item_idx]
                if VIDEO_KEEP_MASK_KEY not in item:  # precomputed embeddings: nothing was pruned
                    return stock(item_idx)
                keep = KeepMask.build(item[VIDEO_KEEP_MASK_KEY].data.reshape(-1), item["video_grid_thw"].data,
                                      merge_size, name=VIDEO_KEEP_MASK_KEY)
                if keep.all_kept:
                    return stock(item_idx)
                return self._kept_video_replacement(keep, item["timestamps"].data)

            return kept_video_tokens

        return [
            PromptReplacement(modality="image", target=update.target, replacement=kept_image_tokens)
            if update.modality == "image"
            else PromptReplacement(modality="video", target=update.target, replacement=video_replacement(update.replacement))
            if update.modality == "video"
            else update
            for update in updates
        ]

    def _kept_video_replacement(self, keep: KeepMask, timestamps: Sequence[float] | torch.Tensor) -> PromptUpdateDetails:
        """One pruned video's prompt replacement: the stock timestamps and frame markers
        (``Qwen3VLMultiModalProcessor.get_video_repl``, as vLLM's own EVS uses it) with each
        slice's ``<|video_pad|>`` run at that slice's kept length; the runs are checked against
        the mask, slice by slice, so a count can never drift (rows would be dropped silently)."""
        hf_config = self.info.get_hf_config()
        per_slice = keep.kept_per_frame().tolist()
        if len(timestamps) != len(per_slice):
            raise ValueError(
                f"PixelPrune: a video has {len(timestamps)} timestamps for {len(per_slice)} temporal slices."
            )
        details = Qwen3VLMultiModalProcessor.get_video_repl(
            tokens_per_frame=per_slice,
            timestamps=timestamps,
            tokenizer=self.info.get_tokenizer(),
            vision_start_token_id=hf_config.vision_start_token_id,
            vision_end_token_id=hf_config.vision_end_token_id,
            video_token_id=hf_config.video_token_id,
            select_token_id=True,
        )
        runs = video_slice_runs(details.full, hf_config.vision_start_token_id, hf_config.vision_end_token_id,
                                hf_config.video_token_id)
        if runs != per_slice:
            raise RuntimeError(f"PixelPrune: the video replacement has slice runs {runs}, the mask keeps {per_slice}.")
        return details

    def apply(self, inputs, timing_ctx):
        result = super().apply(inputs, timing_ctx)
        # The profiling dummies (pruning disabled by get_dummy_inputs) are not worth a log line.
        if inputs.hf_processor_mm_kwargs.get(prefixed("enabled")) is not False:
            self._log_kept(result)
        return result

    def _log_kept(self, result: Mapping[str, Any]) -> None:
        merge_size = self.info.get_hf_config().vision_config.spatial_merge_size
        for modality, grid_key in (("image", "image_grid_thw"), ("video", "video_grid_thw")):
            placeholders = result["mm_placeholders"].get(modality, [])
            if not placeholders:
                continue
            kept = [int(p.get_num_embeds()) for p in placeholders]
            # Items the sender-side cache already holds come back as None: their total is unknown.
            totals = [None if item is None else tokens_per_image(item[grid_key].data, merge_size)[0]
                      for item in result["mm_kwargs"].get(modality, [])]
            if all(t is not None for t in totals):
                logger.info(
                    "PixelPrune: %d %s(s), kept %d of %d %s tokens (%s); prompt %d tokens",
                    len(kept), modality, sum(kept), sum(totals), modality,
                    ", ".join(f"{k}/{t}" for k, t in zip(kept, totals)), len(result["prompt_token_ids"]),
                )
            else:
                logger.info(
                    "PixelPrune: %d %s(s), kept %d %s tokens (%s); prompt %d tokens",
                    len(kept), modality, sum(kept), modality, ", ".join(map(str, kept)),
                    len(result["prompt_token_ids"]),
                )


def _exact_float(pixel_values: torch.Tensor) -> torch.Tensor:
    """Raw uint8 pixels (vLLM's on-device normalisation) as float32: exact."""
    return pixel_values if pixel_values.is_floating_point() else pixel_values.to(torch.float32)


def video_slice_runs(token_ids: Sequence[int], vision_start_token_id: int, vision_end_token_id: int,
                     video_token_id: int) -> list[int]:
    """Length of the ``<|video_pad|>`` run between each ``<|vision_start|>`` / ``<|vision_end|>``
    pair holding video tokens (one per temporal slice of every video, in order; a slice always
    keeps at least one token, and image pairs hold none)."""
    runs: list[int] = []
    count: int | None = None
    for token in token_ids:
        if token == vision_start_token_id:
            count = 0
        elif token == vision_end_token_id and count is not None:
            if count:
                runs.append(count)
            count = None
        elif token == video_token_id and count is not None:
            count += 1
    return runs
