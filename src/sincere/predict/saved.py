"""Trained predictor files: NumPy arrays plus a header saying what they are.

One ``.npz`` file (a zip of NumPy arrays, read with ``numpy.load`` and no pickle) per
model. Its
``header`` entry is JSON: the model ``kind`` (``latency-lstm``, ``length-quantile``),
the file ``format_version``, the feature ``schema`` the weights expect (feature names
in order, hashing settings), the hyper-``params`` and the ``provenance`` (records it
was trained on, seed, sincere's version, training time). Loading checks all three
against what the running code expects and names the first difference, so a model
never runs on features it was not trained for.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError, DataError

FORMAT_VERSION = 1
"""Version of the file layout this code writes and reads."""

KINDS: tuple[str, ...] = ("latency-lstm", "length-quantile")
"""Kinds of model file."""

Arrays = dict[str, npt.NDArray[np.float64]]

EpochProgress = Callable[[int, int, float], None]
"""``progress(epoch, epochs, loss)`` after each epoch of a trainer that writes these files:
the LSTM latency trainer reports its held-out loss, the quantile length trainer its
training pinball loss."""


@dataclass(frozen=True)
class ModelHeader:
    """What a model file holds besides its arrays."""

    kind: str  # one of KINDS
    schema: dict[str, Any]  # the features the weights expect (names in order, settings)
    params: dict[str, Any] = field(default_factory=dict)  # hyper-parameters
    provenance: dict[str, Any] = field(default_factory=dict)  # records, seed, version, time
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The header as the file stores it."""
        return json.dumps(
            {
                "kind": self.kind,
                "format_version": self.format_version,
                "schema": self.schema,
                "params": self.params,
                "provenance": self.provenance,
            },
            sort_keys=True,
        )


def save_model(path: str | Path, header: ModelHeader, arrays: Arrays) -> Path:
    """Write ``arrays`` and ``header`` to ``path`` (exactly that name; folders created).

    The zip entries carry a fixed date, so the same model gives the same bytes.
    """
    if header.kind not in KINDS:
        raise ConfigError("unknown model kind", value=header.kind, allowed=KINDS)
    p = Path(path)
    entries: dict[str, npt.NDArray[Any]] = {"header": np.array(header.to_json()), **arrays}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in entries.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, data.getvalue(), zipfile.ZIP_DEFLATED)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise ConfigError("cannot write model file", where=p, value=str(exc)) from None
    return p


def read_model(path: str | Path) -> tuple[ModelHeader, Arrays]:
    """The header and arrays of a model file, whatever its kind."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("no such model file", where=p, allowed="a sincere predict train output")
    expected = "a zip archive of arrays, as `sincere predict train` writes"
    if not zipfile.is_zipfile(p):
        raise DataError(f"not a sincere model file: not {expected}", path=p)
    try:
        with np.load(p, allow_pickle=False) as data:
            raw = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        raise DataError(
            f"not a sincere model file: an entry is not a plain array ({expected})", path=p
        ) from None
    if "header" not in raw:
        raise DataError("not a sincere model file: no header entry", path=p)
    try:
        meta = json.loads(str(raw.pop("header")))
        header = ModelHeader(
            kind=str(meta["kind"]),
            schema=dict(meta["schema"]),
            params=dict(meta.get("params", {})),
            provenance=dict(meta.get("provenance", {})),
            format_version=int(meta["format_version"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"model file header is unreadable ({exc!r})", path=p) from None
    return header, {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}


def load_model(
    path: str | Path, kind: str, schema: dict[str, Any], arrays: tuple[str, ...]
) -> tuple[ModelHeader, Arrays]:
    """A model file of ``kind`` whose schema is ``schema`` and that holds ``arrays``.

    Raises :class:`~sincere.core.errors.ConfigError` naming what differs: the kind, the
    format version, a schema entry (with the file's and the expected value), or a
    missing array.
    """
    header, data = read_model(path)
    check_model(path, header, data, kind, schema, arrays)
    return header, data


def check_model(
    path: str | Path,
    header: ModelHeader,
    data: Arrays,
    kind: str,
    schema: dict[str, Any],
    arrays: tuple[str, ...],
) -> None:
    """The checks of :func:`load_model` on a file already read with :func:`read_model`.

    ``path`` only names the file in the errors; nothing is read again.
    """
    if header.kind != kind:
        raise ConfigError(
            f"model file holds a {header.kind!r} model, not a {kind!r} one", where=path
        )
    if header.format_version != FORMAT_VERSION:
        raise ConfigError(
            f"model file format version {header.format_version}; this sincere reads "
            f"version {FORMAT_VERSION} (retrain it with sincere predict train)",
            where=path,
        )
    for key in sorted(set(schema) | set(header.schema)):
        mine, theirs = schema.get(key), header.schema.get(key)
        if mine != theirs:
            raise ConfigError(
                f"model file's feature schema differs at {key!r}: the file has {theirs!r}, "
                f"this sincere expects {mine!r} (retrain it with sincere predict train)",
                where=path,
            )
    missing = [name for name in arrays if name not in data]
    if missing:
        raise DataError(f"model file lacks arrays {missing}", path=path)
