"""Deployments shared by the perf tests, built from the catalog."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.perf.base import Deployment

MakeDeployment = Callable[..., Deployment]


def _deployment(
    model: str = "llama-3-8b", acc: str = "H100-SXM", tp: int = 1, pp: int = 1, **kw: str
) -> Deployment:
    return Deployment(get_model(model), get_accelerator(acc), tp=tp, pp=pp, **kw)


@pytest.fixture
def make_deployment() -> MakeDeployment:
    """Factory: ``make_deployment(model, acc, tp=, pp=, precision=, kv_precision=)``."""
    return _deployment


@pytest.fixture
def llama8b_h100() -> Deployment:
    """Llama-3-8B bf16 on one H100-SXM."""
    return _deployment()
