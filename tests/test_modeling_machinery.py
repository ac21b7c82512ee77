"""PixelPrune classes under transformers' own model machinery, per family, against the stock classes.

What transformers checks on its models (its model test suite), asked of our four families: the
model built from a config is the stock model (modules, seeded weights, the state ``post_init``
gathers), save/load round trips, gradient checkpointing (``gradient_checkpointing_enable()`` and a
config carrying ``gradient_checkpointing=True``, as older checkpoints do), training with labels,
attention-implementation switching, experts-implementation switching (MoE families) and the
initialisation of weights a checkpoint lacks. Each with and without pruning where inputs matter.

Also every class-level check transformers 5.19-5.24 keys on a class's module name or module source
(``is_custom_code``, ``_can_set_attn_implementation``, ``_can_set_experts_implementation``) and on its
name (``loss_type``): our classes must get the stock class's answer.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from images import word_page_image
from model_oracles import build_inputs
from tiny_models import ARCHITECTURES, FAMILIES, build_tiny_config, build_tiny_tokenizer

transformers = pytest.importorskip("transformers")

MOE = ("qwen3_vl_moe", "qwen3_5_moe")
# transformers caches these class-level answers on the class on first use (inherited by subclasses).
CACHED_ANSWERS = ("_can_set_experts_implementation_cached_value", "_can_set_attn_implementation_cached_value")
# The state the constructor and `post_init` set on a model (per submodel) that transformers' loading,
# device maps, tensor parallelism, output recording and the loss rely on.
POST_INIT_STATE = (
    "all_tied_weights_keys",
    "_tp_plan",
    "_ep_plan",
    "_pp_plan",
    "_no_split_modules",
    "_skip_keys_device_placement",
    "_keep_in_fp32_modules",
    "_keep_in_fp32_modules_strict",
    "_keys_to_ignore_on_load_missing",
    "_keys_to_ignore_on_load_unexpected",
    "_keys_to_ignore_on_save",
    "_can_record_outputs",
    "loss_type",
    "base_model_prefix",
    "supports_gradient_checkpointing",
    "_supports_sdpa",
    "_supports_flash_attn",
    "_supports_flex_attn",
    "config_class",
)


def classes(family: str) -> tuple[type, type]:
    """(our class, stock class) of ``family``'s ``*ForConditionalGeneration``."""
    from pixelprune import modeling

    stock = getattr(transformers, ARCHITECTURES[family])
    return getattr(modeling, "PixelPrune" + stock.__name__), stock


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


_TOKENIZERS: dict = {}


def prompt_inputs(family: str, *, prune: bool) -> dict:
    """One image prompt; with ``prune`` the document image loses most tokens (``image_keep_mask``)."""
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = build_tiny_tokenizer(family)
    inputs = build_inputs(_TOKENIZERS[family], [["Read ", word_page_image(128, 96, seed=0), " now."]], prune=prune)
    if prune:
        assert not bool(inputs["image_keep_mask"].all()), "the document image must lose tokens"
    return inputs


def labels_for(inputs: dict, image_token_id: int) -> torch.Tensor:
    return inputs["input_ids"].masked_fill(inputs["input_ids"] == image_token_id, -100)


def fresh_class_answers(monkeypatch, *classes_: type) -> None:
    """Forget transformers' cached class-level answers (restored after the test), so that a class
    is asked itself instead of inheriting what its stock parent answered earlier in the session."""
    for cls in classes_:
        for klass in cls.__mro__:
            for name in CACHED_ANSWERS:
                if name in vars(klass):
                    monkeypatch.delattr(klass, name)


def checkpointing_modules(model) -> set[str]:
    return {name for name, module in model.named_modules() if getattr(module, "gradient_checkpointing", False)}


def copy_with_config(src, dst, **updates):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(updates)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_model_from_config_is_the_stock_model(family):
    ours_cls, stock_cls = classes(family)
    config = build_tiny_config(family, build_tiny_tokenizer(family))
    torch.manual_seed(0)
    stock = stock_cls(config)
    torch.manual_seed(0)
    ours = ours_cls(build_tiny_config(family, build_tiny_tokenizer(family)))

    assert type(ours.model) is ours_cls.pixelprune_model_class
    ours_modules, stock_modules = dict(ours.named_modules()), dict(stock.named_modules())
    assert list(ours_modules) == list(stock_modules)
    for name, module in stock_modules.items():
        assert isinstance(ours_modules[name], type(module)), name
        if name not in ("", "model"):
            assert type(ours_modules[name]) is type(module), name
    # Every module built once, in the stock order: the same seed gives the same weights.
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert list(ours_state) == list(stock_state)
    for key, value in stock_state.items():
        assert torch.equal(ours_state[key], value), key
    for name in ("", "model"):
        for attr in POST_INIT_STATE:
            assert getattr(ours_modules[name], attr, None) == getattr(stock_modules[name], attr, None), (name, attr)
    assert ours.config.to_dict() == stock.config.to_dict()
    assert ours.generation_config.to_dict() == stock.generation_config.to_dict()


@pytest.mark.parametrize("family", FAMILIES)
def test_class_level_checks_answer_as_stock(family, monkeypatch):
    ours_cls, stock_cls = classes(family)
    inner = ours_cls.pixelprune_model_class
    stock_inner = getattr(transformers, inner.__name__.removeprefix("PixelPrune"))
    assert issubclass(inner, stock_inner)
    pairs = [(ours_cls, stock_cls), (inner, stock_inner)]
    for ours, stock in pairs:
        fresh_class_answers(monkeypatch, ours, stock)
        # Ours first: nothing cached by the stock class yet.
        answers = [ours.is_custom_code(), ours._can_set_attn_implementation(), ours._can_set_experts_implementation(),
                   ours.can_generate()]
        assert answers == [stock.is_custom_code(), stock._can_set_attn_implementation(),
                           stock._can_set_experts_implementation(), stock.can_generate()], ours.__name__
        assert answers[2] == (family in MOE)
    assert not ours_cls.is_remote_code()


# --------------------------------------------------------------------------------------------
# gradient checkpointing and training
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_from_config(family, checkpoint, tmp_path):
    ours_cls, stock_cls = classes(family)
    path = copy_with_config(checkpoint(family), tmp_path / "ckpt", gradient_checkpointing=True)
    stock, ours = stock_cls.from_pretrained(path), ours_cls.from_pretrained(path)
    assert checkpointing_modules(stock), "the stock model must enable checkpointing from the config"
    assert checkpointing_modules(ours) == checkpointing_modules(stock)
    assert ours.is_gradient_checkpointing
    # Consumed, as on stock: it must not be saved back into the config.
    assert not hasattr(ours.config, "gradient_checkpointing") and not hasattr(stock.config, "gradient_checkpointing")


def count_calls(modules) -> list[int]:
    """Forward-call counters on ``modules`` (checkpointed layers run twice: forward + recompute)."""
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def train_step(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """(loss, logits, gradients, forward calls of the MLPs of the first ViT block and LLM layer) of one step."""
    model.train()
    counts = count_calls([model.model.visual.blocks[0].mlp, model.model.language_model.layers[0].mlp])
    labels = labels_for(inputs, model.config.image_token_id)
    out = model(**inputs, labels=labels)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    # The loss is next-token cross-entropy over the labelled positions of these very logits.
    expected = F.cross_entropy(out.logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    return out.loss.detach(), out.logits.detach(), grads, counts


@pytest.mark.parametrize("prune", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("family", FAMILIES)
def test_training_with_labels_and_gradient_checkpointing(family, prune, checkpoint, tmp_path):
    ours_cls, stock_cls = classes(family)
    inputs = prompt_inputs(family, prune=prune)
    path = checkpoint(family)
    loss, logits, grads, counts = train_step(ours_cls.from_pretrained(path), inputs)
    assert counts == [1, 1]
    assert grads["model.visual.patch_embed.proj.weight"].abs().sum() > 0
    assert grads["lm_head.weight"].abs().sum() > 0
    if not prune:  # unpruned: the stock model's step exactly
        stock_loss, _, stock_grads, _ = train_step(stock_cls.from_pretrained(path), inputs)
        assert torch.equal(loss, stock_loss)
        assert grads.keys() == stock_grads.keys()
        for name, grad in stock_grads.items():
            assert torch.equal(grads[name], grad), name

    enabled = ours_cls.from_pretrained(path)
    enabled.gradient_checkpointing_enable()
    from_config = ours_cls.from_pretrained(copy_with_config(path, tmp_path / "gc", gradient_checkpointing=True))
    for model in (enabled, from_config):
        gc_loss, gc_logits, gc_grads, gc_counts = train_step(model, inputs)
        assert gc_counts == [2, 2], "checkpointed layers recompute their forward in the backward pass"
        torch.testing.assert_close(gc_loss, loss)
        torch.testing.assert_close(gc_logits, logits)
        assert gc_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(gc_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------
# save / load, attention and experts implementations
# --------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, checkpoint, tmp_path):
    ours_cls, stock_cls = classes(family)
    model = ours_cls.from_pretrained(checkpoint(family)).eval()
    model.save_pretrained(tmp_path / "saved")
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved_config["architectures"] == [ours_cls.__name__]
    for cls in (ours_cls, stock_cls):
        reloaded = cls.from_pretrained(tmp_path / "saved").eval()
        state, reloaded_state = model.state_dict(), reloaded.state_dict()
        assert list(reloaded_state) == list(state)
        for key, value in state.items():
            assert torch.equal(reloaded_state[key], value), key
        assert reloaded.config.to_diff_dict() == model.config.to_diff_dict()
    reloaded = ours_cls.from_pretrained(tmp_path / "saved").eval()
    for prune in (False, True):
        inputs = prompt_inputs(family, prune=prune)
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def attn_implementations(model) -> dict[str, str]:
    return {name: module.config._attn_implementation for name, module in model.named_modules()
            if isinstance(module, transformers.PreTrainedModel)}


@torch.no_grad()
@pytest.mark.parametrize("prune", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("family", FAMILIES)
def test_attention_implementation_switch(family, prune, checkpoint):
    ours_cls, stock_cls = classes(family)
    inputs = prompt_inputs(family, prune=prune)
    model = ours_cls.from_pretrained(checkpoint(family), attn_implementation="sdpa").eval()
    stock = stock_cls.from_pretrained(checkpoint(family), attn_implementation="sdpa").eval()
    sdpa = model(**inputs).logits
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        stock.set_attn_implementation(implementation)
        assert set(attn_implementations(model).values()) == {implementation}
        assert attn_implementations(model) == attn_implementations(stock)
        logits = model(**inputs).logits
        if implementation == "eager":
            torch.testing.assert_close(logits, sdpa, atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(logits, sdpa)
    eager = ours_cls.from_pretrained(checkpoint(family), attn_implementation="eager").eval()
    torch.testing.assert_close(eager(**inputs).logits, sdpa, atol=1e-5, rtol=1e-4)


def experts_implementations(model) -> dict[str, str]:
    return {name: module.config._experts_implementation for name, module in model.named_modules()
            if isinstance(module, transformers.PreTrainedModel)}


@torch.no_grad()
@pytest.mark.parametrize("family", FAMILIES)
def test_experts_implementation(family, checkpoint, monkeypatch):
    ours_cls, stock_cls = classes(family)
    fresh_class_answers(monkeypatch, ours_cls, ours_cls.pixelprune_model_class)
    path = checkpoint(family)
    model = ours_cls.from_pretrained(path).eval()
    if family not in MOE:  # dense: refused exactly as by the stock class
        with pytest.raises(ValueError, match="does not support setting experts implementation"):
            model.set_experts_implementation("grouped_mm")
        with pytest.raises(ValueError, match="does not support setting experts implementation"):
            stock_cls.from_pretrained(path).set_experts_implementation("grouped_mm")
        return
    inputs = prompt_inputs(family, prune=True)
    reference = model(**inputs).logits
    model.set_experts_implementation("grouped_mm")
    loaded = ours_cls.from_pretrained(path, experts_implementation="grouped_mm").eval()
    stock = stock_cls.from_pretrained(path, experts_implementation="grouped_mm")
    assert "grouped_mm" in experts_implementations(stock).values()
    assert experts_implementations(model) == experts_implementations(loaded) == experts_implementations(stock)
    for switched in (model, loaded):
        torch.testing.assert_close(switched(**inputs).logits, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_missing_from_a_checkpoint_are_initialised_as_stock(family, checkpoint, tmp_path):
    """A checkpoint without the MoE routers (and the LM head): stock initialises them; so must we."""
    from safetensors.torch import load_file, save_file

    ours_cls, stock_cls = classes(family)
    path = copy_with_config(checkpoint(family), tmp_path / "ckpt")
    weights = load_file(path / "model.safetensors")
    missing = [k for k in weights if k.endswith("mlp.gate.weight") or k == "lm_head.weight"]
    assert len(missing) == (3 if family in MOE else 1)
    save_file({k: v for k, v in weights.items() if k not in missing}, path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = {}
    for cls in (stock_cls, ours_cls):
        torch.manual_seed(0)
        loaded[cls] = cls.from_pretrained(path).state_dict()
    std = loaded[stock_cls]["lm_head.weight"].std()
    assert abs(float(std) - 0.1) < 0.02, "stock initialises with the config's initializer_range"
    for key in missing:
        assert torch.isfinite(loaded[ours_cls][key]).all(), key
        assert torch.equal(loaded[ours_cls][key], loaded[stock_cls][key]), key
