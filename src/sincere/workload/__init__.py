"""Workloads: arrival processes, length distributions, model mixes, tiers and traces.

``generate(config, seed)`` turns a :class:`WorkloadConfig` (the ``workload:`` section of
a simulation config) into :class:`~sincere.core.request.RequestArrays`; ``read_trace`` /
``write_trace`` convert published traces. See docs/workload.md.
"""

from sincere.workload.arrivals import (
    ARRIVALS,
    ArrivalProcess,
    Constant,
    Diurnal,
    Gamma,
    Poisson,
    SincereBursty,
    SincereRamp,
    Steps,
    TraceReplay,
    make_arrival,
)
from sincere.workload.config import WorkloadConfig, generate, load_workload_config
from sincere.workload.lengths import (
    LENGTHS,
    CopulaLengths,
    Empirical,
    Fixed,
    Independent,
    JointLengths,
    LengthDistribution,
    LogNormal,
    PairedLengths,
    Uniform,
    length_sources,
    load_length_table,
    make_lengths,
)
from sincere.workload.mixes import (
    TIER_PRESETS,
    ModelMix,
    TierMix,
    inferno_classes,
    niyama_tiers,
    sincere_sla,
    tier_preset,
)
from sincere.workload.stats import TraceStats, plot_trace, trace_stats
from sincere.workload.traces import (
    TRACE_READERS,
    TRACE_WRITERS,
    detect_format,
    read_trace,
    write_trace,
)

__all__ = [
    "ARRIVALS",
    "LENGTHS",
    "TIER_PRESETS",
    "TRACE_READERS",
    "TRACE_WRITERS",
    "ArrivalProcess",
    "Constant",
    "CopulaLengths",
    "Diurnal",
    "Empirical",
    "Fixed",
    "Gamma",
    "Independent",
    "JointLengths",
    "LengthDistribution",
    "LogNormal",
    "ModelMix",
    "PairedLengths",
    "Poisson",
    "SincereBursty",
    "SincereRamp",
    "Steps",
    "TierMix",
    "TraceReplay",
    "TraceStats",
    "Uniform",
    "WorkloadConfig",
    "detect_format",
    "generate",
    "inferno_classes",
    "length_sources",
    "load_length_table",
    "load_workload_config",
    "make_arrival",
    "make_lengths",
    "niyama_tiers",
    "plot_trace",
    "read_trace",
    "sincere_sla",
    "tier_preset",
    "trace_stats",
    "write_trace",
]
