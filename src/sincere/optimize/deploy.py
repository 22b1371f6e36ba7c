"""Choosing how to deploy one model on a GPU pool (MaverIQ's deployment choice).

For a request to deploy (model, output length, cost type, optional latency SLO, fp16
only, placement strategy, batch size, minimum relative accuracy) every configuration
is enumerated: tensor-parallel degree (powers of two up to the pool size that divide the
model's attention heads), pipeline stages (up to ``max_pp`` and the layer count), weight
precision and KV-cache precision among those the catalog's relative-accuracy table knows;
for a mixture-of-experts model also the expert-parallel degree within the TP group and,
on one stage, attention ranks sharing one expert group (``attention_dp``: powers of two,
EP over every rank's GPUs, each rank holding its share of the batch; :func:`_dp_options`).
Configurations below the accuracy floor (relative MMLU accuracy, % of fp16), without an
estimate, that do not fit the pool's free memory (:mod:`~sincere.optimize.placement`) or
whose estimated latency misses the SLO are dropped. The rest are ranked by the cost type:

* ``min_lat``: latency; ``min_mem``: memory (GB, all GPUs);
* ``min_cost``: latency x memory; ``min_gpu_cost``: latency x number of GPUs.

When nothing meets the SLO, the lowest-latency configuration that fits is chosen and the
decision says so (``slo_fallback``). Latency and memory come from a :class:`CostModel`:
:class:`FingerprintCosts` (MaverIQ's estimator, roofline for models it has no
fingerprints of), :class:`RooflineCosts` or :class:`StepModelCosts` (any step-time model).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sincere.catalog import get_accelerator, get_model
from sincere.catalog.specs import ModelArch
from sincere.core.errors import ConfigError
from sincere.estimate.estimator import (
    Estimate,
    FingerprintBank,
    key_deployment,
    rank_batch,
    replica_memory_gb,
    roofline_estimate,
)
from sincere.estimate.fingerprint import ConfigKey
from sincere.optimize.placement import (
    PLACEMENT_STRATEGIES,
    GpuState,
    Placement,
    ReplicaShape,
    place,
)
from sincere.perf.base import Deployment, StepTimeModel

COST_TYPES: dict[str, Callable[[Estimate], float]] = {
    "min_lat": lambda e: e.latency_s,
    "min_mem": lambda e: e.memory_gb,
    "min_cost": lambda e: e.latency_s * e.memory_gb,
    "min_gpu_cost": lambda e: e.latency_s * e.num_gpus,
}
"""Cost type -> the score to minimise."""

KV_PRECISIONS: tuple[str, ...] = ("fp16", "int8")
SAME_AS_FP16 = frozenset({"bf16"})  # precisions not enumerated apart from fp16


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """A request to deploy a model (MaverIQ's deployment request)."""

    model: str  # catalog name or alias
    output_tokens: int  # tokens per request the latency is estimated for
    cost_type: str = "min_cost"  # a COST_TYPES name
    slo_s: float | None = None  # end-to-end latency target (None: none)
    fp16_only: bool = False  # only fp16 weights and KV cache
    strategy: str = "llf"  # a placement strategy: llf, packing, hybrid
    batch_size: int = 1  # requests per batch
    min_accuracy: float = 0.0  # relative accuracy floor, % of the fp16 model
    max_pp: int = 8  # most pipeline stages considered
    num_runners_up: int = 4  # alternatives reported besides the choice

    def __post_init__(self) -> None:
        if self.cost_type not in COST_TYPES:
            raise ConfigError("unknown cost type", value=self.cost_type, allowed=COST_TYPES)
        PLACEMENT_STRATEGIES.get(self.strategy)
        if self.output_tokens < 1 or self.batch_size < 1 or self.max_pp < 1:
            raise ConfigError(
                "output tokens, batch size and max_pp must be >= 1",
                value=(self.output_tokens, self.batch_size, self.max_pp),
            )
        if self.slo_s is not None and not self.slo_s > 0:
            raise ConfigError("slo_s must be > 0 seconds", value=self.slo_s)
        if not 0.0 <= self.min_accuracy <= 100.0:
            raise ConfigError("min_accuracy must be a percentage", value=self.min_accuracy)


class CostModel(Protocol):
    """Latency and memory of a configuration; ``None`` when it cannot say."""

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate | None:
        """Estimate ``key`` (batch size included) for requests of ``output_tokens``."""
        ...


@dataclass(frozen=True)
class RooflineCosts:
    """The catalog roofline (:func:`~sincere.estimate.estimator.roofline_estimate`)."""

    accelerator: str = "A6000"
    prompt_tokens: int = 128

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate | None:
        """Roofline estimate of ``key``."""
        return roofline_estimate(
            key, output_tokens, accelerator=self.accelerator, prompt_tokens=self.prompt_tokens
        )


@dataclass(frozen=True)
class FingerprintCosts:
    """MaverIQ's estimator; models without any fingerprint go to ``fallback``."""

    bank: FingerprintBank
    fallback: CostModel | None = field(default_factory=RooflineCosts)

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate | None:
        """Fingerprint estimate, or ``None`` for a configuration the bank cannot reach
        (attention ranks, which fingerprints do not time, go to ``fallback``)."""
        if not self.bank.has_model(key.model) or key.attention_dp > 1:
            return None if self.fallback is None else self.fallback.estimate(key, output_tokens)
        try:
            return self.bank.estimate(key, output_tokens)
        except ConfigError:
            return None


@dataclass(frozen=True)
class StepModelCosts:
    """Any step-time model: latency is a request-level batch, memory as vLLM plans it."""

    build: Callable[[Deployment], StepTimeModel]  # deployment -> step-time model
    accelerator: str = "A6000"
    prompt_tokens: int = 128

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate | None:
        """Estimate ``key`` with the built step-time model (with attention ranks, one rank
        of the group holding its share of the batch, :func:`roofline_estimate`'s way)."""
        dep = key_deployment(key, self.accelerator)
        model = self.build(dep)
        b = rank_batch(key)
        total = model.request_batch_s([self.prompt_tokens] * b, output_tokens)
        first = model.request_batch_s([self.prompt_tokens] * b, 1)
        tpot = (total - first) / max(output_tokens - 1, 1)
        memory = replica_memory_gb(dep, b, self.prompt_tokens, output_tokens)
        return Estimate(
            key, output_tokens, total - output_tokens * tpot, tpot, memory, "step-model"
        )


@dataclass(frozen=True, slots=True)
class RankedChoice:
    """One configuration that fits, with its estimate and placement."""

    estimate: Estimate  # latency, memory, configuration
    accuracy: float | None  # relative accuracy, % of fp16 (None: not measured)
    placement: Placement  # where its stages go
    score: float  # the cost type's score (lower is better)
    meets_slo: bool  # latency within the SLO (True when there is no SLO)


@dataclass(frozen=True, slots=True)
class DeployDecision:
    """The chosen configuration, the runners-up and why others were dropped."""

    request: DeployRequest
    chosen: RankedChoice | None  # None: nothing fits the pool
    runners_up: tuple[RankedChoice, ...]  # next best, in rank order
    slo_fallback: bool  # no configuration met the SLO: chosen by lowest latency
    num_considered: int  # configurations enumerated
    dropped: dict[str, int]  # reason -> configurations dropped for it


def _tp_options(model: ModelArch, num_gpus: int) -> list[int]:
    out, tp = [], 1
    while tp <= num_gpus:
        if model.num_heads % tp == 0:
            out.append(tp)
        tp *= 2
    return out


def _precisions(model: ModelArch, req: DeployRequest) -> list[tuple[str, str, float | None]]:
    """(weights, KV, relative accuracy) settings allowed for ``model``."""
    if req.fp16_only:
        return [("fp16", "fp16", model.relative_accuracy_of("fp16", "fp16") or 100.0)]
    out: list[tuple[str, str, float | None]] = []
    for prec in dict.fromkeys(p for p in ("fp16", *model.precisions) if p not in SAME_AS_FP16):
        for kv in KV_PRECISIONS:
            acc = model.relative_accuracy_of(prec, kv)
            if acc is None and (prec, kv) == ("fp16", "fp16"):
                acc = 100.0
            if acc is None and kv != "fp16":
                continue  # a quantized KV cache nobody measured the accuracy of
            out.append((prec, kv, acc))
    return out


def enumerate_configs(
    model: ModelArch, req: DeployRequest, num_gpus: int
) -> list[tuple[ConfigKey, float | None]]:
    """Every (configuration, relative accuracy) of ``model`` on up to ``num_gpus`` GPUs."""
    out = []
    for prec, kv, acc in _precisions(model, req):
        for tp in _tp_options(model, num_gpus):
            for ep in _ep_options(model, tp):
                for pp in range(1, min(req.max_pp, model.num_layers, num_gpus // tp) + 1):
                    key = ConfigKey(model.name, prec, kv, tp, pp, req.batch_size, ep)
                    out.append((key, acc))
            for ranks in _dp_options(model, tp, num_gpus, req.batch_size):
                key = ConfigKey(model.name, prec, kv, tp, 1, req.batch_size, tp * ranks, ranks)
                out.append((key, acc))
    return out


def _dp_options(model: ModelArch, tp: int, num_gpus: int, batch_size: int) -> list[int]:
    """Attention ranks of an MoE model at ``tp`` (one pipeline stage): powers of two from 2
    whose ``ranks x tp`` GPUs fit the pool and spread the experts evenly (EP over all of
    them, as vLLM's ``--enable-expert-parallel`` does), at most one rank per request of
    the batch (a rank without a request only pads the group)."""
    if not model.is_moe:
        return []
    out, ranks = [], 2
    while ranks * tp <= num_gpus and ranks <= batch_size:
        if model.num_experts % (ranks * tp) == 0:
            out.append(ranks)
        ranks *= 2
    return out


def _ep_options(model: ModelArch, tp: int) -> list[int]:
    """EP degrees of an MoE model at ``tp``: divisors of ``tp`` that divide the experts
    (1 for a dense model)."""
    if not model.is_moe:
        return [1]
    return [ep for ep in range(1, tp + 1) if tp % ep == 0 and model.num_experts % ep == 0]


def runnable_precision(precision: str, accelerator: str) -> bool:
    """The accelerator can run weights in ``precision`` (natively or dequantised)."""
    try:
        get_accelerator(accelerator).compute_precision(precision)
    except ConfigError:
        return False
    return True


def replica_shape(model: ModelArch, est: Estimate) -> ReplicaShape:
    """Per-GPU memory of ``est``'s configuration: a fixed share plus per-layer weights.

    A layer's weights are the non-embedding parameters over the layer count, in the
    weight precision, split over the stage's TP ranks; the rest of the estimated memory
    is spread evenly over the replica's GPUs.
    """
    key = est.key
    embed = model.vocab_size * model.hidden_size * (1 if model.tied_embeddings else 2)
    per_param = model.weight_bytes(key.precision) / (model.num_params_b * 1e9)
    layer_total_gb = (model.num_params_b * 1e9 - embed) / model.num_layers * per_param / 1e9
    if key.attention_dp > 1:  # every rank holds the dense layers: the group, one stage
        dense_share = 1.0 - model.param_groups()[0] / (model.num_params_b * 1e9 - embed)
        layer_total_gb *= key.attention_dp * dense_share + (1.0 - dense_share)
    layers_gb = min(est.memory_gb, model.num_layers * layer_total_gb)
    fixed = (est.memory_gb - layers_gb) / est.num_gpus
    stage = key.tp * key.attention_dp  # GPUs a stage spans (a group: every rank's)
    return ReplicaShape(
        stage, key.pp, model.num_layers, fixed, layers_gb / model.num_layers / stage
    )


def _rank(choices: list[RankedChoice], by_latency: bool) -> list[RankedChoice]:
    def order(c: RankedChoice) -> tuple[float, ...]:
        e = c.estimate
        first = e.latency_s if by_latency else c.score
        return (first, e.latency_s, float(e.num_gpus), e.memory_gb, e.key.tp, e.key.pp)

    return sorted(choices, key=order)


def choose_deployment(
    req: DeployRequest, pool: Sequence[GpuState], costs: CostModel
) -> DeployDecision:
    """Enumerate, filter, rank and place (module docstring)."""
    model = get_model(req.model)
    configs = enumerate_configs(model, req, len(pool))
    dropped = {"accuracy": 0, "precision": 0, "no_estimate": 0, "memory": 0, "slo": 0}
    fits: list[RankedChoice] = []
    score = COST_TYPES[req.cost_type]
    runnable = {p: runnable_precision(p, pool[0].accelerator) for p in model.precisions}
    for key, acc in configs:
        if not runnable.get(key.precision, True):
            dropped["precision"] += 1
            continue
        if req.min_accuracy > 0 and (acc is None or acc < req.min_accuracy):
            dropped["accuracy"] += 1
            continue
        est = costs.estimate(key, req.output_tokens)
        if est is None:
            dropped["no_estimate"] += 1
            continue
        where = place(pool, replica_shape(model, est), req.strategy)
        if where is None:
            dropped["memory"] += 1
            continue
        meets = req.slo_s is None or est.latency_s <= req.slo_s
        fits.append(RankedChoice(est, acc, where, score(est), meets))
    meeting = [c for c in fits if c.meets_slo]
    dropped["slo"] = len(fits) - len(meeting)
    fallback = bool(fits) and not meeting
    ranked = _rank(fits if fallback else meeting, by_latency=fallback)
    return DeployDecision(
        request=req,
        chosen=ranked[0] if ranked else None,
        runners_up=tuple(ranked[1 : 1 + req.num_runners_up]),
        slo_fallback=fallback,
        num_considered=len(configs),
        dropped=dropped,
    )


# --------------------------------------------------------------------------- GPU pools
class _PoolGpu(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accelerator: str | None = None  # catalog name; default: the file's ``accelerator``
    memory_gb: float | None = None  # default: the catalog's
    used_gb: float = 0.0


class _PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accelerator: str = "A6000"
    count: int | None = None  # shorthand: this many empty GPUs (when ``gpus`` is absent)
    gpus: list[_PoolGpu] = []


def pool_from_dict(data: object, where: str = "pool") -> list[GpuState]:
    """A pool from ``{accelerator, count}`` or ``{accelerator, gpus: [{used_gb, ...}]}``."""
    try:
        spec = _PoolFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], where=f"{where}: {loc}", value=first.get("input")) from None
    gpus = spec.gpus or [_PoolGpu() for _ in range(spec.count or 0)]
    if not gpus:
        raise ConfigError("a pool needs GPUs", where=where, allowed="'count' or a 'gpus' list")
    out = []
    for i, g in enumerate(gpus):
        acc = get_accelerator(g.accelerator or spec.accelerator)
        out.append(GpuState(i, acc.name, g.memory_gb or acc.memory_gb, g.used_gb))
    return out


_SHORTHAND = re.compile(r"^(\d+)x([A-Za-z0-9._-]+?)(?::([\d.,\s]+))?$")


def parse_pool(text: str) -> list[GpuState]:
    """``"8xA6000"``, ``"4xA6000:10,0,0,30"`` (used GB per GPU) or a YAML / JSON file."""
    match = _SHORTHAND.match(text.strip())
    if match is None:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                "GPU pool is neither a shorthand nor a file",
                value=text,
                allowed="NxACCEL[:used_gb,...] (e.g. 8xA6000) or a YAML/JSON file",
            )
        raw = path.read_text()
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
        return pool_from_dict(data, str(path))
    count, name, used = int(match.group(1)), match.group(2), match.group(3)
    used_gb = [float(u) for u in used.split(",")] if used else [0.0] * count
    if len(used_gb) != count:
        raise ConfigError(f"pool {text!r} lists {len(used_gb)} used figures for {count} GPUs")
    return pool_from_dict(
        {"accelerator": name, "gpus": [{"used_gb": u} for u in used_gb]}, f"pool {text!r}"
    )
