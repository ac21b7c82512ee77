"""Mixins that give a stock Qwen3-VL / Qwen3.5 model the ``image_keep_mask`` and ``video_keep_mask`` inputs.

Shared by every family (Qwen3-VL, Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE). A family module subclasses::

    class PixelPruneXModel(PixelPruneModelMixin, XModel):
        forward = keep_mask_forward(XModel.forward)

    class PixelPruneXForConditionalGeneration(PixelPruneForConditionalGenerationMixin, XForConditionalGeneration):
        pixelprune_model_class = PixelPruneXModel
        forward = keep_mask_forward(XForConditionalGeneration.forward)

Without the masks every method is the stock one. With them:

* ``get_image_features`` / ``get_video_features`` encode only kept patches (``kept_patch_encoding``;
  a video keeps the stock per-slice attention segments, of kept lengths);
* ``get_rope_index`` keeps unpruned M-RoPE positions (``rope_index``; every video slice is its own
  grid, as stock); ``generate`` reaches it through the stock ``_prepare_position_ids_for_generation``,
  which hands it every model kwarg;
* ``forward`` does both when it has to (direct calls, training) and then runs the stock forward on
  the encoded features, so the KV cache, ``rope_deltas``, labels and masks all describe the same
  short sequence.

``generate`` (transformers >= 5.20) encodes images and videos before prefill through the inner
model's ``get_image_features`` / ``get_video_features`` with the kwargs those methods *name*, then
drops them: that is why each mask is a named parameter there and of ``forward`` (``generate``
rejects unnamed model kwargs).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

import torch
from torch import nn

from ..core.keep_mask import KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY, KeepMask
from .rope_index import pruned_rope_index
from .kept_patch_encoding import encode_kept_patches

try:  # strips `image_`-prefixed precomputed kwargs like the stock method (transformers >= 5.20)
    from transformers.utils.generic import accepts_precomputed_kwargs
except ImportError:  # pragma: no cover - older transformers are refused by transformers_compat
    def accepts_precomputed_kwargs(modality: str):  # noqa: D103
        return lambda func: func

try:
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )
except ImportError:  # pragma: no cover - older transformers are refused by transformers_compat
    get_checkpoint_conversion_mapping = register_checkpoint_conversion_mapping = None

logger = logging.getLogger(__name__)

__all__ = ["PixelPruneModelMixin", "PixelPruneForConditionalGenerationMixin", "keep_mask_forward"]


def _register_stock_weight_conversions(cls: type) -> None:
    """Give a PixelPrune class its stock model type's checkpoint conversions.

    transformers applies a model type's conversions (e.g. Qwen3-VL-MoE's: the Hub stores fused
    experts transposed) to classes defined outside transformers only when they are registered by
    class name; without this a Hub Qwen3-VL-MoE checkpoint fails to load with a size mismatch.
    """
    if get_checkpoint_conversion_mapping is None:
        return
    model_type = getattr(getattr(cls, "config_class", None), "model_type", None)
    mapping = get_checkpoint_conversion_mapping(model_type) if model_type else None
    if mapping is not None:
        # overwrite: the same module may be loaded again (remote code, reloads).
        register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)

_KEEP_MASK_DOC = """
        image_keep_mask (`torch.BoolTensor` of shape `(num_image_tokens,)`, *optional*):
            PixelPrune's keep mask (one entry per merged token of every image, as returned by the
            PixelPrune processor). `None` runs the stock model.
        video_keep_mask (`torch.BoolTensor` of shape `(num_video_tokens,)`, *optional*):
            The same for videos (one entry per merged token of every video, slices in order; the
            PixelPrune processor returns it with `pixelprune_video=True`). `None`: videos unpruned."""


def keep_mask_forward(stock_forward: Callable) -> Callable:
    """A ``forward`` that accepts ``image_keep_mask`` and ``video_keep_mask`` by name and otherwise
    is ``stock_forward``.

    The masks are handed to ``self._pixelprune_forward`` (defined by the mixins). The signature is
    the stock one plus the two keyword-only masks: ``generate`` inspects ``forward``'s signature
    (named kwargs, ``position_ids``, ``mm_encoder_outputs``), and the stock parameter names change
    between transformers releases (``past_key_values`` became ``cache`` in 5.24).
    """

    @functools.wraps(stock_forward)
    def forward(
        self, *args, image_keep_mask: torch.Tensor | None = None, video_keep_mask: torch.Tensor | None = None, **kwargs
    ):
        return self._pixelprune_forward(stock_forward, args, kwargs, image_keep_mask, video_keep_mask)

    signature = inspect.signature(stock_forward)
    params = list(signature.parameters.values())
    insert_at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    params[insert_at:insert_at] = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation="torch.Tensor | None")
        for name in (KEEP_MASK_KEY, VIDEO_KEEP_MASK_KEY)
    ]
    forward.__signature__ = signature.replace(parameters=params)
    forward.__doc__ = (stock_forward.__doc__ or "") + _KEEP_MASK_DOC
    return forward


def _bind_keywords(func: Callable, self, args: tuple, kwargs: dict) -> dict:
    """All arguments of a call to ``func`` as keywords (positional ones named, ``**kwargs`` flattened)."""
    if not args:
        return dict(kwargs)
    signature = inspect.signature(func)
    bound = signature.bind(self, *args, **kwargs)
    var_kw = next((p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    out = {k: v for k, v in bound.arguments.items() if k not in ("self", var_kw)}
    out.update(bound.arguments.get(var_kw, {}) if var_kw else {})
    return out


def _cache_length(kwargs: dict) -> int:
    """Tokens already in the KV cache (the cache kwarg is ``cache`` since 5.24, ``past_key_values`` before)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0


class _StockClassBehaviour:
    """transformers' class-level machinery answers for a PixelPrune class as for its stock class.

    transformers decides some behaviour from where a class is *defined*, not from what it does:
    ``is_custom_code`` (any class outside the ``transformers.`` package: weight initialisation takes
    the remote-code shortcut that can leave weights missing from a checkpoint uninitialised, and
    model-type weight conversions apply only to classes registered by name, which
    ``_register_stock_weight_conversions`` does), ``_can_set_experts_implementation`` (looks for
    ``@use_experts_implementation`` in the source of the class's module) and
    ``_can_set_attn_implementation`` (looks for attention classes in that source). Our classes add
    methods only, never modules, parameters or initialisation, so the stock class's answer is the
    right one; each is delegated to it here (``_can_set_*`` cache per class, so without this the
    answer would also depend on whether the stock class happened to be asked first).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register_stock_weight_conversions(cls)

    @classmethod
    def _pixelprune_stock_class(cls) -> type:
        """The stock transformers class this class extends (first base in the MRO that is not ours)."""
        return next(base for base in cls.__mro__ if not issubclass(base, _StockClassBehaviour))

    @classmethod
    def is_custom_code(cls) -> bool:
        return cls._pixelprune_stock_class().is_custom_code()

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return cls._pixelprune_stock_class()._can_set_attn_implementation()

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        return cls._pixelprune_stock_class()._can_set_experts_implementation()


class PixelPruneModelMixin(_StockClassBehaviour):
    """For the inner ``*Model`` (vision tower + language model): pruned encoding and positions."""

    @accepts_precomputed_kwargs(modality="image")
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor | None = None,
        image_keep_mask: torch.Tensor | KeepMask | None = None,
        **kwargs,
    ):
        """Stock ``get_image_features``; with ``image_keep_mask`` (a tensor, or the
        :class:`~pixelprune.core.keep_mask.KeepMask` ``forward`` built), the ViT runs on kept
        patches only and ``pooler_output`` (and ``deepstack_features``) hold one row per kept token."""
        if image_keep_mask is None:
            return super().get_image_features(pixel_values, image_grid_thw, **kwargs)
        return_dict = kwargs.pop("return_dict", True)
        output = encode_kept_patches(self.visual, pixel_values, image_grid_thw, image_keep_mask, **kwargs)
        return output if return_dict else output.to_tuple()

    @accepts_precomputed_kwargs(modality="video")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.LongTensor | None = None,
        video_keep_mask: torch.Tensor | KeepMask | None = None,
        **kwargs,
    ):
        """Stock ``get_video_features``; with ``video_keep_mask`` (a tensor, or the
        :class:`~pixelprune.core.keep_mask.KeepMask` ``forward`` built), the ViT runs on kept
        patches only, each temporal slice in its own attention segment as stock, and
        ``pooler_output`` (and ``deepstack_features``) hold one row per kept token of each video."""
        if video_keep_mask is None:
            return super().get_video_features(pixel_values_videos, video_grid_thw, **kwargs)
        keep = KeepMask.of(video_keep_mask, video_grid_thw, self.visual.spatial_merge_size, name=VIDEO_KEEP_MASK_KEY)
        return_dict = kwargs.pop("return_dict", True)
        output = encode_kept_patches(self.visual, pixel_values_videos, video_grid_thw, keep, **kwargs)
        return output if return_dict else output.to_tuple()

    def get_rope_index(
        self,
        input_ids: torch.LongTensor,
        mm_token_type_ids: torch.IntTensor,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_keep_mask: torch.Tensor | KeepMask | None = None,
        video_keep_mask: torch.Tensor | KeepMask | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stock ``get_rope_index``; with ``image_keep_mask`` / ``video_keep_mask``, kept image and
        video tokens keep their unpruned (t, h, w) positions and text (after an image or a video
        slice) resumes where it would without pruning."""
        if image_keep_mask is None and video_keep_mask is None:
            return super().get_rope_index(
                input_ids,
                mm_token_type_ids,
                image_grid_thw=image_grid_thw,
                video_grid_thw=video_grid_thw,
                attention_mask=attention_mask,
                **kwargs,
            )
        return pruned_rope_index(
            self, input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask, image_keep_mask,
            video_keep_mask,
        )

    def _pixelprune_forward(
        self, stock_forward: Callable, args: tuple, kwargs: dict, image_keep_mask, video_keep_mask
    ):
        if image_keep_mask is None and video_keep_mask is None:
            return stock_forward(self, *args, **kwargs)
        kwargs = _bind_keywords(stock_forward, self, args, kwargs)
        merge_size = self.config.vision_config.spatial_merge_size
        # Validated once, here; the encoders and the rope index receive the values.
        keeps = {
            "image": None if image_keep_mask is None else KeepMask.of(
                image_keep_mask, kwargs.get("image_grid_thw"), merge_size),
            "video": None if video_keep_mask is None else KeepMask.of(
                video_keep_mask, kwargs.get("video_grid_thw"), merge_size, name=VIDEO_KEEP_MASK_KEY),
        }
        input_ids = kwargs.get("input_ids")
        mm_encoder_outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        pixel_keys = {"image": "pixel_values", "video": "pixel_values_videos"}
        pending = [m for m in pixel_keys if kwargs.get(pixel_keys[m]) is not None and mm_encoder_outputs.get(m) is None]

        # A pruned modality with raw pixels is encoded here. The stock forward refuses raw pixels
        # next to `mm_encoder_outputs`, so the other modality (pruned or not) is encoded here too,
        # exactly as the stock forward would.
        if any(keeps[m] is not None for m in pending):
            # Stock-named arguments are not vision kwargs; everything else (attention flags...) is.
            named = set(inspect.signature(stock_forward).parameters)
            extra = {k: v for k, v in kwargs.items() if k not in named}
            for modality in pending:
                keep = keeps[modality]
                if keep is not None and input_ids is not None:
                    token_id = getattr(self.config, f"{modality}_token_id")
                    placeholders = int((input_ids == token_id).sum())
                    if placeholders != keep.num_kept:
                        raise ValueError(
                            f"`input_ids` hold {placeholders} {modality} placeholder tokens but `{keep.name}` keeps "
                            f"{keep.num_kept} tokens; the processor must expand each "
                            f"{'video slice' if modality == 'video' else 'image'} to its kept count."
                        )
                encode = getattr(self, f"get_{modality}_features")
                mm_encoder_outputs[modality] = encode(
                    kwargs[pixel_keys[modality]], kwargs.get(f"{modality}_grid_thw"),
                    **{f"{modality}_keep_mask": keep}, return_dict=True, **extra,
                )
                kwargs[pixel_keys[modality]] = None
            kwargs["mm_encoder_outputs"] = mm_encoder_outputs

        # The stock forward would compute positions without the masks; do it here in the same case
        # (prefill or uncached call). Cached decoding reuses `rope_deltas`, already pruned-length based.
        mm_token_type_ids = kwargs.get("mm_token_type_ids")
        if kwargs.get("position_ids") is None and input_ids is not None and mm_token_type_ids is not None:
            if self.rope_deltas is None or _cache_length(kwargs) == 0:
                kwargs["position_ids"], self.rope_deltas = self.get_rope_index(
                    input_ids,
                    mm_token_type_ids,
                    image_grid_thw=kwargs.get("image_grid_thw"),
                    video_grid_thw=kwargs.get("video_grid_thw"),
                    attention_mask=kwargs.get("attention_mask"),
                    image_keep_mask=keeps["image"],
                    video_keep_mask=keeps["video"],
                )
        return stock_forward(self, **kwargs)


class PixelPruneForConditionalGenerationMixin(_StockClassBehaviour):
    """For ``*ForConditionalGeneration``: builds the PixelPrune inner model, forwards the mask."""

    #: The PixelPrune inner model class (a ``PixelPruneModelMixin`` subclass of the stock ``*Model``).
    pixelprune_model_class: type

    def __init__(self, config):
        # The stock constructor of every family (transformers 5.19-5.24) is
        #     super().__init__(config); self.model = <Family>Model(config)
        #     self.lm_head = nn.Linear(text hidden, text vocab, bias=False); self.post_init()
        # with the inner class hard-coded. Running it and then replacing `self.model` would build
        # the inner model twice: the second one misses what the first `post_init` consumed from
        # the config (`gradient_checkpointing`) and draws different random weights. So run the
        # stock class's parent constructor and build the same submodules, each once, in the stock
        # order, with our inner class. (Nothing in transformers selects the inner class: it is a
        # module global of the stock modeling file, and rebinding it would be monkey-patching.)
        # tests/test_modeling_machinery.py checks the result equals the stock model (modules,
        # seeded weights, post_init state) in every family, so a change of the stock constructor
        # in a future release fails there.
        super(self._pixelprune_stock_class(), self).__init__(config)
        self.model = self.pixelprune_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor | None = None,
        image_keep_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """Stock ``get_image_features``; with ``image_keep_mask``, only kept patches are encoded."""
        return self.model.get_image_features(pixel_values, image_grid_thw, image_keep_mask=image_keep_mask, **kwargs)

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.LongTensor | None = None,
        video_keep_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """Stock ``get_video_features``; with ``video_keep_mask``, only kept patches are encoded."""
        return self.model.get_video_features(
            pixel_values_videos, video_grid_thw, video_keep_mask=video_keep_mask, **kwargs
        )

    def _pixelprune_forward(
        self, stock_forward: Callable, args: tuple, kwargs: dict, image_keep_mask, video_keep_mask
    ):
        # The stock forward hands unknown kwargs to the inner model, whose `forward` names the masks.
        if image_keep_mask is not None:
            kwargs[KEEP_MASK_KEY] = image_keep_mask
        if video_keep_mask is not None:
            kwargs[VIDEO_KEEP_MASK_KEY] = video_keep_mask
        return stock_forward(self, *args, **kwargs)
