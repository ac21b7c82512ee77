"""PixelPrune processors for Qwen3-VL / Qwen3-VL-MoE and Qwen3.5 / Qwen3.5-MoE.

They run the stock processing, select the kept tokens of every image with the shared selector,
emit each image's ``<|image_pad|>`` run at its *kept* length and return ``image_keep_mask``
(docs/DESIGN.md) next to the stock keys. With pruning disabled the output is exactly the stock one.

Videos are pruned only when the ``video`` setting is on (``pixelprune_video=True``,
``PIXELPRUNE_VIDEO=1``; ``docs/ALGORITHM.md`` section 7): the processor then returns
``video_keep_mask`` next to ``pixel_values_videos`` and writes every temporal slice's
``<|video_pad|>`` run at its kept length, the stock timestamps between the slices untouched.

Settings precedence (lowest to highest, :func:`pixelprune.core.settings.resolve_settings`):
defaults < the ``pixelprune`` block saved in ``processor_config.json`` (constructor argument
``pixelprune={...}``) < ``PIXELPRUNE_*`` environment variables < explicit ``pixelprune_<name>=...``
arguments of the constructor / ``from_pretrained`` < per-call ``pixelprune_<name>=...`` keyword
arguments of ``__call__`` / ``apply_chat_template``.

Statistics of the latest call are in ``processor.last_pruning_stats`` (one
:class:`ImagePruningStats` per image) and ``processor.last_video_pruning_stats`` (one
:class:`VideoPruningStats` per pruned video) and are logged by ``pixelprune.core.pruning``
(INFO with ``verbose=True`` / ``PIXELPRUNE_VERBOSE=1``, DEBUG otherwise).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from typing import Any

import torch
from transformers import Qwen3VLProcessor
from transformers.utils import is_torchvision_available

from ..core.keep_mask import KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY, kept_tokens_per_image
from ..core.pruning import ImagePruningStats, PatchGeometry, VideoPruningStats, prune_image_batch, prune_video_batch
from ..core.settings import PixelPruneSettings, pop_prefixed, resolve_settings
from ..core.video_selector import video_kept_per_slice

logger = logging.getLogger(__name__)

# Settings of the call in progress: set by __call__ / apply_chat_template, read by
# _process_images (the stock call chain gives no other way to hand them down). A context
# variable keeps concurrent calls from different threads apart.
_CALL_SETTINGS: contextvars.ContextVar[PixelPruneSettings | None] = contextvars.ContextVar(
    "pixelprune_call_settings", default=None
)


def _coerce_settings(value: PixelPruneSettings | Mapping[str, Any] | None) -> PixelPruneSettings:
    if isinstance(value, PixelPruneSettings):
        return value
    if value is None or isinstance(value, Mapping):
        return PixelPruneSettings.from_dict(value)
    raise ValueError(
        f"pixelprune={value!r} is invalid; pass a dict of settings or a PixelPruneSettings."
    )


class PixelPruneQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` that prunes redundant image tokens (also serves Qwen3-VL-MoE).

    Extra constructor arguments:
        pixelprune: saved settings (dict or :class:`PixelPruneSettings`); round-trips through
            ``save_pretrained`` / ``from_pretrained`` as the ``pixelprune`` key of
            ``processor_config.json``.
        pixelprune_<name>: individual settings (``pixelprune_threshold=0.02``), applied on top.

    Without torchvision the stock video processor cannot be built; the processor then has no
    ``video_processor`` and handles images and text only (passing videos raises).
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        video_processor: Any = None,
        chat_template: str | None = None,
        pixelprune: PixelPruneSettings | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        saved = _coerce_settings(pixelprune)
        explicit = pop_prefixed(kwargs)
        resolve_settings(saved, explicit=explicit)  # invalid values (and PIXELPRUNE_*) fail here
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)
        self.last_pruning_stats: list[ImagePruningStats] = []
        self.last_video_pruning_stats: list[VideoPruningStats] = []
        self.pixelprune: dict[str, Any] = saved.to_dict()
        self._pixelprune_explicit: dict[str, Any] = {}
        self._set_explicit_settings(explicit)

    def _set_explicit_settings(self, explicit: Mapping[str, Any]) -> None:
        """Record explicit ``pixelprune_*`` arguments: they beat the environment, and they are
        also merged into ``self.pixelprune`` so that ``save_pretrained`` saves them."""
        if explicit:
            self.pixelprune = self.pixelprune_settings.replace(**explicit).to_dict()
            self._pixelprune_explicit = {**self._pixelprune_explicit, **explicit}

    @classmethod
    def get_attributes(cls) -> list[str]:
        attributes = super().get_attributes()
        if not is_torchvision_available():
            # The stock Qwen3VLVideoProcessor needs torchvision: load and run without it.
            attributes = [a for a in attributes if a != "video_processor"]
        return attributes

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """Stock loading; ``pixelprune_<name>=...`` keyword arguments override the saved settings
        and the ``PIXELPRUNE_*`` environment variables (explicit arguments in code win)."""
        overrides = pop_prefixed(kwargs)
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        processor._set_explicit_settings(overrides)
        return processor

    @property
    def pixelprune_settings(self) -> PixelPruneSettings:
        """The processor's own (saved) settings, without environment or per-call overrides."""
        return PixelPruneSettings.from_dict(self.pixelprune)

    @pixelprune_settings.setter
    def pixelprune_settings(self, value: PixelPruneSettings | Mapping[str, Any]) -> None:
        """Replace the saved settings (earlier explicit ``pixelprune_*`` arguments are dropped;
        the environment overrides the new value as it would a saved block)."""
        self.pixelprune = _coerce_settings(value).to_dict()
        self._pixelprune_explicit = {}

    def effective_pixelprune_settings(self, kwargs: dict[str, Any] | None = None) -> PixelPruneSettings:
        """Saved < environment < explicit constructor / ``from_pretrained`` arguments <
        ``pixelprune_*`` entries of ``kwargs`` (popped), or the settings of the call in progress."""
        call = pop_prefixed(kwargs) if kwargs is not None else {}
        base = _CALL_SETTINGS.get() or resolve_settings(
            self.pixelprune_settings, explicit=getattr(self, "_pixelprune_explicit", None)
        )
        return base.replace(**call) if call else base

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs: Any):
        """Stock ``Qwen3VLProcessor.__call__`` plus pruning; accepts ``pixelprune_<name>=...``."""
        settings = self.effective_pixelprune_settings(kwargs)
        if videos is not None and getattr(self, "video_processor", None) is None:
            raise ValueError(
                f"{type(self).__name__} has no video processor (the stock Qwen3-VL video processor "
                "needs torchvision); install torchvision to pass videos."
            )
        token = _CALL_SETTINGS.set(settings)
        try:
            self.last_pruning_stats = []
            self.last_video_pruning_stats = []
            return super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)
        finally:
            _CALL_SETTINGS.reset(token)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any):
        """Stock ``apply_chat_template``; ``pixelprune_<name>=...`` apply to the images (and, with
        ``pixelprune_video=True``, the videos) it processes."""
        settings = self.effective_pixelprune_settings(kwargs)
        token = _CALL_SETTINGS.set(settings)
        try:
            return super().apply_chat_template(conversation, chat_template, **kwargs)
        finally:
            _CALL_SETTINGS.reset(token)

    def _process_images(self, images: Any, **kwargs: Any):
        settings = self.effective_pixelprune_settings()
        if not settings.enabled:
            return super()._process_images(images, **kwargs)
        processed = self.image_processor(images, **kwargs)
        geometry = PatchGeometry.from_image_processor(self.image_processor, kwargs)
        keep_mask, stats = prune_image_batch(processed["pixel_values"], processed["image_grid_thw"], settings, geometry)
        # Same container kind as pixel_values (numpy without return_tensors, torch with "pt").
        processed[KEEP_MASK_KEY] = keep_mask if isinstance(processed["pixel_values"], torch.Tensor) else keep_mask.numpy()
        self.last_pruning_stats = stats
        replacements = [self.replace_image_token(processed, image_idx=i, **kwargs) for i in range(len(stats))]
        return processed, replacements

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        """``<|image_pad|>`` repeated the image's kept count (stock count without a keep mask)."""
        if KEEP_MASK_KEY not in image_inputs:
            return super().replace_image_token(image_inputs, image_idx, **kwargs)
        merge_size = kwargs.get("merge_size") or self.image_processor.merge_size
        counts = kept_tokens_per_image(
            torch.as_tensor(image_inputs[KEEP_MASK_KEY]), torch.as_tensor(image_inputs["image_grid_thw"]), merge_size
        )
        return self.image_token * counts[image_idx]

    def _process_videos(self, videos: Any, **kwargs: Any):
        settings = self.effective_pixelprune_settings()
        if not settings.prunes_videos:
            return super()._process_videos(videos, **kwargs)
        processed = self.video_processor(videos, **kwargs)
        # The video processor's own geometry and normalisation (they may differ from the images').
        geometry = PatchGeometry.from_image_processor(self.video_processor, kwargs)
        pixels = processed["pixel_values_videos"]
        keep_mask, stats = prune_video_batch(pixels, processed["video_grid_thw"], settings, geometry)
        processed[VIDEO_KEEP_MASK_KEY] = keep_mask if isinstance(pixels, torch.Tensor) else keep_mask.numpy()
        self.last_video_pruning_stats = stats
        replacements = [self.replace_video_token(processed, video_idx=i, **kwargs) for i in range(len(stats))]
        return processed, replacements

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs: Any) -> str:
        """The stock string (timestamps, then one ``<|vision_start|>`` + ``<|video_pad|>`` run +
        ``<|vision_end|>`` per temporal slice) with each slice's run at its kept length.

        The stock text is rewritten rather than rebuilt so that the timestamp logic stays
        transformers' own (it differs between releases)."""
        stock = super().replace_video_token(video_inputs, video_idx, **kwargs)
        if VIDEO_KEEP_MASK_KEY not in video_inputs:
            return stock
        merge_size = self.video_processor.merge_size  # the stock method's run length uses it
        grids = torch.as_tensor(video_inputs["video_grid_thw"]).reshape(-1, 3)
        kept = video_kept_per_slice(torch.as_tensor(video_inputs[VIDEO_KEEP_MASK_KEY]), grids, merge_size)[video_idx]
        t, h, w = grids[video_idx].tolist()
        start, end, pad = self.vision_start_token, self.vision_end_token, self.video_token
        between = stock.split(start + pad * (h * w // merge_size**2) + end)
        if len(between) != t + 1:
            raise RuntimeError(
                f"PixelPrune expected the stock video placeholder of video {video_idx} to hold {t} slice runs of "
                f"{h * w // merge_size**2} {pad}; found {len(between) - 1}. This transformers release writes "
                "video placeholders differently; please report it."
            )
        return between[0] + "".join(
            start + pad * int(k) + end + text for k, text in zip(kept.tolist(), between[1:])
        )

    @property
    def model_input_names(self) -> list[str]:
        return super().model_input_names + [KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY]


class PixelPruneQwen3_5Processor(PixelPruneQwen3VLProcessor):
    """PixelPrune processor for Qwen3.5 and Qwen3.5-MoE.

    transformers uses the Qwen3-VL processor for both families, so this is the same processor
    under the name Qwen3.5 Hub repos and users refer to.
    """


__all__ = ["KEEP_MASK_KEY", "VIDEO_KEEP_MASK_KEY", "PixelPruneQwen3VLProcessor", "PixelPruneQwen3_5Processor"]
