"""A CPU / memory / GPU monitor that samples in the background during a profile.

SINCERE recorded ~170 monitor columns next to every batch it profiled (CPU load and
interrupts, system and process memory, GPU memory and utilisation from nvidia-smi).
This monitor samples the subset that matters for capacity work, with the same naming
style (``group/.../quantity_unit``): ``cpu/...`` and ``memory/...`` from psutil,
``process/...`` for a watched process (the engine server when we started it), and,
when NVML is importable (``pynvml`` from the optional nvidia-ml-py package),
``gpu/gpu_<i>_...`` per device. Sampling runs on a daemon thread every
``interval_s``; :meth:`Monitor.window` summarises the samples taken between two
instants (the mean of gauges, the increase of counters), so each profiled point gets
one row of monitor columns.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from sincere.core.errors import ConfigError

MB = 1e6  # SINCERE's memory columns are in MB of 1e6 bytes
MIB = 2**20  # nvidia-smi reports MiB

COUNTERS = frozenset({"cpu/interrupts/ctx_switches_count", "cpu/interrupts/interrupts_count"})
"""Monotone counters: a window reports their increase, not their mean."""

Sample = dict[str, float]


def _nvml() -> ModuleType | None:
    """The NVML bindings, initialised, or ``None`` when absent or without a GPU."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no device: monitoring goes on without GPU columns
        return None
    module: ModuleType = pynvml
    return module


def host_sample(pid: int | None = None) -> Sample:
    """One reading of the CPU, system memory and (if ``pid``) process memory columns."""
    mem = psutil.virtual_memory()
    stats = psutil.cpu_stats()
    load_one = os.getloadavg()[0] / (psutil.cpu_count() or 1) * 100.0
    sample: Sample = {
        "cpu/utilization/cpu_sys_percent": psutil.cpu_percent(interval=None),
        "cpu/load/avg_sys_load_one_min_percent": load_one,
        "cpu/interrupts/ctx_switches_count": float(stats.ctx_switches),
        "cpu/interrupts/interrupts_count": float(stats.interrupts),
        "memory/available_memory_sys_MB": mem.available / MB,
        "memory/used_memory_sys_MB": mem.used / MB,
        "memory/used_memory_sys_percent": mem.percent,
    }
    if pid is not None:
        sample.update(_process_sample(pid))
    return sample


def _process_sample(pid: int) -> Sample:
    """Resident memory and CPU share of ``pid`` and its children (empty if it is gone)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        cpu = sum(p.cpu_percent(interval=None) for p in procs)
    except psutil.Error:
        return {}
    return {"process/memory/resident_set_size_proc_MB": rss / MB, "process/cpu_proc_percent": cpu}


def gpu_sample(nvml: Any) -> Sample:
    """Utilisation and framebuffer memory of every GPU NVML sees."""
    sample: Sample = {}
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        sample[f"gpu/gpu_{i}_gpu_util_in_percent"] = float(util.gpu)
        sample[f"gpu/gpu_{i}_mem_util_in_percent"] = float(util.memory)
        sample[f"gpu/gpu_{i}_fb_used_MiB"] = mem.used / MIB
        sample[f"gpu/gpu_{i}_fb_total_MiB"] = mem.total / MIB
    return sample


def summarize(samples: list[Sample]) -> Sample:
    """Mean of each gauge and increase of each counter over ``samples`` (in time order)."""
    if not samples:
        return {}
    keys = sorted({k for s in samples for k in s})
    out: Sample = {}
    for key in keys:
        values = [s[key] for s in samples if key in s]
        out[key] = values[-1] - values[0] if key in COUNTERS else sum(values) / len(values)
    return out


@dataclass
class Monitor:
    """Samples ``sampler`` every ``interval_s`` on a background thread between start / stop.

    ``sampler`` defaults to :func:`host_sample` of ``pid`` plus GPU columns when NVML is
    available. Use as a context manager. ``clock`` is injectable for tests.
    """

    interval_s: float = 1.0
    pid: int | None = None
    sampler: Callable[[], Sample] | None = None
    clock: Callable[[], float] = time.monotonic
    _samples: list[tuple[float, Sample]] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError("monitor interval must be > 0 s", value=self.interval_s)
        if self.sampler is None:
            self.sampler = _default_sampler(self.pid)

    def sample_once(self) -> None:
        """Take one sample now and keep it."""
        assert self.sampler is not None  # set in __post_init__
        reading = self.sampler()
        with self._lock:
            self._samples.append((self.clock(), reading))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> Monitor:
        """Take a first sample and start the sampling thread."""
        self.sample_once()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sincere-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (idempotent) after one last sample."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample_once()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def window(self, start_at: float, end_at: float) -> Sample:
        """Summary of the samples in ``[start_at, end_at]`` (the closest one if none fell in)."""
        with self._lock:
            samples = list(self._samples)
        inside = [s for t, s in samples if start_at <= t <= end_at]
        if not inside and samples:
            mid = (start_at + end_at) / 2
            inside = [min(samples, key=lambda ts: abs(ts[0] - mid))[1]]
        return summarize(inside)

    @property
    def num_samples(self) -> int:
        """Samples taken so far."""
        with self._lock:
            return len(self._samples)


def _default_sampler(pid: int | None) -> Callable[[], Sample]:
    nvml = _nvml()

    def sample() -> Sample:
        reading = host_sample(pid)
        if nvml is not None:
            reading.update(gpu_sample(nvml))
        return reading

    return sample
