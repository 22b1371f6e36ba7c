"""Read one GPU's measured vLLM kernels (AIConfigurator's database layout).

The layout (NVIDIA's AIConfigurator, Apache-2.0): ``<gpu>/<family>/<framework>/<version>/
<table>.parquet`` with ``latency`` in milliseconds, e.g. ``h100_sxm/gemm/vllm/0.24.0/
gemm_perf.parquet``; ``<gpu>.yaml`` next to the folder holds the hardware figures. For
each table the newest version that holds it is read (versions compared numerically) --
or, given the engine version a fit is for, the newest version at or below it (the oldest
above it where none is), since a kernel's speed moves between vLLM releases -- and only
the columns and rows a fit uses are kept: a :class:`KernelTable` is a mapping of column
name to a numpy array, plus where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from sincere.core.errors import ConfigError
from sincere.perf.calibration import version_key

FArray = npt.NDArray[np.float64]
TABLES = {
    "gemm": ("gemm", "gemm_perf"),
    "context_attention": ("attention", "context_attention_perf"),
    "generation_attention": ("attention", "generation_attention_perf"),
    "custom_allreduce": ("comm", "custom_allreduce_perf"),
    "nccl": ("comm", "nccl_perf"),
    "moe": ("moe", "moe_perf"),
    "gdn": ("linear_attention", "gdn_perf"),
    "mla_generation": ("mla", "mla_generation_module_perf"),
}
"""Table name -> (family folder, file stem) of the tables the kernel fit reads."""
GPU_FOLDERS = {
    "A100-80GB": "a100_sxm",
    "H100-SXM": "h100_sxm",
    "H200": "h200_sxm",
    "L40S": "l40s",
    "B200": "b200_sxm",
    "RTX-PRO-6000": "rtx_pro_6000_server",
}
"""Catalog accelerator -> its folder in the database."""
OPTIONAL = {"window_size": 0}
"""Columns older collections lack, and the value they imply (no sliding window)."""


@dataclass(frozen=True, slots=True)
class KernelTable:
    """Selected columns of one measured table."""

    name: str  # a TABLES key
    path: Path  # the parquet file read
    version: str  # the framework version folder (vLLM, or NCCL for nccl)
    columns: dict[str, npt.NDArray[np.generic]]  # column -> values, one entry a row

    @property
    def num_rows(self) -> int:
        """Rows in the table (after the selection)."""
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def num(self, column: str) -> FArray:
        """A numeric column as floats."""
        return np.asarray(self.columns[column], dtype=np.float64)

    def where(self, mask: npt.NDArray[np.bool_]) -> KernelTable:
        """The rows where ``mask`` holds."""
        kept = {name: values[mask] for name, values in self.columns.items()}
        return KernelTable(self.name, self.path, self.version, kept)

    def equals(self, column: str, value: str) -> npt.NDArray[np.bool_]:
        """Mask of the rows whose ``column`` is ``value`` (compared as text)."""
        return np.asarray(self.columns[column].astype(str) == value)


UNUSED_SOURCES = {
    "vllm_marlin_int4_moe": "INT4 experts timed 3-5x slower than the Marlin rows of the 0.14 "
    "and 0.24 tables on every GPU, and than INT4 Kimi-K2.5 served on vLLM 0.15",
}
"""Kernel sources whose rows the expert families are not fitted on, and why: the 0.18-0.22
tables time vLLM's Marlin INT4 MoE kernel at 11-31 % of HBM bandwidth where the tables
before and after them (``vllm_marlin_moe``, 0.14; the compressed-tensors Marlin experts,
0.24) reach 52-81 % on the same GPUs, and InferenceX's INT4 Kimi-K2.5 points (vLLM 0.15.1,
B200) decode as fast as the 0.24 rows say, not 2.4x slower. A release holding only such
rows is fitted from the newest table (:func:`sincere.fit.kernels.fit_kernels`) and
prices no measured layer (:mod:`sincere.perf.measured_moe`)."""


def usable_sources(table: KernelTable) -> npt.NDArray[np.bool_]:
    """Mask of the rows whose ``kernel_source`` is not in :data:`UNUSED_SOURCES`."""
    if "kernel_source" not in table.columns:
        return np.ones(table.num_rows, dtype=bool)
    return ~np.isin(table.columns["kernel_source"].astype(str), list(UNUSED_SOURCES))


def dominant(table: KernelTable, column: str) -> str:
    """The most frequent value of ``column`` (the kernel vLLM picks most often)."""
    values, counts = np.unique(table.columns[column].astype(str), return_counts=True)
    return str(values[int(np.argmax(counts))])


def gpu_folder(directory: Path, accelerator: str) -> Path:
    """The GPU's folder: ``directory`` itself, or its child named for ``accelerator``."""
    if (directory / "gemm").is_dir() or (directory / "comm").is_dir():
        return directory
    name = GPU_FOLDERS.get(accelerator, accelerator.lower())
    folder = directory / name
    if not folder.is_dir():
        have = (
            sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
        )
        raise ConfigError(
            "no kernel folder for this accelerator", where=str(directory), value=name, allowed=have
        )
    return folder


def find_table(
    folder: Path, name: str, framework: str = "vllm", version: str | None = None
) -> tuple[Path, str] | None:
    """The file of table ``name`` under ``folder`` and its version (None: not measured): the
    newest version, or with ``version`` the newest at or below it (else the oldest above)."""
    family, stem = TABLES[name]
    framework = "nccl" if name == "nccl" else framework
    root = folder / family / framework
    if not root.is_dir():
        return None
    held = [p.name for p in root.iterdir() if (p / f"{stem}.parquet").is_file()]
    if not held:
        return None
    held.sort(key=version_key)
    chosen = held[-1]
    if version is not None:
        wanted = version_key(version)
        below = [v for v in held if version_key(v) <= wanted]
        chosen = below[-1] if below else held[0]
    return root / chosen / f"{stem}.parquet", chosen


def read_table(
    folder: Path, name: str, columns: list[str], version: str | None = None
) -> KernelTable | None:
    """Table ``name``'s ``columns`` from the version :func:`find_table` picks (None: not
    measured); ``version`` is vLLM's and does not apply to NCCL's tables."""
    found = find_table(folder, name, version=None if name == "nccl" else version)
    if found is None:
        return None
    path, version = found
    present = set(pq.read_schema(path).names)
    missing = [col for col in columns if col not in present]
    unknown = [col for col in missing if col not in OPTIONAL]
    if unknown:
        raise ConfigError("kernel table lacks columns", where=str(path), value=unknown)
    data = pq.read_table(path, columns=[col for col in columns if col in present])
    arrays = {
        col: np.asarray(data.column(col).to_numpy(zero_copy_only=False))
        for col in columns
        if col in present
    }
    for col in missing:  # older collections: the column's implied value
        arrays[col] = np.full(data.num_rows, OPTIONAL[col])
    return KernelTable(name, path, version, arrays)
