"""A speculating instance's acceptance as the gateway knows it: declared, then measured.

A backend whose declared ``deployment`` speculates (``engine.speculation``) is estimated by
the routers with :class:`~sincere.perf.speculation.PerTokenDecode` (the planner's):
its decode-only iterations priced per output token, ``(draft + verify) / tokens per
step``, at the declared acceptance. Its engine's counters, scraped
from its Prometheus ``/metrics`` (vLLM's ``vllm:spec_decode_num_drafts``,
``_num_draft_tokens`` and ``_num_accepted_tokens``, cumulative since the engine started),
replace that acceptance once they count at least :data:`MIN_DRAFTS` drafts: the estimate's
tokens per step are then the measured ``1 + accepted / drafts``
(:func:`~sincere.perf.measured_acceptance.measured_params`). Fewer drafts (a fresh engine,
or one restarted, its counters back near zero) keep or restore the declared acceptance.

Every speculating instance's measured figures are shown whether it declares a deployment
or not: ``/health`` (to admins when keys are on) under ``spec_decode`` and the gateway's
``/metrics`` as ``sincere_gateway_spec_acceptance_rate{instance}`` (accepted over drafted
tokens), ``sincere_gateway_spec_mean_acceptance_length{instance}`` (tokens per draft:
``1 + accepted / drafts``, vLLM's mean acceptance length) and
``sincere_gateway_spec_drafts{instance}`` (drafts counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sincere.engine.build import deployment_of, speculator_of, step_model_of
from sincere.engine.spec import DeploymentSpec
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.measured_acceptance import measured_params
from sincere.perf.speculation import PerTokenDecode, SpeculativeDecode
from sincere.serve.backends.config import BackendConfig

MIN_DRAFTS = 100
"""Drafts an instance's counters must hold before its measured acceptance replaces the
declared one in the routers' estimates: at 100 drafts of k tokens each the accepted share's
standard error is at most 0.05 / sqrt(k) (a binomial's, at rate 0.5), under the spread of
the declared rates one plans with."""


@dataclass(frozen=True, slots=True)
class SpecCounts:
    """An engine's speculative-decoding counters as last read (cumulative, vLLM's)."""

    drafts: float  # speculative steps of sequences
    draft_tokens: float  # tokens drafted
    accepted_tokens: float  # of those, accepted by the verify pass

    @property
    def acceptance_rate(self) -> float | None:
        """Share of drafted tokens accepted (None: nothing drafted yet)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens > 0 else None

    @property
    def mean_acceptance_length(self) -> float | None:
        """Tokens a sequence gained per draft: the accepted ones plus the verify pass's
        own (None: no draft yet)."""
        return 1.0 + self.accepted_tokens / self.drafts if self.drafts > 0 else None

    def as_json(self) -> dict[str, Any]:
        """The figures ``/health`` shows."""
        return {
            "acceptance_rate": self.acceptance_rate,
            "mean_acceptance_length": self.mean_acceptance_length,
            "num_drafts": self.drafts,
            "num_draft_tokens": self.draft_tokens,
            "num_accepted_tokens": self.accepted_tokens,
        }


@dataclass(frozen=True, slots=True)
class Declared:
    """A backend's declared deployment, built as the simulator builds an instance's."""

    spec: DeploymentSpec
    deployment: Deployment
    step: StepTimeModel
    where: str  # the config path errors name


def declared(config: BackendConfig) -> Declared | None:
    """``config``'s declared deployment and its step-time model (None: none declared)."""
    spec = config.deployment
    if spec is None:
        return None
    where = f"backends.{config.name}.deployment"
    deployment = deployment_of(spec, spec.model_names[0], where)
    return Declared(spec, deployment, step_model_of(spec, deployment, where), where)


def declared_speculation(config: BackendConfig) -> SpeculativeDecode | None:
    """The speculation ``config``'s declared deployment runs (None: no deployment, or one
    that does not speculate); priced on the deployment's step model, as the simulator's."""
    built = declared(config)
    if built is None:
        return None
    speculator = speculator_of(built.spec, built.deployment, built.step, None, built.where)
    return None if speculator is None else speculator.step_model.spec


class AcceptanceEstimate:
    """The step model routers estimate a speculating instance with (module docstring)."""

    def __init__(self, declared: SpeculativeDecode) -> None:
        self.declared = declared
        self._declared_model = PerTokenDecode(declared)
        self.model: StepTimeModel = self._declared_model
        self.measured = False  # whether ``model`` runs at the measured acceptance
        self._counts: tuple[float, float] | None = None  # the counts ``model`` was built on

    def observe(self, counts: SpecCounts | None) -> StepTimeModel:
        """The step model after a scrape that read ``counts`` (None: none reported)."""
        if counts is None or counts.drafts < MIN_DRAFTS:
            self.model, self.measured, self._counts = self._declared_model, False, None
            return self.model
        key = (counts.drafts, counts.accepted_tokens)
        if key != self._counts:
            d = self.declared
            params = measured_params(d.params, counts.drafts, counts.accepted_tokens)
            decode = SpeculativeDecode(d.target, params, d.num_layers, d.draft)
            self.model, self.measured, self._counts = PerTokenDecode(decode), True, key
        return self.model


_GAUGES = (
    ("sincere_gateway_spec_acceptance_rate", "Accepted over drafted tokens.", "acceptance_rate"),
    ("sincere_gateway_spec_mean_acceptance_length", "Tokens per draft, 1 + accepted/drafts.",
     "mean_acceptance_length"),
    ("sincere_gateway_spec_drafts", "Drafts counted by the engine.", "drafts"),
)  # fmt: skip
"""The gateway's speculation gauges: name, help, the :class:`SpecCounts` figure shown."""


def spec_metrics_lines(counts: Iterable[tuple[str, SpecCounts]]) -> str:
    """The gateway's ``/metrics`` gauges of each instance's measured speculation."""
    rows = sorted(counts, key=lambda row: row[0])
    out: list[str] = []
    for name, help_text, field in _GAUGES:
        values = [(inst, getattr(c, field)) for inst, c in rows]
        present = [(inst, v) for inst, v in values if v is not None]
        if not present:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        out += [f'{name}{{instance="{_escape(inst)}"}} {v:.6g}' for inst, v in present]
    return "".join(line + "\n" for line in out)


def _escape(value: str) -> str:
    """A label value in Prometheus' text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
