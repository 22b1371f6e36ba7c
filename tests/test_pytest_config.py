"""The suite's pytest settings: a deprecation raised in a sincere module fails the test."""

from __future__ import annotations

import pytest

WARN = compile("import warnings\nwarnings.warn('old call', DeprecationWarning)", "<m>", "exec")


def test_a_deprecation_raised_in_a_sincere_module_is_an_error() -> None:
    """pyproject's filterwarnings turns a DeprecationWarning attributed to sincere.* into an
    error, so the code that runs into it is fixed rather than the warning scrolled past."""
    with pytest.raises(DeprecationWarning, match="old call"):
        exec(WARN, {"__name__": "sincere.somewhere"})


def test_a_deprecation_raised_elsewhere_stays_a_warning() -> None:
    """Only sincere's own modules are strict: a third party's warning is left as it is."""
    with pytest.warns(DeprecationWarning, match="old call"):
        exec(WARN, {"__name__": "elsewhere.module"})
