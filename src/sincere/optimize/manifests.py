"""A capacity plan as Kubernetes manifests: what to deploy, and when to scale it.

For every server of a :class:`~sincere.optimize.plan.Solution` that got replicas, one
**Deployment** of vLLM's OpenAI server (the plan's replicas; one pod per replica holding
the replica's GPUs as ``nvidia.com/gpu`` or, for AMD Instinct types, ``amd.com/gpu``, tensor
parallel over them -- a replica of attention ranks data-parallel over its ranks with
expert parallelism, ``--data-parallel-size`` and ``--enable-expert-parallel`` --,
``--max-num-seqs`` the plan's batch (per rank); pods pinned to the plan's
accelerator by a node label), a **Service** in front of it, and an autoscaler with the
plan's thresholds. A plan priced speculating (a YAML plan input's ``speculation``) gives
its pods vLLM's ``--speculative-config``, and the options' ``kv_offload`` (a CPU KV tier)
vLLM's ``--kv-offloading-size`` / ``--kv-offloading-backend``
(:mod:`~sincere.optimize.vllm_args`); without either the arguments are the plain ones.
Autoscalers:

* ``hpa`` (default): an ``autoscaling/v2`` HorizontalPodAutoscaler on the pods' average
  ``vllm:num_requests_running`` (the plan's batch per replica is the target: the load at
  which the plan meets the SLOs), between the plan's replicas (or the fewest over a load
  trace) and the most over the trace (or ``max_replicas_factor`` times the plan's). It
  reads the metric through a custom-metrics adapter (prometheus-adapter);
* ``keda``: a KEDA ScaledObject with the same bounds and a Prometheus trigger on the same
  metric, summed over the Deployment's pods, threshold the plan's batch;
* ``none``: no autoscaler.

:func:`validate_manifests` checks each manifest against the published Kubernetes JSON
schemas of a Kubernetes version (the ``kubernetes-validate`` package, offline, strict:
unknown fields are errors). KEDA's ScaledObject is a custom resource whose schema that
package does not carry: it is checked for its required fields only, and the result says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sincere.core.config import validate_config
from sincere.core.errors import ConfigError
from sincere.engine.kv_offload import KvOffloadConfig
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.data import Problem
from sincere.optimize.plan import ServerAllocation, Solution
from sincere.optimize.vllm_args import kv_offloading_args, speculative_args, speculative_config

if TYPE_CHECKING:
    from sincere.optimize.pd_input import ColocatedPlan

AUTOSCALERS = ("hpa", "keda", "none")
K8S_VERSION = "1.30.0"
"""The Kubernetes version whose schemas the manifests are checked against by default."""
RUNNING_METRIC = "vllm:num_requests_running"
_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class ManifestOptions:
    """How the manifests are written (module docstring)."""

    namespace: str = "default"
    image: str = "vllm/vllm-openai:latest"
    port: int = 8000
    accelerator_label: str = "sincere.io/accelerator"  # node label naming the GPU type
    autoscaler: str = "hpa"  # one of AUTOSCALERS
    max_replicas_factor: float = 2.0  # most replicas without a load trace, x the plan's
    prometheus: str = "http://prometheus.monitoring.svc:9090"  # KEDA's trigger
    model_ids: Mapping[str, str] = field(default_factory=dict)  # plan model -> --model
    gpu_resources: Mapping[str, str] = field(default_factory=dict)  # GPU type -> resource
    # a speculating plan's draft: the EAGLE head or draft model vLLM loads (vllm_args)
    speculative_model: str | None = None
    speculative_method: str | None = None  # vLLM's method name (eagle3 for an EAGLE-3 head)
    kv_offload: KvOffloadConfig | None = None  # a CPU KV tier per replica (engine.kv_offload)
    kv_offloading_backend: str = "native"  # vLLM's: native (OffloadingConnector) or lmcache

    def __post_init__(self) -> None:
        if self.autoscaler not in AUTOSCALERS:
            raise ConfigError("unknown autoscaler", value=self.autoscaler, allowed=AUTOSCALERS)
        if not 1 <= self.port <= 65535:
            raise ConfigError("port must be in 1..65535", value=self.port)
        if self.max_replicas_factor < 1.0:
            raise ConfigError("max_replicas_factor must be >= 1", value=self.max_replicas_factor)
        if self.kv_offload is not None:  # a disk tier or a bad backend: refused now
            kv_offloading_args(self.kv_offload, self.kv_offloading_backend)
        if not _dns_name(self.namespace) == self.namespace:
            raise ConfigError(
                "namespace must be a DNS-1123 label (lower-case letters, digits, '-')",
                value=self.namespace,
            )

    def gpu_resource(self, gpu_type: str) -> str:
        """The extended resource a pod asks its GPUs by: ``gpu_resources``' entry, else
        ``amd.com/gpu`` for AMD Instinct (MI...) types and ``nvidia.com/gpu`` for others."""
        if gpu_type in self.gpu_resources:
            return self.gpu_resources[gpu_type]
        return "amd.com/gpu" if gpu_type.upper().startswith("MI") else "nvidia.com/gpu"


def _dns_name(text: str) -> str:
    """``text`` as a DNS-1123 name: lower case, other characters as '-', at most 63."""
    name = _DNS.sub("-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "server"


@dataclass(frozen=True)
class Pool:
    """One server's deployment: its names and the plan's numbers."""

    name: str  # the Deployment's, Service's and autoscaler's name
    server: str
    model: str
    accelerator: str  # the plan's accelerator (e.g. 2xA100)
    gpu_type: str  # the physical unit (A100)
    gpus: int  # GPUs one replica holds
    replicas: int
    min_replicas: int
    max_replicas: int
    max_batch: int  # sequences per engine (vLLM's --max-num-seqs: per data-parallel rank)
    speculation: SpeculationConfig | None = None  # how the plan's replicas speculate
    # attention ranks in one replica (vLLM's --data-parallel-size); their experts form
    # one expert-parallel group over all the replica's GPUs (--enable-expert-parallel),
    # or without it are split by TP over them
    data_parallel: int = 1
    expert_parallel: bool = False

    @property
    def replica_batch(self) -> int:
        """Sequences one replica holds: every rank's."""
        return self.max_batch * self.data_parallel


def pools(
    problem: Problem,
    solution: Solution,
    options: ManifestOptions,
    history: Sequence[Solution] = (),
) -> list[Pool]:
    """The servers of ``solution`` that got replicas, with autoscaling bounds: the fewest
    and most replicas over ``history`` (a load trace's plans) when given."""
    servers = {s.name: s for s in problem.servers}
    seen: dict[str, str] = {}
    out = []
    for alloc in solution.allocations:
        if alloc.accelerator is None or alloc.num_replicas < 1:
            continue
        server = servers[alloc.server]
        acc = problem.accelerators[alloc.accelerator]
        perf = problem.models[(server.model, alloc.accelerator)]
        name = _dns_name(f"{alloc.server}-{alloc.accelerator}")
        if name in seen:
            raise ConfigError(
                f"servers {seen[name]!r} and {alloc.server!r} get the same manifest name",
                value=name,
            )
        seen[name] = alloc.server
        low, high = _bounds(alloc, history, options)
        out.append(Pool(name, alloc.server, server.model, alloc.accelerator, acc.type,
                        acc.multiplicity * perf.acc_count, alloc.num_replicas, low, high,
                        alloc.max_batch))  # fmt: skip
    return out


def colocated_pool(
    model: str,
    plan: ColocatedPlan,
    speculation: SpeculationConfig | None,
    options: ManifestOptions,
) -> Pool:
    """A YAML plan input's colocated plan as one pool: ``plan.count`` replicas of its
    instance shape, speculating as the plan was priced (``speculation``)."""
    cand = plan.candidate
    gpus = cand.num_gpus
    if cand.ep not in (1, gpus):
        raise ConfigError(
            f"vLLM's expert parallelism spans a replica's tensor- and data-parallel GPUs "
            f"(tp {cand.tp} x dp {cand.attention_dp} = {gpus}); the plan's ep cannot be "
            "written as vLLM arguments",
            where="candidates",
            value=cand.ep,
            allowed=f"1 or {gpus}",
        )
    shape = cand.accelerator if gpus == 1 else f"{gpus}x{cand.accelerator}"
    most = math.ceil(options.max_replicas_factor * plan.count)
    return Pool(_dns_name(f"{model}-{shape}"), model, model, shape, cand.accelerator,
                plan.num_gpus, plan.count, plan.count, most, plan.batch,
                speculation, cand.attention_dp, cand.ep > 1)  # fmt: skip


def _bounds(
    alloc: ServerAllocation, history: Sequence[Solution], options: ManifestOptions
) -> tuple[int, int]:
    counts = [
        a.num_replicas
        for sol in history
        for a in sol.allocations
        if a.server == alloc.server and a.accelerator == alloc.accelerator
    ]
    if counts:
        return max(1, min(counts)), max(max(counts), alloc.num_replicas)
    return alloc.num_replicas, math.ceil(options.max_replicas_factor * alloc.num_replicas)


def manifests(pool: Pool, options: ManifestOptions) -> list[dict[str, Any]]:
    """The Deployment, Service and autoscaler (if any) of ``pool``."""
    out = [_deployment(pool, options), _service(pool, options)]
    if options.autoscaler == "hpa":
        out.append(_hpa(pool, options))
    elif options.autoscaler == "keda":
        out.append(_keda(pool, options))
    return out


def _labels(pool: Pool) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": pool.name,
        "app.kubernetes.io/part-of": "sincere",
        "app.kubernetes.io/component": "engine",
    }


def _meta(pool: Pool, options: ManifestOptions) -> dict[str, Any]:
    return {
        "name": pool.name,
        "namespace": options.namespace,
        "labels": _labels(pool),
        "annotations": {
            "sincere.io/server": pool.server,
            "sincere.io/model": pool.model,
            "sincere.io/accelerator": pool.accelerator,
        },
    }


def _resource(
    api_version: str, kind: str, pool: Pool, options: ManifestOptions, spec: dict[str, Any]
) -> dict[str, Any]:
    """One Kubernetes object of ``pool``: its API version and kind, the pool's metadata
    (:func:`_meta`) and ``spec``."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _meta(pool, options),
        "spec": spec,
    }


def _deployment(pool: Pool, options: ManifestOptions) -> dict[str, Any]:
    model = options.model_ids.get(pool.model, pool.model)
    args = ["--model", model, "--tensor-parallel-size", str(pool.gpus // pool.data_parallel),
            "--max-num-seqs", str(pool.max_batch), "--port", str(options.port)]  # fmt: skip
    if pool.data_parallel > 1:
        args += ["--data-parallel-size", str(pool.data_parallel)]
    if pool.expert_parallel:
        args.append("--enable-expert-parallel")
    args += _engine_args(pool, options)
    container = {
        "name": "engine",
        "image": options.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": options.port}],
        "resources": {"limits": {options.gpu_resource(pool.gpu_type): pool.gpus}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
    }
    spec = {
        "replicas": pool.replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/name": pool.name}},
        "template": {
            "metadata": {"labels": _labels(pool)},
            "spec": {
                "nodeSelector": {options.accelerator_label: pool.gpu_type},
                "containers": [container],
            },
        },
    }
    return _resource("apps/v1", "Deployment", pool, options, spec)


def _engine_args(pool: Pool, options: ManifestOptions) -> list[str]:
    """vLLM's arguments for the pool's speculation and the options' CPU KV tier (none when
    neither is set: the arguments are those of a plain plan)."""
    args = []
    if pool.speculation is not None:
        config = speculative_config(
            pool.speculation, options.model_ids, options.speculative_model,
            options.speculative_method,
        )  # fmt: skip
        args += speculative_args(config)
    if options.kv_offload is not None:
        args += kv_offloading_args(options.kv_offload, options.kv_offloading_backend)
    return args


def _service(pool: Pool, options: ManifestOptions) -> dict[str, Any]:
    spec = {
        "selector": {"app.kubernetes.io/name": pool.name},
        "ports": [{"name": "http", "port": options.port, "targetPort": "http"}],
    }
    return _resource("v1", "Service", pool, options, spec)


def _hpa(pool: Pool, options: ManifestOptions) -> dict[str, Any]:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": RUNNING_METRIC},
            "target": {"type": "AverageValue", "averageValue": str(pool.replica_batch)},
        },
    }
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool.name},
        "minReplicas": pool.min_replicas,
        "maxReplicas": pool.max_replicas,
        "metrics": [metric],
    }
    return _resource("autoscaling/v2", "HorizontalPodAutoscaler", pool, options, spec)


def _keda(pool: Pool, options: ManifestOptions) -> dict[str, Any]:
    query = f'sum({RUNNING_METRIC}{{namespace="{options.namespace}",pod=~"{pool.name}-.*"}})'
    trigger = {
        "type": "prometheus",
        "metadata": {
            "serverAddress": options.prometheus,
            "query": query,
            "threshold": str(pool.replica_batch),
        },
    }
    spec = {
        "scaleTargetRef": {"name": pool.name},
        "minReplicaCount": pool.min_replicas,
        "maxReplicaCount": pool.max_replicas,
        "triggers": [trigger],
    }
    return _resource("keda.sh/v1alpha1", "ScaledObject", pool, options, spec)


@dataclass(frozen=True)
class Checked:
    """What the validation of one manifest found."""

    kind: str
    name: str
    against: str  # "Kubernetes 1.30.0 schema (strict)" or "required fields only"
    error: str | None  # None: valid


KEDA_REQUIRED = ("scaleTargetRef", "triggers")


def validate_manifests(
    docs: Sequence[Mapping[str, Any]], version: str = K8S_VERSION
) -> list[Checked]:
    """Check every manifest (module docstring); raises :class:`ConfigError` when the schema
    package is not installed."""
    try:
        import kubernetes_validate as kv
    except ImportError:
        raise ConfigError(
            "validating manifests needs the kubernetes-validate package",
            value=None,
            allowed="pip install 'sincere[k8s]'",
        ) from None
    out = []
    for doc in docs:
        kind, name = str(doc["kind"]), str(doc["metadata"]["name"])
        if doc["apiVersion"] == "keda.sh/v1alpha1":
            missing = [k for k in KEDA_REQUIRED if k not in doc.get("spec", {})]
            error = f"missing spec fields {missing}" if missing else None
            out.append(Checked(kind, name, "required fields only (no published schema)", error))
            continue
        try:
            kv.validate(dict(doc), version, strict=True)
            error = None
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            error = f"{where}: {exc.message}"
        except kv.SchemaNotFoundError:
            raise ConfigError(
                f"no Kubernetes {version} schema for {doc['apiVersion']} {kind}", value=version
            ) from None
        out.append(Checked(kind, name, f"Kubernetes {version} schema (strict)", error))
    return out


def options_from(data: Mapping[str, Any] | None) -> ManifestOptions:
    """:class:`ManifestOptions` from a mapping (a ``--k8s-config`` file); unknown keys are
    refused by name."""
    data = dict(data or {})
    known = set(ManifestOptions.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError("unknown manifest option", value=unknown, allowed=sorted(known))
    for key in ("model_ids", "gpu_resources"):
        given = data.get(key, {})
        if not isinstance(given, Mapping) or not all(isinstance(v, str) for v in given.values()):
            raise ConfigError(f"{key} must map names to strings", value=given)
    if data.get("kv_offload") is not None:
        data["kv_offload"] = validate_config(
            KvOffloadConfig, data["kv_offload"], "--k8s-config", prefix="kv_offload"
        )
    return ManifestOptions(**data)


def write_manifests(
    out_dir: Path, pools_: Sequence[Pool], options: ManifestOptions
) -> tuple[list[Path], list[Checked]]:
    """One YAML file per pool in ``out_dir`` (``kubectl apply -f out_dir``), each checked
    (:func:`validate_manifests`); nothing is written when a manifest is invalid."""
    docs = {p.name: manifests(p, options) for p in pools_}
    checked = validate_manifests([d for ds in docs.values() for d in ds])
    bad = [c for c in checked if c.error is not None]
    if bad:
        first = bad[0]
        raise ConfigError(
            f"{len(bad)} manifest(s) fail their schema; first: {first.kind} {first.name}",
            value=first.error,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, ds in docs.items():
        path = out_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(ds, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths, checked
