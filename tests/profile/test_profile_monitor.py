"""The monitor: SINCERE-style column names, windows, counters and sampling thread."""

from __future__ import annotations

import os
import time

import pytest

from sincere.core.errors import ConfigError
from sincere.profile.monitor import Monitor, host_sample, summarize


def test_host_sample_has_sincere_style_columns() -> None:
    """CPU and memory columns are present, named group/.../quantity_unit, and plausible."""
    sample = host_sample(os.getpid())
    assert 0 < sample["memory/used_memory_sys_percent"] <= 100
    assert sample["memory/available_memory_sys_MB"] > 0
    assert sample["process/memory/resident_set_size_proc_MB"] > 1
    assert all(k.startswith(("cpu/", "memory/", "process/")) for k in sample)


def test_summarize_means_gauges_and_differences_counters() -> None:
    """A window reports the mean of gauges and the increase of counters."""
    samples = [
        {"cpu/interrupts/ctx_switches_count": 100.0, "memory/used_memory_sys_MB": 10.0},
        {"cpu/interrupts/ctx_switches_count": 160.0, "memory/used_memory_sys_MB": 20.0},
    ]
    out = summarize(samples)
    assert out == {"cpu/interrupts/ctx_switches_count": 60.0, "memory/used_memory_sys_MB": 15.0}


def test_window_picks_samples_in_range_or_the_nearest() -> None:
    """Samples inside [start, end] are summarised; an empty window takes the closest one."""
    clock = iter([1.0, 2.0, 3.0]).__next__
    values = iter([1.0, 5.0, 9.0]).__next__
    mon = Monitor(1.0, sampler=lambda: {"gpu/gpu_0_gpu_util_in_percent": values()}, clock=clock)
    for _ in range(3):
        mon.sample_once()
    assert mon.window(1.5, 3.5) == {"gpu/gpu_0_gpu_util_in_percent": 7.0}
    assert mon.window(0.0, 0.5) == {"gpu/gpu_0_gpu_util_in_percent": 1.0}


def test_background_thread_samples_at_the_interval() -> None:
    """Over ~0.25 s at a 0.02 s interval the thread takes several samples, then stops."""
    with Monitor(0.02, sampler=lambda: {"cpu/x_percent": 1.0}) as mon:
        time.sleep(0.25)
    taken = mon.num_samples
    assert taken >= 5
    time.sleep(0.05)
    assert mon.num_samples == taken


def test_interval_must_be_positive() -> None:
    """A zero interval is a ConfigError naming the interval."""
    with pytest.raises(ConfigError, match="interval"):
        Monitor(0.0)
