"""Columnar parsing helpers for trace files, with precise errors.

Trace readers load whole columns as strings with pyarrow and convert them in bulk;
only when a conversion fails do we search (by bisection, so still fast) for the
first bad row, to raise a :class:`DataError` naming the file, line, column and
value. Nothing is skipped silently. Also here: timestamp parsing (ISO 8601 with
any sub-second precision, with or without a zone offset, or plain numbers) and the
token-count approximation used for formats that carry text instead of counts.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# pyarrow.compute is imported in the functions that use it: importing it costs ~30 ms of
# every command's start-up, and most runs read no CSV.
import pyarrow as pa
import pyarrow.csv as pacsv

from sincere.core.csv_lines import refuse_blank_lines
from sincere.core.errors import DataError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CHARS_PER_TOKEN = 4.0
"""Approximation used when no tokenizer is installed: ~4 characters per token (English
text under GPT-style BPE tokenizers, as OpenAI's tokenizer guide states)."""


def read_csv_strings(path: Path, required: Sequence[str]) -> dict[str, pa.Array]:
    """All columns of a CSV file as string arrays; the ``required`` ones must exist.

    A blank line inside the data is an error naming it (pyarrow would skip it and every
    later line number would be off); blank lines after the last row are fine.
    """
    header = csv_header(path)
    refuse_blank_lines(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; the header has {header}", path=path, line=1)
    types = {name: pa.string() for name in header}
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        _raise_ragged(path, len(header), exc)
    return {name: table.column(name).combine_chunks() for name in header}


def csv_header(path: Path) -> list[str]:
    """The first row of a CSV file, stripped."""
    with path.open(newline="", encoding="utf-8") as f:
        row = next(csv.reader(f), None)
    if not row:
        raise DataError("empty file, expected a CSV header", path=path, line=1)
    return [c.strip() for c in row]


def _raise_ragged(path: Path, num_columns: int, exc: Exception) -> None:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if len(row) != num_columns:
                raise DataError(
                    f"expected {num_columns} fields, found {len(row)}",
                    path=path,
                    line=line,
                    value=",".join(row),
                ) from None
    raise DataError(f"unreadable CSV: {exc}", path=path) from None


def first_bad(values: pa.Array, convert: Callable[[pa.Array], Any]) -> int:
    """Index of the first element that ``convert`` rejects (bisection over slices)."""
    lo, hi = 0, len(values)  # invariant: a bad element lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(values.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, ValueError):
            hi = mid
    return lo


def to_numbers(
    values: pa.Array,
    *,
    path: Path,
    column: str,
    first_line: int = 2,
    integral: bool = False,
    minimum: float | None = None,
    allow_empty: bool = False,
) -> FloatArray:
    """Convert a string column to float64, checking finiteness, integrality and a minimum.

    With ``allow_empty``, empty cells become NaN (a missing optional value).
    """
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    empty = np.asarray(pc.equal(trimmed, "").to_numpy(zero_copy_only=False), dtype=bool)
    if allow_empty and empty.any():
        values = pc.if_else(pc.equal(trimmed, ""), "nan", trimmed)

    def convert(a: pa.Array) -> FloatArray:
        return np.asarray(pc.cast(pc.utf8_trim_whitespace(a), pa.float64()).to_numpy(), np.float64)

    try:
        x = convert(values)
    except pa.ArrowInvalid:
        i = first_bad(values, convert)
        raise DataError(
            "not a number", path=path, line=first_line + i, column=column, value=values[i].as_py()
        ) from None
    bad = ~np.isfinite(x) & ~(empty & allow_empty)
    if integral:
        bad |= np.isfinite(x) & (x != np.round(x))
    if minimum is not None:
        bad |= x < minimum
    if bad.any():
        i = int(np.argmax(bad))
        want = "an integer" if integral else "a finite number"
        if minimum is not None:
            want += f" >= {minimum:g}"
        raise DataError(
            f"expected {want}",
            path=path,
            line=first_line + i,
            column=column,
            value=values[i].as_py(),
        )
    return x


def to_seconds(values: pa.Array, *, path: Path, column: str, first_line: int = 2) -> FloatArray:
    """Timestamps to seconds: ISO 8601 (any precision, optional zone) or plain numbers.

    Date-times become seconds since the epoch (UTC when a zone is given). The form of the
    first row decides; a later row in another form is an error.
    """
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    if len(trimmed) == 0:
        return np.zeros(0, dtype=np.float64)
    for convert in (_as_naive, _as_zoned, _as_number):
        try:
            convert(trimmed.slice(0, 1))
        except pa.ArrowInvalid:
            continue
        try:
            return convert(trimmed)
        except pa.ArrowInvalid:
            i = first_bad(trimmed, convert)
            raise DataError(
                "timestamp in a different form from the first row's",
                path=path,
                line=first_line + i,
                column=column,
                value=values[i].as_py(),
            ) from None
    raise DataError(
        "not a timestamp (ISO 8601 date-time or number of seconds)",
        path=path,
        line=first_line,
        column=column,
        value=values[0].as_py(),
    )


def _as_naive(a: pa.Array) -> FloatArray:
    import pyarrow.compute as pc

    ns = pc.cast(pc.cast(a, pa.timestamp("ns")), pa.int64()).to_numpy()
    return np.asarray(ns, dtype=np.float64) / 1e9


def _as_zoned(a: pa.Array) -> FloatArray:
    import pyarrow.compute as pc

    ns = pc.cast(pc.cast(a, pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy()
    return np.asarray(ns, dtype=np.float64) / 1e9


def _as_number(a: pa.Array) -> FloatArray:
    import pyarrow.compute as pc

    x = np.asarray(pc.cast(a, pa.float64()).to_numpy(), dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise pa.ArrowInvalid("non-finite time")
    return x


@cache
def _tiktoken_encoder() -> Callable[[str], list[int]] | None:
    try:
        import tiktoken  # type: ignore[import-not-found]  # optional

        encode: Callable[[str], list[int]] = tiktoken.get_encoding("cl100k_base").encode
    except Exception:  # not installed, or its encoding file cannot be fetched offline
        return None
    return encode


def _hub_ids(model: str) -> list[str]:
    """Hugging Face repositories that may hold ``model``'s tokenizer: itself when it reads
    as one (``org/name``), and its catalog aliases that do."""
    from sincere.catalog import get_model
    from sincere.core.errors import ConfigError

    try:
        aliases = [model, *get_model(model).aliases]
    except ConfigError:
        aliases = [model]
    return [a for a in dict.fromkeys(aliases) if "/" in a]


def hub_cache_dir() -> str:
    """The local Hugging Face cache, read now: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (the Hub's rule)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "huggingface", "hub")


@cache
def model_encoder(model: str) -> tuple[str, Callable[[str], list[int]]] | None:
    """``(repository, encode)`` of ``model``'s own tokenizer when it is at hand: the
    ``tokenizers`` library (installed with transformers) and the tokenizer's
    ``tokenizer.json`` already in the local Hugging Face cache (``$HF_HUB_CACHE``); nothing
    is downloaded. ``None`` otherwise, and for a name that cannot be a repository (a
    client's ``model`` may be any text: ``"/"``, ``"a/b/c"``)."""
    if find_spec("tokenizers") is None or find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for repo in _hub_ids(model):
        try:
            path = try_to_load_from_cache(repo, "tokenizer.json", cache_dir=hub_cache_dir())
        except ValueError:  # the Hub's own check of a repository name
            continue
        if isinstance(path, str):
            from tokenizers import Tokenizer

            return repo, _encode_with(Tokenizer.from_file(path))
    return None


def _encode_with(tokenizer: Any) -> Callable[[str], list[int]]:
    """``encode(text)``: the token ids of ``text`` under ``tokenizer`` (no special tokens)."""
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False).ids)


def _encoder(model: str | None) -> tuple[str, Callable[[str], list[int]]] | None:
    """The best counter at hand: the model's tokenizer, else tiktoken's cl100k_base."""
    own = model_encoder(model) if model else None
    if own is not None:
        return f"{own[0]} tokenizer", own[1]
    encode = _tiktoken_encoder()
    return ("tiktoken cl100k_base", encode) if encode is not None else None


def count_tokens(texts: Sequence[str], model: str | None = None) -> IntArray:
    """Token counts of ``texts``: ``model``'s own tokenizer when it is at hand
    (:func:`model_encoder`), else tiktoken's cl100k_base when it works, else ~4 characters
    a token; :func:`tokenizer_name` says which."""
    found = _encoder(model)
    if found is not None:
        encode = found[1]
        return np.array([max(1, len(encode(t))) for t in texts], dtype=np.int64)
    chars = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    return np.maximum(1, np.ceil(chars / CHARS_PER_TOKEN)).astype(np.int64)


def tokenizer_name(model: str | None = None) -> str:
    """Which token counter :func:`count_tokens` uses for ``model``."""
    found = _encoder(model)
    if found is not None:
        return found[0]
    return f"approximation: {CHARS_PER_TOKEN:g} characters per token"
