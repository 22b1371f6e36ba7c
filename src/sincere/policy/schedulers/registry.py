"""The registry of iteration-level engine schedulers (one line per policy)."""

from __future__ import annotations

from sincere.core.registry import Registry
from sincere.policy.schedulers.base import IterationScheduler

SCHEDULERS: Registry[type[IterationScheduler]] = Registry("engine scheduler")
"""Scheduler classes by name: fcfs, priority, edf, srpf, sarathi, niyama."""
