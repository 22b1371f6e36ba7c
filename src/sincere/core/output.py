"""Writing a run's outputs: the output folder and ``requests.parquet``.

Shared by the simulator and the load generator, whose request tables have the same
columns (:mod:`sincere.core.records`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sincere.core.errors import ConfigError


def output_folder(out_dir: str | Path) -> Path:
    """``out_dir``, created if needed; a folder that cannot be made is a ConfigError."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("cannot create output folder", where=out, value=str(exc)) from None
    return out


def write_requests(table: pa.Table, path: Path) -> None:
    """Write ``table`` as Parquet: dictionary pages for the string columns only.

    Float columns hold nearly unique values, so a dictionary page there only costs
    time before Parquet falls back to plain encoding (most of the write time at 1M
    rows); the file reads back identically either way.
    """
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, path, use_dictionary=strings)
