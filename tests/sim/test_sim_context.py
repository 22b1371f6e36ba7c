"""The model's context length in simulation: vLLM's default and its refusal rule."""

from __future__ import annotations

import copy
from typing import Any

from sincere.core.request import RequestArrays
from sincere.sim import simulate

MODEL = "llama-3-8b"  # context 8,192 tokens (catalog)
ENGINE = {"kind": "continuous", "max_num_seqs": 64, "max_num_batched_tokens": 8192}
BASE: dict[str, Any] = {
    "seed": 0,
    "workload": {
        "num_requests": 1,
        "arrival": {"kind": "poisson", "rate": 1.0},
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": 100},
            "output": {"kind": "fixed", "tokens": 10},
        },
        "models": {MODEL: 1.0},
    },
    "instances": [{"name": "h100", "model": MODEL, "accelerator": "H100-SXM", "engine": ENGINE}],
}
# prompt, output (= max_tokens): fits; fits exactly; over by one; no room for any output
PROMPTS = [100, 8_000, 8_000, 9_000]
OUTPUTS = [10, 192, 193, 10]


def _requests() -> RequestArrays:
    arrivals = [0.0, 1.0, 2.0, 3.0]
    return RequestArrays.build(arrivals, PROMPTS, OUTPUTS, models=(MODEL,))


def test_max_model_len_defaults_to_the_models_context_and_refuses_like_vllm() -> None:
    """prompt + max_tokens > 8,192 is refused (counted by reason); the rest is served."""
    result = simulate(BASE, requests=_requests())
    table = result.requests.to_pydict()
    assert table["rejected"] == [False, False, True, True]
    assert table["reject_reason"] == [None, None, "over_context", "prompt_too_long"]
    assert table["output_tokens"][:2] == [10, 192]
    summary = result.summary
    assert summary["num_rejected"] == 2
    assert summary["rejected_over_context"] == {"prompt_too_long": 1, "over_context": 1}
    assert "max_model_len (h100 8,192 tokens" in result.warnings[-1]


def test_an_explicit_max_model_len_overrides_the_catalog() -> None:
    """engine.max_model_len: 8,100 refuses the 8,000 + 192 request too."""
    config = copy.deepcopy(BASE)
    config["instances"][0]["engine"] = {**ENGINE, "max_model_len": 8_100}
    table = simulate(config, requests=_requests()).requests.to_pydict()
    assert table["rejected"] == [False, True, True, True]


def test_a_run_that_fits_has_no_context_block() -> None:
    """Without refusals the summary carries no ``rejected_over_context`` (bytes unchanged)."""
    summary = simulate(BASE).summary
    assert summary["num_rejected"] == 0
    assert "rejected_over_context" not in summary


def test_disaggregated_over_context_is_refused_before_prefill() -> None:
    """P/D: the prefill instance refuses what its decode could not hold; nothing is moved."""
    config = copy.deepcopy(BASE)
    config["instances"] = [
        {"name": r, "model": MODEL, "accelerator": "H100-SXM", "engine": ENGINE, "role": r}
        for r in ("prefill", "decode")
    ]
    config["disaggregation"] = {"kv_link": {"kind": "nvlink"}}
    table = simulate(config, requests=_requests()).requests.to_pydict()
    assert table["reject_reason"] == [None, None, "over_context", "prompt_too_long"]
    assert table["instance"][2] == "prefill"
    assert table["kv_transfer_s"][2] is None
