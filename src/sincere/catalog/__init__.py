"""Facts: accelerators and model architectures, with public sources.

``get_accelerator("H100-SXM")`` and ``get_model("llama-3-8b")`` read the shipped
catalog (plus the files in ``$SINCERE_CATALOG``); ``load_catalog([...])`` merges in
your own files. See ``docs/catalog.md``.
"""

from sincere.catalog.accuracy import parse_maveriq_accuracy_key
from sincere.catalog.loader import (
    ENV_VAR,
    Catalog,
    default_catalog,
    get_accelerator,
    get_model,
    load_catalog,
)
from sincere.catalog.schema import CatalogEntryError, split_accuracy_key
from sincere.catalog.specs import PRECISION_BYTES, Accelerator, ModelArch, accuracy_key

__all__ = [
    "ENV_VAR",
    "PRECISION_BYTES",
    "Accelerator",
    "Catalog",
    "CatalogEntryError",
    "ModelArch",
    "accuracy_key",
    "default_catalog",
    "get_accelerator",
    "get_model",
    "load_catalog",
    "parse_maveriq_accuracy_key",
    "split_accuracy_key",
]
