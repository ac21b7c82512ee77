"""PixelPrune settings: one validated record shared by the processors, vLLM and the CLI.

Precedence, lowest to highest (each layer only overrides the keys it sets):

1. built-in defaults (:data:`DEFAULTS`);
2. the settings saved with the processor / checkpoint (``pixelprune`` block of its config);
3. environment variables (``PIXELPRUNE_ENABLED``, ``PIXELPRUNE_THRESHOLD``, ``PIXELPRUNE_METRIC``,
   ``PIXELPRUNE_METHOD``, ``PIXELPRUNE_ANCHORED``, ``PIXELPRUNE_VERBOSE``), kept for users of the
   paper's code;
4. engine-wide overrides (vLLM ``--mm-processor-kwargs``);
5. per-call / per-request overrides (``processor(..., pixelprune_threshold=0.02)``, a vLLM request's
   ``mm_processor_kwargs``).
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
    """

    enabled: bool = True
    threshold: float = 0.0
    metric: str = "max"
    method: str = "pred_2d"
    anchored: bool | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", _parse_bool("enabled", self.enabled))
        object.__setattr__(self, "verbose", _parse_bool("verbose", self.verbose))
        object.__setattr__(self, "anchored", _parse_optional_bool("anchored", self.anchored))
        threshold = validate_threshold(self.threshold)
        metric = validate_metric(self.metric, threshold)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "method", validate_method(self.method))

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
        env = os.environ if environ is None else environ
        overrides: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            key = ENV_PREFIX + field.name.upper()
            if key in env:
                overrides[field.name] = env[key]
        if "anchored" in overrides:
            overrides["anchored"] = _parse_optional_bool("anchored", overrides["anchored"])
        return self.replace(**overrides) if overrides else self

    def with_kwargs(self, kwargs: dict[str, Any], *, pop: bool = True) -> PixelPruneSettings:
        """Apply ``pixelprune_<name>=value`` keyword overrides (removed from ``kwargs`` if ``pop``).

        An unknown ``pixelprune_*`` key raises, so a typo never silently does nothing.
        """
        keys = [k for k in kwargs if k.startswith(KWARG_PREFIX)]
        overrides = {k[len(KWARG_PREFIX):]: (kwargs.pop(k) if pop else kwargs[k]) for k in keys}
        if "anchored" in overrides:
            overrides["anchored"] = _parse_optional_bool("anchored", overrides["anchored"])
        return self.replace(**overrides) if overrides else self


def validate_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float, or raise ``ValueError`` if it is not a number >= 0."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"PixelPrune threshold={threshold!r} is not a number; use a float >= 0.") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"PixelPrune threshold={threshold!r} is invalid; use a float >= 0 (0 = lossless).")
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
