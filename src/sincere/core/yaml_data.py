"""YAML documents read through libyaml when it is installed.

``yaml.safe_load`` parses in Python; libyaml's parser (``yaml.CSafeLoader``) builds the same
documents with the same safe constructor and resolver about ten times faster, which a
command pays at start-up for the data the package ships (the catalog, the kernel fits,
the measured profiles: ~70 kB of fit documents alone took ~0.2 s in Python). Without
libyaml the pure-Python loader is used and the documents are the same.
"""

from __future__ import annotations

from typing import Any

import yaml

LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when installed, else PyYAML's own."""


def load_yaml(text: str) -> Any:
    """The document in ``text``, as ``yaml.safe_load`` reads it."""
    return yaml.load(text, Loader=LOADER)
