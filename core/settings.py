"""PixelPrune settings: one validated record shared by the processors, vLLM and the CLI.

Every setting enters through :func:`resolve_settings` (or :class:`PixelPruneSettings` itself) and is
validated there, once; the rest of the code receives a :class:`PixelPruneSettings`.

Precedence, lowest to highest (each layer only overrides the keys it sets):

====  ==========================================================  ===============================
 #    layer                                                       where it comes from
====  ==========================================================  ===============================
1     built-in defaults                                           :class:`PixelPruneSettings`
2     saved with the checkpoint / processor                       ``pixelprune`` block of
                                                                  ``processor_config.json``
                                                                  (``pixelprune={...}``)
3     environment                                                 ``PIXELPRUNE_*`` variables
4     explicit arguments in code / on the command line            ``from_pretrained(...,
                                                                  pixelprune_threshold=0.5)``,
                                                                  constructor ``pixelprune_*``,
                                                                  ``pixelprune inspect`` flags
5     engine-wide                                                 vLLM ``--mm-processor-kwargs``
6     per call / per request                                      ``processor(...,
                                                                  pixelprune_threshold=...)``,
                                                                  a request's
                                                                  ``mm_processor_kwargs``
====  ==========================================================  ===============================

Why this order: each layer is more specific than the ones below it. The environment is a
process-wide default set by whoever launches the program (kept for users of the paper's code); it
beats what a checkpoint was saved with, but an argument written in code names one object and
one intent, so it beats the environment (a stray ``PIXELPRUNE_THRESHOLD`` must not silently
override ``from_pretrained(..., pixelprune_threshold=0.5)``). Layers 4 and 5 never meet in one
path: transformers has no engine, and in vLLM the code's own arguments *are* the engine-wide
``mm_processor_kwargs``. A call / request overrides everything for itself only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

METRICS: tuple[str, ...] = ("max", "mae", "rmse")
"""Distance metrics; ``exact`` is accepted as an alias for ``max`` with threshold 0."""
METRIC_ALIASES: dict[str, str] = {"exact": "max"}
METHODS: tuple[str, ...] = ("pred_2d", "raster", "serpentine")

ENV_PREFIX = "PIXELPRUNE_"
KWARG_PREFIX = "pixelprune_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"PixelPrune setting {name!r}={value!r} is not a boolean (use true/false, 1/0).")


def _parse_optional_bool(name: str, value: Any) -> bool | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "auto"}):
        return None
    return _parse_bool(name, value)


@dataclasses.dataclass(frozen=True)
class PixelPruneSettings:
    """Validated PixelPrune settings.

    Attributes:
        enabled: prune at all. ``False`` gives exactly the stock behaviour.
        threshold: tau >= 0 in [0, 1] pixel units; tokens at distance <= tau are similar.
            0 (default) prunes only pixel-identical tokens (lossless).
        metric: ``max`` | ``mae`` | ``rmse`` (``exact`` = ``max`` with threshold 0).
        method: ``pred_2d`` (default) | ``raster`` | ``serpentine``.
        anchored: compare against reconstructions (True) or originals (False);
            ``None`` means anchored iff threshold > 0.
        verbose: log per-image statistics at INFO level.
        video: prune videos too (``docs/ALGORITHM.md`` section 7). Off by default: video pruning
            is opt-in until an accuracy study exists; images are pruned regardless.
    """

    enabled: bool = True
    threshold: float = 0.0
    metric: str = "max"
    method: str = "pred_2d"
    anchored: bool | None = None
    verbose: bool = False
    video: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", _parse_bool("enabled", self.enabled))
        object.__setattr__(self, "verbose", _parse_bool("verbose", self.verbose))
        object.__setattr__(self, "video", _parse_bool("video", self.video))
        object.__setattr__(self, "anchored", _parse_optional_bool("anchored", self.anchored))
        threshold = validate_threshold(self.threshold)
        metric = validate_metric(self.metric, threshold)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "method", validate_method(self.method))

    @property
    def prunes_videos(self) -> bool:
        """Videos are pruned: pruning is on and video pruning was opted into."""
        return self.enabled and self.video

    @property
    def is_anchored(self) -> bool:
        """The effective mode: anchored unless explicitly sliding (threshold 0 makes both equal)."""
        return self.threshold > 0 if self.anchored is None else self.anchored

    def replace(self, **overrides: Any) -> PixelPruneSettings:
        """A copy with ``overrides`` applied (keys are field names; ``None`` values are ignored
        except for ``anchored``, where ``None`` means automatic)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"Unknown PixelPrune setting(s) {sorted(unknown)}; allowed: {sorted(known)}."
            )
        clean = {k: v for k, v in overrides.items() if v is not None or k == "anchored"}
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as saved in processor configs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PixelPruneSettings:
        return cls().replace(**dict(data or {}))

    def with_env(self, environ: Mapping[str, str] | None = None) -> PixelPruneSettings:
        """Apply the ``PIXELPRUNE_*`` environment variables that are set."""
        overrides = env_overrides(environ)
        return self.replace(**overrides) if overrides else self

    def with_kwargs(self, kwargs: dict[str, Any], *, pop: bool = True) -> PixelPruneSettings:
        """Apply ``pixelprune_<name>=value`` keyword overrides (removed from ``kwargs`` if ``pop``).

        An unknown ``pixelprune_*`` key raises, so a typo never silently does nothing.
        """
        overrides = pop_prefixed(kwargs) if pop else split_prefixed(kwargs)[0]
        return self.replace(**overrides) if overrides else self


def split_prefixed(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into (our settings by field name, without the ``pixelprune_``
    prefix; everything else, untouched). The one place that knows the prefix."""
    ours = {k[len(KWARG_PREFIX):]: v for k, v in kwargs.items() if k.startswith(KWARG_PREFIX)}
    rest = {k: v for k, v in kwargs.items() if not k.startswith(KWARG_PREFIX)}
    return ours, rest


def pop_prefixed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``pixelprune_*`` entries from ``kwargs``; return them by field name."""
    return {k[len(KWARG_PREFIX):]: kwargs.pop(k) for k in list(kwargs) if k.startswith(KWARG_PREFIX)}


def prefixed(name: str) -> str:
    """The keyword / ``mm_processor_kwargs`` key of a setting: ``threshold`` -> ``pixelprune_threshold``."""
    return KWARG_PREFIX + name


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the ``PIXELPRUNE_*`` environment variables set, by field name (unvalidated)."""
    env = os.environ if environ is None else environ
    names = [f.name for f in dataclasses.fields(PixelPruneSettings)]
    return {name: env[ENV_PREFIX + name.upper()] for name in names if ENV_PREFIX + name.upper() in env}


def resolve_settings(
    saved: PixelPruneSettings | Mapping[str, Any] | None = None,
    *,
    explicit: Mapping[str, Any] | None = None,
    engine: Mapping[str, Any] | None = None,
    call: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PixelPruneSettings:
    """The effective settings: defaults < ``saved`` < environment < ``explicit`` < ``engine`` <
    ``call`` (see the table in the module docstring for what each layer is and why).

    Layers other than ``saved`` are mappings by field name (``{"threshold": 0.1}``; use
    :func:`split_prefixed` on ``pixelprune_*`` keywords first); ``None`` values are ignored, as
    by :meth:`PixelPruneSettings.replace`. ``environ`` defaults to ``os.environ``. Every layer is
    validated on the way (``ValueError`` naming the bad value and what is allowed), including the
    environment, so a bad ``PIXELPRUNE_*`` variable fails even when a higher layer overrides it.
    """
    if isinstance(saved, PixelPruneSettings):
        settings = saved
    elif saved is None or isinstance(saved, Mapping):
        settings = PixelPruneSettings.from_dict(saved)
    else:
        raise ValueError(f"pixelprune={saved!r} is invalid; pass a dict of settings or a PixelPruneSettings.")
    settings = settings.with_env(environ)
    for layer in (explicit, engine, call):
        if layer:
            settings = settings.replace(**dict(layer))
    return settings


def validate_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float, or raise ``ValueError`` unless it is a finite number in
    [0, 1] (distances are in [0, 1] pixel units, so a larger threshold would mean "prune all").

    Booleans are refused: ``True`` (Python) / ``true`` (JSON) would otherwise read as 1.0."""
    if isinstance(threshold, bool):
        raise ValueError(f"PixelPrune threshold={threshold!r} is not a number; use a float >= 0 and <= 1.")
    try:
        value = float(threshold)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"PixelPrune threshold={threshold!r} is not a number; use a float >= 0.") from None
    if not math.isfinite(value) or value < 0 or value > 1:
        raise ValueError(
            f"PixelPrune threshold={threshold!r} is invalid; use a float >= 0 and <= 1 (0 = lossless)."
        )
    return value


def validate_metric(metric: Any, threshold: float = 0.0) -> str:
    """Return the canonical metric name; ``exact`` maps to ``max`` and requires threshold 0."""
    name = str(metric).strip().lower() if isinstance(metric, str) else metric
    if name in METRIC_ALIASES:
        if threshold != 0:
            raise ValueError(
                f"PixelPrune metric='exact' means 'max' with threshold 0, but threshold={threshold!r}; "
                "use metric='max' with a threshold instead."
            )
        return METRIC_ALIASES[name]
    if name not in METRICS:
        allowed = ", ".join(repr(m) for m in METRICS + tuple(METRIC_ALIASES))
        raise ValueError(f"Unknown PixelPrune metric {metric!r}; allowed: {allowed}.")
    return name


def validate_method(method: Any) -> str:
    """Return ``method`` if it is a known selection method, else raise ``ValueError``."""
    name = method.strip().lower() if isinstance(method, str) else method
    if name not in METHODS:
        allowed = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"Unknown PixelPrune method {method!r}; allowed: {allowed}.")
    return name
