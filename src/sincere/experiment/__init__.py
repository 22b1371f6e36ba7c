"""Experiments: sweep specs -> cells run in parallel -> one results table -> reports.

Also the capacity search (highest rate whose worst tier misses at most 1 %). See
docs/experiments.md.
"""

from sincere.experiment.builtin import builtin_names, resolve_spec
from sincere.experiment.grid import Cell, apply_quick, expand
from sincere.experiment.runner import RunReport, run_experiment
from sincere.experiment.spec import ExperimentSpec, load_spec

__all__ = [
    "Cell",
    "ExperimentSpec",
    "RunReport",
    "apply_quick",
    "builtin_names",
    "expand",
    "load_spec",
    "resolve_spec",
    "run_experiment",
]
