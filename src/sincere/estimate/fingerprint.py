"""MaverIQ's fingerprints: per-layer latency and memory from 1- and 2-layer variants.

A *fingerprint* is the same architecture cut to a few hidden layers, profiled in the
deployment's configuration (TP, PP, weight precision, KV precision, batch size) at two
output lengths. MaverIQ profiles 1- and 2-layer variants at o1 = 10 and o2 = 20 output
tokens, giving latencies ``l(n, o)``; since ``l(n, o) = TTFT_other + n*TTFT_layer +
o*(TPOT_other + n*TPOT_layer)`` (docs/references.md,
MaverIQ) the four measurements solve exactly for

* ``TPOT_layer = [(l(n2,o2) - l(n1,o2)) - (l(n2,o1) - l(n1,o1))] / ((o2-o1)(n2-n1))``
* ``TPOT_other = (l(n1,o2) - l(n1,o1)) / (o2-o1) - n1*TPOT_layer``
* ``TTFT_layer = (l(n2,o1) - l(n1,o1)) / (n2-n1) - o1*TPOT_layer``
* ``TTFT_other = l(n1,o1) - n1*TTFT_layer - o1*(n1*TPOT_layer + TPOT_other)``

With n1 = 1, n2 = 2 these are MaverIQ's formulas verbatim. Pipeline-parallel fingerprints
need one layer per stage, so a PP=p fingerprint has n1 = p layers (``PP_Map`` "1 1 ...")
and n2 = p + 1 ("2 1 ..."); the layer count of a row is the sum of its ``PP_Map``, and the
general form above keeps ``*_other`` free of the extra stages' layers. The full model of
``N_L`` layers then has ``TTFT = N_L*TTFT_layer + TTFT_other`` (likewise TPOT) and
``latency(out) = TTFT + out*TPOT``. Memory is linear in the layer count through the two
fingerprints. Batch sizes: ``L(bs) = L(1) + (bs-1)*max(0, L(2) - L(1))``.

Files are MaverIQ's CSVs (``fingerprint_data_collection*.csv``; columns ``Model, TP, PP,
PP_Map, DTYPE, INT8_KV_Cache, Output_Lenght, Batch_Size, Latency`` (s),
``Memory-After-Run`` (GB, summed over the GPUs)). When a configuration is measured in
more than one file (the ``_BS`` file re-measures batch 1, in another session and some
10 % faster), the first file read wins by default (``duplicates="first"``): mixing
sessions adds their offset to the per-layer differences; ``duplicates="mean"``
averages instead. Repeats within one file are averaged.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sincere.catalog import get_model
from sincere.catalog.accuracy import MAVERIQ_PRECISIONS
from sincere.catalog.specs import accuracy_key
from sincere.core.csv_lines import refuse_blank_lines
from sincere.core.errors import ConfigError, DataError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "Model",
    "TP",
    "PP",
    "PP_Map",
    "DTYPE",
    "INT8_KV_Cache",
    "Output_Lenght",
    "Batch_Size",
    "Latency",
    "Memory-After-Run",
)
"""Columns a fingerprint CSV must have (MaverIQ's spelling, ``Output_Lenght`` included)."""

KV_FLAGS: dict[str, str] = {"true": "int8", "false": "fp16"}
"""MaverIQ's ``INT8_KV_Cache`` flag -> sincere's KV precision."""

DTYPES: dict[str, str] = {**MAVERIQ_PRECISIONS, "float32": "fp32"}
"""``DTYPE`` spellings -> sincere's precision: MaverIQ's, plus ``float32`` that
``sincere profile local --dtype float32`` writes."""


@dataclass(frozen=True, slots=True, order=True)
class ConfigKey:
    """One deployment configuration of one model."""

    model: str  # catalog name when the catalog knows the model, else as in the file
    precision: str  # weight precision: fp16, int8, int4, int4-gptq
    kv_precision: str  # KV-cache precision: fp16 or int8
    tp: int  # tensor-parallel degree
    pp: int  # pipeline-parallel degree
    batch_size: int  # sequences per batch
    ep: int = 1  # expert-parallel degree (MoE models; the roofline prices it, fingerprints do not)
    # attention ranks sharing one expert group (MoE, pp 1): the replica is attention_dp ranks
    # of tp GPUs, each holding its share of the batch (the roofline prices it; fingerprints
    # do not)
    attention_dp: int = 1

    @property
    def precision_key(self) -> str:
        """``"int8+kv-int8"``-style key (as relative-accuracy tables use)."""
        return accuracy_key(self.precision, self.kv_precision)

    def with_parallelism(self, tp: int, pp: int) -> ConfigKey:
        """The same configuration at another TP / PP."""
        return ConfigKey(
            self.model, self.precision, self.kv_precision, tp, pp, self.batch_size, self.ep,
            self.attention_dp,
        )  # fmt: skip

    def with_batch(self, batch_size: int) -> ConfigKey:
        """The same configuration at another batch size."""
        return ConfigKey(
            self.model, self.precision, self.kv_precision, self.tp, self.pp, batch_size, self.ep,
            self.attention_dp,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LayerTerms:
    """Per-layer and fixed parts of TTFT and TPOT (seconds), plus memory (GB)."""

    ttft_layer_s: float  # TTFT added by one hidden layer
    ttft_other_s: float  # TTFT of everything else (embeddings, head, runtime)
    tpot_layer_s: float  # time per output token added by one hidden layer
    tpot_other_s: float  # time per output token of everything else
    memory_layer_gb: float  # memory one hidden layer adds (all GPUs)
    memory_other_gb: float  # memory of everything else (all GPUs)

    def at_depth(self, num_layers: int) -> FullDepth:
        """The model with ``num_layers`` hidden layers."""
        return FullDepth(
            ttft_s=num_layers * self.ttft_layer_s + self.ttft_other_s,
            tpot_s=num_layers * self.tpot_layer_s + self.tpot_other_s,
            memory_gb=num_layers * self.memory_layer_gb + self.memory_other_gb,
        )


@dataclass(frozen=True, slots=True)
class FullDepth:
    """A whole model's TTFT, TPOT (s) and memory (GB, all GPUs) in one configuration."""

    ttft_s: float
    tpot_s: float
    memory_gb: float

    def latency_s(self, output_tokens: int) -> float:
        """End-to-end latency of a request producing ``output_tokens``: TTFT + out*TPOT."""
        return self.ttft_s + output_tokens * self.tpot_s


def layer_terms(
    lat: Mapping[tuple[int, int], float],
    mem: Mapping[int, float] | None = None,
) -> LayerTerms:
    """Solve the fingerprint equations (module docstring) from ``lat[(layers, out)]``.

    ``lat`` must hold exactly two layer counts times two output lengths; ``mem`` maps
    each layer count to its memory (GB; zero when not given).
    """
    layers = sorted({n for n, _ in lat})
    outs = sorted({o for _, o in lat})
    if len(layers) != 2 or len(outs) != 2 or len(lat) != 4:
        raise ConfigError(
            "a fingerprint needs 2 layer counts x 2 output lengths",
            value=sorted(lat),
            allowed="e.g. {(1,10), (1,20), (2,10), (2,20)}",
        )
    (n1, n2), (o1, o2) = layers, outs
    dn, do = n2 - n1, o2 - o1
    tpot_layer = ((lat[n2, o2] - lat[n1, o2]) - (lat[n2, o1] - lat[n1, o1])) / (do * dn)
    tpot_other = (lat[n1, o2] - lat[n1, o1]) / do - n1 * tpot_layer
    ttft_layer = (lat[n2, o1] - lat[n1, o1]) / dn - o1 * tpot_layer
    ttft_other = lat[n1, o1] - n1 * ttft_layer - o1 * (n1 * tpot_layer + tpot_other)
    m = mem or {}
    mem_layer = (m.get(n2, 0.0) - m.get(n1, 0.0)) / dn
    mem_other = m.get(n1, 0.0) - n1 * mem_layer
    return LayerTerms(ttft_layer, ttft_other, tpot_layer, tpot_other, mem_layer, mem_other)


def batch_law(at_1: float, at_2: float, batch_size: int) -> float:
    """MaverIQ's batch law: ``L(bs) = L(1) + (bs - 1) * max(0, L(2) - L(1))``."""
    if batch_size < 1:
        raise ConfigError("batch size must be >= 1", value=batch_size)
    return at_1 + (batch_size - 1) * max(0.0, at_2 - at_1)


def batch_full_depth(at_1: FullDepth, at_2: FullDepth, batch_size: int) -> FullDepth:
    """Apply :func:`batch_law` to TTFT, TPOT and memory."""
    return FullDepth(
        ttft_s=batch_law(at_1.ttft_s, at_2.ttft_s, batch_size),
        tpot_s=batch_law(at_1.tpot_s, at_2.tpot_s, batch_size),
        memory_gb=batch_law(at_1.memory_gb, at_2.memory_gb, batch_size),
    )


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The averaged measurements of one configuration: ``l(n, o)`` and ``M(n)``."""

    key: ConfigKey
    latency_s: Mapping[tuple[int, int], float]  # (layers, output tokens) -> seconds
    memory_gb: Mapping[int, float]  # layers -> GB after the run, all GPUs

    def terms(self) -> LayerTerms:
        """Per-layer terms (see :func:`layer_terms`)."""
        return layer_terms(self.latency_s, self.memory_gb)

    @property
    def layer_counts(self) -> tuple[int, ...]:
        """The fingerprint's layer counts, ascending."""
        return tuple(sorted(self.memory_gb))


# --------------------------------------------------------------------------- reading
def canonical_model(name: str) -> str:
    """The catalog name of ``name`` (aliases such as ``gptj-6b`` resolve), else ``name``."""
    try:
        return get_model(name).name
    except (ConfigError, KeyError, LookupError):
        return name


def parse_precision(dtype: str) -> str:
    """A ``DTYPE`` (``float16``, ``bfloat16``, ``int4_gptq``) -> sincere's precision
    (``fp16``, ``bf16``, ``int4-gptq``); sincere's own names pass through."""
    if dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ConfigError("unknown DTYPE", value=dtype, allowed=[*DTYPES, *DTYPES.values()])


def _field(row: Mapping[str, str], column: str, path: Path, line: int) -> str:
    value = row.get(column)
    if value is None or value.strip() == "":
        raise DataError("missing value", path=path, line=line, column=column)
    return value.strip()


def _number(row: Mapping[str, str], column: str, path: Path, line: int, *, whole: bool) -> float:
    text = _field(row, column, path, line)
    try:
        value = float(text)
    except ValueError:
        raise DataError("not a number", path=path, line=line, column=column, value=text) from None
    if not math.isfinite(value) or value < 0 or (whole and (value < 1 or value != int(value))):
        want = "a whole number >= 1" if whole else "a finite number >= 0"
        raise DataError(f"expected {want}", path=path, line=line, column=column, value=text)
    return value


def _row_key(row: Mapping[str, str], path: Path, line: int) -> ConfigKey:
    try:
        precision = parse_precision(_field(row, "DTYPE", path, line))
    except ConfigError:
        raise DataError(
            f"unknown DTYPE; allowed: {', '.join(DTYPES)}",
            path=path,
            line=line,
            column="DTYPE",
            value=row.get("DTYPE"),
        ) from None
    flag = _field(row, "INT8_KV_Cache", path, line).lower()
    if flag not in KV_FLAGS:
        raise DataError(
            "expected True or False", path=path, line=line, column="INT8_KV_Cache", value=flag
        )
    return ConfigKey(
        model=canonical_model(_field(row, "Model", path, line)),
        precision=precision,
        kv_precision=KV_FLAGS[flag],
        tp=int(_number(row, "TP", path, line, whole=True)),
        pp=int(_number(row, "PP", path, line, whole=True)),
        batch_size=int(_number(row, "Batch_Size", path, line, whole=True)),
    )


def _layers(row: Mapping[str, str], pp: int, path: Path, line: int) -> int:
    text = _field(row, "PP_Map", path, line)
    try:
        stages = [int(s) for s in text.split()]
    except ValueError:
        raise DataError(
            "PP_Map must be layer counts per stage", path=path, line=line, column="PP_Map"
        ) from None
    if len(stages) != pp or min(stages) < 1:
        raise DataError(
            f"PP_Map must list {pp} stage(s) of >= 1 layer",
            path=path,
            line=line,
            column="PP_Map",
            value=text,
        )
    return sum(stages)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One CSV row: a configuration, a layer count, an output length and what was measured."""

    key: ConfigKey
    num_layers: int  # hidden layers of the (fingerprint or full) model that ran
    output_tokens: int
    latency_s: float
    memory_gb: float


def read_csv_rows(
    path: str | Path, required: Sequence[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows (line 2 on) of a CSV file with at least the ``required``
    columns; an unreadable file, a missing column or a blank line before the last row
    raises ``DataError`` naming the file."""
    path = Path(path)
    refuse_blank_lines(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", path=path) from None
    with handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        missing = [c for c in required if c not in fields]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)}", path=path, line=1)
        return fields, list(reader)


def read_measurements(path: str | Path) -> list[Measurement]:
    """Rows of a MaverIQ CSV (fingerprints or full models); bad rows (and a blank line
    before the last row) raise ``DataError``."""
    path = Path(path)
    out = []
    for line, row in enumerate(read_csv_rows(path, REQUIRED_COLUMNS)[1], start=2):
        key = _row_key(row, path, line)
        out.append(
            Measurement(
                key=key,
                num_layers=_layers(row, key.pp, path, line),
                output_tokens=int(_number(row, "Output_Lenght", path, line, whole=True)),
                latency_s=_number(row, "Latency", path, line, whole=False),
                memory_gb=_number(row, "Memory-After-Run", path, line, whole=False),
            )
        )
    return out


def group_fingerprints(rows: Iterable[Measurement]) -> dict[ConfigKey, Fingerprint]:
    """Average repeated rows and group them per configuration.

    Configurations that do not have exactly two layer counts times two output
    lengths are left out (they cannot be solved).
    """
    lat: dict[ConfigKey, dict[tuple[int, int], list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    mem: dict[ConfigKey, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        lat[r.key][r.num_layers, r.output_tokens].append(r.latency_s)
        mem[r.key][r.num_layers].append(r.memory_gb)
    out = {}
    for key, points in lat.items():
        if len(points) != 4 or len({n for n, _ in points}) != 2:
            continue
        out[key] = Fingerprint(
            key=key,
            latency_s={p: sum(v) / len(v) for p, v in points.items()},
            memory_gb={n: sum(v) / len(v) for n, v in mem[key].items()},
        )
    return out


DUPLICATES: tuple[str, ...] = ("first", "mean")


def read_fingerprints(
    paths: str | Path | Iterable[str | Path], duplicates: str = "first"
) -> dict[ConfigKey, Fingerprint]:
    """Fingerprints from one or more MaverIQ CSVs, keyed by configuration.

    ``duplicates``: ``"first"`` keeps a configuration from the first file holding it,
    ``"mean"`` averages all files' rows (see the module docstring).
    """
    if duplicates not in DUPLICATES:
        raise ConfigError("unknown duplicates policy", value=duplicates, allowed=DUPLICATES)
    if isinstance(paths, str | Path):
        paths = [paths]
    if duplicates == "mean":
        return group_fingerprints(m for p in paths for m in read_measurements(p))
    out: dict[ConfigKey, Fingerprint] = {}
    for p in paths:
        for key, fp in group_fingerprints(read_measurements(p)).items():
            out.setdefault(key, fp)
    return out
