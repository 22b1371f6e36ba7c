"""Dense models' step times, KV blocks and weights, pinned to the values the code gave
before mixture-of-experts, MLA and low-precision formats entered the step model (the KV
blocks renewed when the memory budget became the memory a device reports, nominal GiB
less what the driver keeps, instead of the nominal figure in 1e9 bytes: more blocks
everywhere, the step times and weights unchanged).

The roofline runs with fixed constants (the A100 fit shipped at the time, written out
here) so that a later refit of an accelerator's defaults does not move the pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sincere.catalog.loader import default_catalog
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.memory import plan_memory
from sincere.perf.roofline import RooflineParams

PINS = json.loads((Path(__file__).parent / "data" / "dense_step_pins.json").read_text())
PARAMS = RooflineParams(
    mfu_efficiency=0.7254,
    bw_efficiency=0.7982,
    overlap_exponent=1.859,
    token_tile=64,
    layer_overhead_s=3.556e-05,
    elementwise_bw_efficiency=0.5054,
    attn_mfu_efficiency=0.3634,
    attn_bw_efficiency=0.7848,
    attn_kernel_s=1.725e-05,
    attn_diag_factor=2.0,
    allreduce_latency_s=4.402e-05,
    interconnect_efficiency=0.5428,
    overhead_s=0.000868,
    overhead_per_seq_s=3.62e-05,
)
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
    roofline = Roofline(dep, PARAMS)
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
