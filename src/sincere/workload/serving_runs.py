"""Real per-request serving runs of a vLLM engine: the ``serving-runs`` folder layout.

A run folder holds what one vLLM engine did with a replayed workload (the layout of
LLMServingSim's published vLLM benchmark runs):

* ``meta.json`` -- ``model``, ``vllm_version``, ``engine_kwargs`` (``tensor_parallel_size``,
  ``data_parallel_size``, ``enable_expert_parallel``, ``max_num_seqs``,
  ``max_num_batched_tokens``, ``max_model_len``, ``dtype``, ``kv_cache_dtype``,
  ``quantization``), ``dataset_path`` (the replayed inputs) and, when recorded, ``kv_cache``
  (``num_gpu_blocks``, ``block_size``, ``gpu_memory_utilization``,
  ``enable_prefix_caching``), ``hardware.device_name`` and ``resolved_config`` (the engine's
  configuration as vLLM resolved it: :class:`RunExecution` reads its scheduling and
  CUDA-graph settings, and takes the limits and cache settings from it that the other
  fields leave out). Limits a run records nowhere are vLLM's defaults for its GPU
  (``None`` here);
* ``config.json`` -- the hardware: ``nodes[0].instances[0].hardware`` names the GPU;
* ``requests.jsonl`` -- one request a line: ``request_id``, ``input_toks``, ``output_toks``,
  ``arrival_time`` (the harness's wall clock, epoch seconds) and the engine's own
  timestamps ``queued_ts``, ``scheduled_ts``, ``first_token_ts``, ``last_token_ts`` (its
  monotonic clock, another origin);
* the replayed inputs (``dataset_path``'s file name, in the run folder or beside it): one
  request a line with ``input_toks``, ``output_toks`` and ``input_tok_ids``, the prompt's
  token ids, in the order of ``requests.jsonl``.

**The two clocks.** ``arrival_time`` and the engine's timestamps share no origin. The
engine clock's arrival of a request is ``arrival_time + offset`` with ``offset`` the
smallest ``queued_ts - arrival_time`` of the run: the request that reached the engine's
queue fastest is taken to have spent no time in the front end (tokenisation and the hop
from the API process to the engine core). Every other request's front-end time is then
``queued_ts`` less its engine-clock arrival (a few ms to a few hundred ms in the published
runs) -- a lower bound, as the fastest request's own front-end time is unknown.

:func:`read_serving_run` reads one folder and :func:`read_serving_runs` a folder of them;
a missing file, a malformed line or an inconsistent value raises
:class:`~sincere.core.errors.DataError` naming the file, line, field and value.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import DataError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

META_FILE = "meta.json"
HARDWARE_FILE = "config.json"
REQUESTS_FILE = "requests.jsonl"
TIMESTAMP_FIELDS = ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")
REQUEST_FIELDS = ("input_toks", "output_toks", "arrival_time", *TIMESTAMP_FIELDS)
DEFAULT_BLOCK_SIZE = 16  # vLLM's default KV block, tokens


CUDAGRAPH_MODES = {0: "NONE", 1: "PIECEWISE", 2: "FULL"}
"""vLLM's ``CUDAGraphMode`` values (``resolved_config.compilation_config.cudagraph_mode`` holds
one, or a pair: the mode of decode-only batches and of mixed ones)."""
NAMED_GRAPH_MODES = {
    "FULL_AND_PIECEWISE": ("FULL", "PIECEWISE"),
    "FULL_DECODE_ONLY": ("FULL", "NONE"),
}
"""vLLM's names of its mode pairs (a single mode's name stands for both)."""
GRAPH_MODES = {
    ("NONE", "NONE"): "none",
    ("PIECEWISE", "PIECEWISE"): "piecewise",
    ("FULL", "NONE"): "full_decode_only",
    ("FULL", "PIECEWISE"): "full_and_piecewise",
    ("FULL", "FULL"): "full_and_piecewise",
}
"""(decode-only, mixed) CUDA-graph modes -> the execution model's ``graph_mode``. A full graph
of mixed batches is padded in tokens as a piecewise one is (the execution model has no
mode of its own for it)."""


@dataclass(frozen=True)
class RunExecution:
    """How a run's engine executed its iterations, where ``meta.json`` says so (None: not
    recorded): ``engine_kwargs`` first, then ``resolved_config``."""

    async_scheduling: bool | None  # scheduler_config.async_scheduling
    graph_mode: str | None  # the execution model's name for vLLM's cudagraph_mode
    graph_sizes: tuple[int, ...] | None  # compilation_config.cudagraph_capture_sizes

    def overrides(self) -> dict[str, Any]:
        """These settings as an engine block's ``execution`` overrides."""
        out: dict[str, Any] = {}
        if self.async_scheduling is not None:
            out["async_scheduling"] = self.async_scheduling
        if self.graph_mode is not None:
            out["graph_mode"] = self.graph_mode
        if self.graph_mode == "none":
            out["graph_sizes"] = []
        elif self.graph_sizes is not None:
            out["graph_sizes"] = list(self.graph_sizes)
            out["graph_max_share_of_seqs"] = 0.0  # the sizes vLLM kept, already capped
        return out


@dataclass(frozen=True)
class EngineArgs:
    """The engine arguments a run was served with (``meta.json``)."""

    vllm_version: str
    tp: int  # tensor_parallel_size
    dp: int  # data_parallel_size: engine replicas behind vLLM's own balancer
    expert_parallel: bool  # enable_expert_parallel: experts spread over tp * dp GPUs
    max_num_seqs: int | None  # None: not recorded (vLLM's default for the GPU)
    max_num_batched_tokens: int | None  # None: not recorded (as max_num_seqs)
    max_model_len: int | None
    dtype: str
    block_size: int  # KV block, tokens
    num_gpu_blocks: int | None  # the KV pool vLLM sized (per replica), when recorded
    gpu_memory_utilization: float
    enable_prefix_caching: bool
    kv_cache_dtype: str = "auto"  # "auto": the weights' dtype; fp8 variants: an fp8 cache
    quantization: str | None = None  # the weights' quantisation method, when one is named
    execution: RunExecution = RunExecution(None, None, None)


@dataclass(frozen=True)
class ServingRun:
    """One real run: its setting and per-request arrays in ``requests.jsonl`` order."""

    name: str  # the run folder's name
    folder: Path
    model: str  # as the engine named it (a Hugging Face id)
    accelerator: str  # as the hardware file names it (e.g. RTXPRO6000)
    engine: EngineArgs
    request_id: tuple[str, ...]
    input_tokens: IntArray
    output_tokens: IntArray
    arrival_time: FloatArray  # harness wall clock, s
    queued_ts: FloatArray  # engine clock, s (as every *_ts)
    scheduled_ts: FloatArray
    first_token_ts: FloatArray
    last_token_ts: FloatArray
    prompt_token_ids: tuple[IntArray, ...]  # per request; empty: inputs not found
    dataset: Path | None  # the inputs file read, if found
    clock_offset_s: float  # engine clock - harness clock, from all the run's requests

    def __len__(self) -> int:
        return len(self.input_tokens)

    @property
    def arrival_ts(self) -> FloatArray:
        """Each request's arrival on the engine clock."""
        return self.arrival_time + self.clock_offset_s

    def subset(self, count: int) -> ServingRun:
        """The run's first ``count`` requests (all when ``count`` is larger), same clocks."""
        k = slice(0, count)
        return replace(
            self,
            request_id=self.request_id[k],
            input_tokens=self.input_tokens[k],
            output_tokens=self.output_tokens[k],
            arrival_time=self.arrival_time[k],
            queued_ts=self.queued_ts[k],
            scheduled_ts=self.scheduled_ts[k],
            first_token_ts=self.first_token_ts[k],
            last_token_ts=self.last_token_ts[k],
            prompt_token_ids=self.prompt_token_ids[k],
        )


def _json_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError("missing file of a serving run", path=path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
    if not isinstance(doc, dict):
        raise DataError("expected a JSON object", path=path, value=type(doc).__name__)
    return doc


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError("missing file of a serving run", path=path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", path=path, line=number) from exc
            if not isinstance(row, dict):
                raise DataError("expected a JSON object", path=path, line=number)
            rows.append(row)
    if not rows:
        raise DataError("no requests", path=path)
    return rows


def _number(doc: dict[str, Any], key: str, path: Path, line: int | None = None) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise DataError("expected a finite number", path=path, line=line, column=key, value=value)
    return float(value)


def _count(doc: dict[str, Any], key: str, path: Path, line: int | None = None) -> int:
    value = _number(doc, key, path, line)
    if value < 1 or value != int(value):
        raise DataError("expected an integer >= 1", path=path, line=line, column=key, value=value)
    return int(value)


def _section(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """``doc[key]`` as an object (empty when absent or null)."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError("expected an object", path=path, column=key, value=value)
    return value


def _first(key: str, *sections: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The first section that gives ``key`` a value (not null), and that value."""
    for section in sections:
        if section.get(key) is not None:
            return section, section[key]
    return {}, None


def _flag(key: str, path: Path, *sections: dict[str, Any]) -> bool | None:
    _, value = _first(key, *sections)
    if value is None or isinstance(value, bool):
        return value
    raise DataError("expected true or false", path=path, column=key, value=value)


def _capture_sizes(path: Path, *compilations: dict[str, Any]) -> tuple[int, ...] | None:
    _, value = _first("cudagraph_capture_sizes", *compilations)
    if isinstance(value, str):  # some harnesses write the list as its text
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise DataError("expected a list of batch sizes", path=path,
                        column="cudagraph_capture_sizes", value=value)  # fmt: skip
    return tuple(sorted(set(value)))


def _mode_pair(value: Any) -> tuple[str, str] | None:
    """vLLM's ``cudagraph_mode`` (a value, a pair of values, or a name) as the modes of
    (decode-only, mixed) batches; None: not one."""
    if isinstance(value, str):
        name = value.upper()
        pair = NAMED_GRAPH_MODES.get(name, (name, name))
        return pair if pair[0] in CUDAGRAPH_MODES.values() else None
    values = value if isinstance(value, list) else [value, value]
    if len(values) != 2 or not all(v in CUDAGRAPH_MODES for v in values):
        return None
    return CUDAGRAPH_MODES[values[0]], CUDAGRAPH_MODES[values[1]]


def _graph_mode(
    compilations: tuple[dict[str, Any], ...], path: Path, *sections: dict[str, Any]
) -> str | None:
    if _flag("enforce_eager", path, *sections):
        return "none"
    _, value = _first("cudagraph_mode", *compilations)
    if value is None:
        return None
    pair = _mode_pair(value)
    mode = None if pair is None else GRAPH_MODES.get(pair)
    if mode is None:
        raise DataError("not a CUDA-graph mode the simulator knows", path=path,
                        column="cudagraph_mode", value=value)  # fmt: skip
    return mode


def _compilation(kwargs: dict[str, Any], path: Path) -> dict[str, Any]:
    """``engine_kwargs``' compilation config (``--compilation-config``: an object or its
    JSON text; empty when not given)."""
    value = kwargs.get("compilation_config")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError("expected a JSON object", path=path, column="compilation_config",
                            value=value) from None  # fmt: skip
    return _section({"compilation_config": value}, "compilation_config", path)


def _run_execution(kwargs: dict[str, Any], resolved: dict[str, Any], path: Path) -> RunExecution:
    scheduler = _section(resolved, "scheduler_config", path)
    compilations = (_compilation(kwargs, path), _section(resolved, "compilation_config", path))
    model = _section(resolved, "model_config", path)
    return RunExecution(
        async_scheduling=_flag("async_scheduling", path, kwargs, scheduler),
        graph_mode=_graph_mode(compilations, path, kwargs, model),
        graph_sizes=_capture_sizes(path, *compilations),
    )


def _optional_count(key: str, path: Path, *sections: dict[str, Any]) -> int | None:
    section, value = _first(key, *sections)
    return None if value is None else _count(section, key, path)


def _engine_args(meta: dict[str, Any], path: Path) -> EngineArgs:
    kwargs = meta.get("engine_kwargs")
    if not isinstance(kwargs, dict):
        raise DataError("expected an object", path=path, column="engine_kwargs", value=kwargs)
    kv = _section(meta, "kv_cache", path)
    resolved = _section(meta, "resolved_config", path)
    scheduler = _section(resolved, "scheduler_config", path)
    cache = _section(resolved, "cache_config", path)
    model = _section(resolved, "model_config", path)
    block = _optional_count("block_size", path, kv, kwargs, cache)
    utilisation_from, utilisation = _first("gpu_memory_utilization", kv, kwargs, cache)
    caching = _flag("enable_prefix_caching", path, kv, kwargs, cache)
    _, kv_dtype = _first("kv_cache_dtype", kwargs, cache)
    _, cache_dtype = _first("cache_dtype", cache)
    _, quantization = _first("quantization", kwargs, model)
    return EngineArgs(
        vllm_version=str(meta.get("vllm_version", "unknown")),
        tp=_count(kwargs, "tensor_parallel_size", path),
        dp=_count(kwargs, "data_parallel_size", path),
        expert_parallel=bool(kwargs.get("enable_expert_parallel", False)),
        max_num_seqs=_optional_count("max_num_seqs", path, kwargs, scheduler),
        max_num_batched_tokens=_optional_count("max_num_batched_tokens", path, kwargs, scheduler),
        max_model_len=_optional_count("max_model_len", path, kwargs, model),
        dtype=str(kwargs.get("dtype", "bfloat16")),
        block_size=DEFAULT_BLOCK_SIZE if block is None else block,
        num_gpu_blocks=_optional_count("num_gpu_blocks", path, kv, cache),
        gpu_memory_utilization=0.9
        if utilisation is None
        else _number(utilisation_from, "gpu_memory_utilization", path),
        enable_prefix_caching=True if caching is None else caching,
        kv_cache_dtype=str(kv_dtype if kv_dtype is not None else cache_dtype or "auto"),
        quantization=None if quantization is None else str(quantization),
        execution=_run_execution(kwargs, resolved, path),
    )


def _accelerator(folder: Path, meta: dict[str, Any]) -> str:
    path = folder / HARDWARE_FILE
    if path.is_file():
        doc = _json_file(path)
        try:
            return str(doc["nodes"][0]["instances"][0]["hardware"])
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError("no nodes[0].instances[0].hardware", path=path) from exc
    hardware = meta.get("hardware")
    if isinstance(hardware, dict) and "device_name" in hardware:
        return str(hardware["device_name"])
    raise DataError("missing file of a serving run (and meta.json names no device)", path=path)


def _requests(path: Path) -> dict[str, FloatArray]:
    rows = _jsonl(path)
    columns = {key: np.empty(len(rows)) for key in REQUEST_FIELDS}
    for i, row in enumerate(rows):
        for key in REQUEST_FIELDS:
            columns[key][i] = _number(row, key, path, i + 1)
    for key in ("input_toks", "output_toks"):
        bad = np.flatnonzero((columns[key] < 1) | (columns[key] != np.round(columns[key])))
        if len(bad):
            raise DataError("expected an integer >= 1", path=path, line=int(bad[0]) + 1,
                            column=key, value=columns[key][bad[0]])  # fmt: skip
    for before, after in itertools.pairwise(TIMESTAMP_FIELDS):
        bad = np.flatnonzero(columns[after] < columns[before])
        if len(bad):
            raise DataError(f"{after} is before {before}", path=path, line=int(bad[0]) + 1,
                            column=after, value=columns[after][bad[0]])  # fmt: skip
    arrival = columns["arrival_time"]
    bad = np.flatnonzero(np.diff(arrival) < 0)
    if len(bad):
        raise DataError("arrival_time goes back in time", path=path, line=int(bad[0]) + 2,
                        column="arrival_time", value=arrival[bad[0] + 1])  # fmt: skip
    columns["request_id"] = np.array([str(r.get("request_id", i)) for i, r in enumerate(rows)])
    return columns


def _dataset_path(folder: Path, meta: dict[str, Any]) -> Path | None:
    name = Path(str(meta.get("dataset_path", ""))).name
    if not name:
        return None
    for candidate in (folder / name, folder.parent / name):
        if candidate.is_file():
            return candidate
    return None


def _prompt_ids(path: Path, input_tokens: IntArray) -> tuple[IntArray, ...]:
    rows = _jsonl(path)
    if len(rows) < len(input_tokens):
        raise DataError(f"{len(rows)} inputs for {len(input_tokens)} requests", path=path)
    out = []
    for i, want in enumerate(input_tokens):
        ids = rows[i].get("input_tok_ids")
        if not isinstance(ids, list) or len(ids) != int(want):
            got = len(ids) if isinstance(ids, list) else ids
            raise DataError(f"input_tok_ids should hold the request's {int(want)} tokens",
                            path=path, line=i + 1, column="input_tok_ids", value=got)  # fmt: skip
        out.append(np.asarray(ids, dtype=np.int64))
    return tuple(out)


def clock_offset(arrival_time: FloatArray, queued_ts: FloatArray) -> float:
    """Engine clock minus harness clock: the fastest request's (module docstring)."""
    return float(np.min(queued_ts - arrival_time))


def read_serving_run(folder: str | Path) -> ServingRun:
    """Read and check one run folder (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder", path=folder)
    meta = _json_file(folder / META_FILE)
    model = meta.get("model")
    if not isinstance(model, str) or not model:
        raise DataError("expected the model's name", path=folder / META_FILE, column="model",
                        value=model)  # fmt: skip
    engine = _engine_args(meta, folder / META_FILE)
    cols = _requests(folder / REQUESTS_FILE)
    input_tokens = cols["input_toks"].astype(np.int64)
    dataset = _dataset_path(folder, meta)
    ids = () if dataset is None else _prompt_ids(dataset, input_tokens)
    return ServingRun(
        name=folder.name,
        folder=folder,
        model=model,
        accelerator=_accelerator(folder, meta),
        engine=engine,
        request_id=tuple(str(r) for r in cols["request_id"]),
        input_tokens=input_tokens,
        output_tokens=cols["output_toks"].astype(np.int64),
        arrival_time=cols["arrival_time"],
        queued_ts=cols["queued_ts"],
        scheduled_ts=cols["scheduled_ts"],
        first_token_ts=cols["first_token_ts"],
        last_token_ts=cols["last_token_ts"],
        prompt_token_ids=ids,
        dataset=dataset,
        clock_offset_s=clock_offset(cols["arrival_time"], cols["queued_ts"]),
    )


def run_folders(root: str | Path) -> list[Path]:
    """``root`` itself when it is a run folder, else its sub-folders that are, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder", path=root)
    if (root / META_FILE).is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / META_FILE).is_file())
    if not found:
        raise DataError(f"no serving run here: neither it nor a sub-folder holds {META_FILE}",
                        path=root)  # fmt: skip
    return found


def read_serving_runs(root: str | Path) -> list[ServingRun]:
    """Every run under ``root`` (:func:`run_folders`), all read before any is used."""
    return [read_serving_run(folder) for folder in run_folders(root)]
