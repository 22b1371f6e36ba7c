"""Dense models' step times, KV blocks and weights, pinned to the values from before
mixture-of-experts, MLA and low-precision formats entered the step model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sincere.catalog.loader import default_catalog
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.memory import plan_memory

PINS = json.loads((Path(__file__).parent / "data" / "dense_step_pins.json").read_text())
BATCHES = {
    "decode1": Batch.of(decode=[512]),
    "decode64": Batch.of(decode=[512] * 64),
    "mixed": Batch.of(prefill=[(480, 500)], decode=[1200] * 32),
    "prefill": Batch.of(prefill=[(2048, 0)]),
}


@pytest.mark.parametrize("key", sorted(PINS))
def test_dense_roofline_is_unchanged(key: str) -> None:
    """Every pinned dense model, accelerator, TP and precision gives the same floats as before."""
    model, acc, tp, precision = key.split("|")
    catalog = default_catalog()
    dep = Deployment(
        catalog.model(model), catalog.accelerator(acc), precision=precision, tp=int(tp[2:])
    )
    roofline = Roofline(dep)
    pinned = PINS[key]
    for name, batch in BATCHES.items():
        assert roofline.iteration_s(batch) == pinned[name], name
        assert roofline.parts(batch).as_dict() == pinned[name + "_parts"], name
    assert roofline.decode_steps_s(8, 8 * 700, 20) == pinned["decode_steps"]
    plan = plan_memory(dep)
    assert plan.num_kv_blocks == pinned["kv_blocks"]
    assert plan.weight_bytes_per_gpu == pinned["weights"]


def test_every_shipped_dense_model_is_pinned() -> None:
    """The pins cover all dense models of the catalog from before the new architectures."""
    names = {key.split("|")[0] for key in PINS}
    assert len(names) == 22
    assert {"llama-2-7b", "mistral-7b", "qwen2.5-72b", "tiny-llama"} <= names
