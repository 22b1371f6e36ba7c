"""Model mixes and SLA tiers: which model a request asks for and which targets it carries.

A :class:`ModelMix` is a probability per model name (validated to sum to 1 within
``1e-6``); a :class:`TierMix` is a tuple of :class:`~sincere.core.request.Tier` with
weights. Each draws one index per request.

Tier presets (:data:`TIER_PRESETS`, :func:`tier_preset`):

* ``niyama`` -- Niyama's three tiers, deadlines 6 / 600 / 1800 s, assigned uniformly:
  tier 0 is a TTFT deadline with a TBT target (0.05-0.1 s; default 0.1), tiers 1 and 2
  are TTLT deadlines with TBT 0.4 s.
* ``inferno`` -- Inferno's sample service classes: Premium (TTFT 1000 ms, ITL 80 ms,
  priority 1), Bronze (2000 / 160, priority 2), Free (4000 / 320, priority 3); Inferno
  names only Premium's priority, the others' order follows their targets.
* ``sincere-40`` / ``sincere-60`` / ``sincere-80`` -- SINCERE's end-to-end SLA of 40,
  60 or 80 s, one tier.
* ``default`` -- one tier with no targets.

Model mix preset ``sincere``: granite-7b 0.1, gemma-7b 0.3, llama3-8b 0.6 (SINCERE's mix).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.request import DEFAULT_TIER, Tier

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
TOLERANCE = 1e-6


def _draw(rng: np.random.Generator, probs: FloatArray, n: int) -> IntArray:
    if len(probs) == 1:
        return np.zeros(n, dtype=np.int64)
    cdf = np.cumsum(probs)
    ix = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.asarray(np.minimum(ix, len(probs) - 1), dtype=np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class ModelMix:
    """Probability of each model; ``weights`` must sum to 1 (within 1e-6)."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("model mix is empty", allowed="at least one model: probability")
        bad = {m: p for m, p in self.weights.items() if not (p >= 0 and math.isfinite(p))}
        if bad:
            raise ConfigError("model probabilities must be >= 0", value=bad)
        total = math.fsum(self.weights.values())
        if abs(total - 1.0) > TOLERANCE:
            raise ConfigError(
                "model probabilities must sum to 1", value=total, allowed=f"1 +- {TOLERANCE:g}"
            )
        object.__setattr__(self, "weights", dict(self.weights))

    @property
    def models(self) -> tuple[str, ...]:
        """Model names, in the order given (indices of :meth:`sample`)."""
        return tuple(self.weights)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` model indices into :attr:`models`."""
        return _draw(rng, np.array(list(self.weights.values()), dtype=np.float64), n)


SINCERE_MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}
"""SINCERE's per-request model probabilities (docs/references.md, SINCERE)."""


@dataclass(frozen=True, slots=True)
class TierMix:
    """Tiers and the relative weight of each (normalised; default: uniform)."""

    tiers: tuple[Tier, ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ConfigError("a tier mix needs at least one tier")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ConfigError("tier names must be unique", value=names)
        if self.weights is not None:
            w = self.weights
            if len(w) != len(self.tiers):
                raise ConfigError(
                    f"tier weights: expected {len(self.tiers)} values (one per tier)", value=w
                )
            if any(not (x >= 0 and math.isfinite(x)) for x in w) or math.fsum(w) <= 0:
                raise ConfigError("tier weights must be >= 0 and not all 0", value=w)

    @property
    def probabilities(self) -> FloatArray:
        """Normalised weight of each tier."""
        w = np.ones(len(self.tiers)) if self.weights is None else np.array(self.weights, float)
        return np.asarray(w / w.sum(), dtype=np.float64)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` tier indices into :attr:`tiers`."""
        return _draw(rng, self.probabilities, n)

    @property
    def priorities(self) -> IntArray:
        """Each tier's priority, by tier index."""
        return np.array([t.priority for t in self.tiers], dtype=np.int64)


NIYAMA_DEADLINES_S = (6.0, 600.0, 1800.0)


def niyama_tiers(interactive_tbt_s: float = 0.1, batch_tbt_s: float = 0.4) -> tuple[Tier, ...]:
    """Niyama's tiers: a 6 s TTFT deadline, then 600 s and 1800 s TTLT deadlines."""
    first, *rest = NIYAMA_DEADLINES_S
    tiers = [Tier("tier-0", ttft_s=first, tbt_s=interactive_tbt_s, priority=0)]
    for i, deadline in enumerate(rest, start=1):
        tiers.append(Tier(f"tier-{i}", ttlt_s=deadline, tbt_s=batch_tbt_s, priority=i))
    return tuple(tiers)


def inferno_classes() -> tuple[Tier, ...]:
    """Inferno's sample service classes (targets in ms in its files, seconds here)."""
    return (
        Tier("Premium", ttft_s=1.0, tbt_s=0.080, priority=1),
        Tier("Bronze", ttft_s=2.0, tbt_s=0.160, priority=2),
        Tier("Free", ttft_s=4.0, tbt_s=0.320, priority=3),
    )


def sincere_sla(sla_s: float) -> tuple[Tier, ...]:
    """SINCERE's end-to-end SLA as one tier."""
    return (Tier(f"sla-{sla_s:g}s", ttlt_s=sla_s),)


TIER_PRESETS: dict[str, Callable[[], tuple[Tier, ...]]] = {
    "default": lambda: (DEFAULT_TIER,),
    "niyama": niyama_tiers,
    "inferno": inferno_classes,
    "sincere-40": lambda: sincere_sla(40.0),
    "sincere-60": lambda: sincere_sla(60.0),
    "sincere-80": lambda: sincere_sla(80.0),
}
"""Named tier sets (see the module docstring)."""


def tier_preset(name: str, weights: Sequence[float] | None = None) -> TierMix:
    """The preset tier set ``name`` with optional weights (uniform by default)."""
    if name not in TIER_PRESETS:
        raise ConfigError("unknown tier preset", value=name, allowed=sorted(TIER_PRESETS))
    return TierMix(TIER_PRESETS[name](), None if weights is None else tuple(weights))
