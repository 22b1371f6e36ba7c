"""Prefix caching changes nothing where no prompt shares content: pinned summary.json bytes.

The SHA-256 values are those of ``summary.json`` written by ``sincere simulate`` for each
shipped example before prefix caching existed (the H100-SXM examples with the roofline fitted to
H100 kernels, which moved them once, and again when H100's GEMM, attention, all-reduce and
fused-MoE constants came from its measured vLLM kernels, and when prefill attention's
work per pair took the head-dim offset and KV-head term and the eager all-reduce its
floor, and when an engine block without a preset came to run today's vLLM V1 with its
limits for the GPU, and when H100-SXM and H200 took the compute rate they were measured to
keep under sustained load (``sustained_clock.yaml``: the vllm example's mean TTFT 72.9 ->
84.1 ms, mean TPOT 10.5 -> 11.6 ms), and when GEMMs took the factor by shape fitted to
the measured ones (``gemm_*_grid``: 84.1 -> 84.4 ms, 11.59 -> 11.62 ms) and prefill
attention its own (``prefill_attention_grid``: 84.4 -> 83.9 ms, 11.62 -> 11.61 ms), and when
``vllm-v1``'s front end became vLLM's HTTP server, one API process taking each request's 20 ms
and 4 µs a prompt token in turn, a fleet's replicas one pool of processes (83.9 -> 111.2
ms, 11.61 -> 11.50 ms; the hetero example's six replicas 114.8 -> 138.8 ms), and when decode
attention was fitted without the calls whose KV cache the collector's repeats keep in L2
(111.2 -> 111.3 ms, 11.50 -> 11.47 ms; hetero 138.8 -> 138.2 ms), and the GEMMs without
the few-token calls whose weights sit in L2 (111.3 -> 111.2 ms, 11.47 -> 11.53 ms; hetero's
TPOT 18.33 -> 17.80 ms), and the fp8 activations' quantisation kept as a time, not bytes
(the hetero examples' L40S fp8 replicas: hetero's mean TTFT 138.25 -> 138.11 ms, TPOT
17.80 -> 17.81 ms, hetero-explore's 161.02 -> 161.03 ms and 21.98 ms, the rounding of the
refitted constant), and the all-reduce its factor by message size fitted to the measured
calls (``allreduce_grid``; the hetero examples' TP-4 replicas: hetero's mean TTFT 138.11 ->
139.02 ms, TPOT 17.81 -> 18.03 ms, hetero-explore's 161.03 -> 161.92 ms and 21.98 -> 22.19
ms), and prefill attention's factor by shape the query heads per KV head as a fourth size and
prompts down to one token (the vllm example's mean TTFT 111.17 -> 111.47 ms, TPOT 11.53 ->
11.57 ms; hetero's 139.02 -> 139.11 ms, hetero-explore's 161.92 -> 162.03 ms, niyama's
84.17 -> 84.47 ms), and fp8 GEMMs their own token tile (the hetero examples' L40S fp8
replicas: hetero's mean TTFT 139.11 -> 139.81 ms, TPOT 17.99 -> 18.06 ms, hetero-explore's
162.03 -> 162.09 ms), and decode attention's second fixed cost on calls of two or more
sequences at two or more KV heads (``attn_decode_grouped_s``; the hetero examples' L40S
replicas: hetero's mean TTFT 139.81 -> 138.68 ms, TPOT 18.06 -> 18.01 ms, hetero-explore's
162.09 -> 162.41 ms and 22.25 -> 22.29 ms), and H100-SXM and H200 engines their GPU's
clock following the recent compute duty (``engine.gpu_clock: duty``, engine/clock.py;
``gpu_clock: sustained`` gives the previous bytes: the vllm example's mean TTFT 111.47 ->
102.21 ms, TPOT 11.57 -> 10.88 ms; niyama's 84.47 -> 79.65 ms and 10.08 -> 9.74 ms;
hetero's 138.68 -> 134.57 ms and 18.01 -> 17.56 ms; hetero-explore's 162.41 -> 158.78 ms
and 22.29 -> 21.96 ms), and that clock's ratio fitted on whole prefills of four shards
(H100 0.876 -> 0.878, H200 0.838 -> 0.858) with a lone prefill slowing within itself once
it runs as long as the clock's time constant (the vllm example's 102.21 -> 104.05 ms and
10.88 -> 11.00 ms; niyama's 79.65 -> 80.18 ms and 9.74 -> 9.77 ms; hetero's 134.57 ->
135.58 ms and 17.56 -> 17.68 ms; hetero-explore's 158.78 -> 159.88 ms and 21.96 -> 22.05
ms); W1 (which names the eager engine) and SINCERE's
study are A100 / request-level and never moved). With caching off, and with it on (the
default) for these workloads (their requests carry no block ids), the bytes must not move.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.sim import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PINNED = {
    "w1": "b89ca563fb17e486fbf0ad479ad7aba9558f0e05a234765acb8e2e627879f00c",
    "hetero": "a59a4f06d5e33edb4f35fddd99f1199d77fff94184703f492c85517e94603f33",
    "hetero-explore": "f0709891558f13e77a429ce7427c60c0d2a8378c21225073716874120c8bbcb3",
    "niyama": "bf69a5e91097ca0ad2747f345d59bc730bbdd4cc64156b95b3f2cab4da8a51c1",
    "sincere": "3ab15ad72eff7ccb31e8cce25708beb0ccd67b24e9b7ff774291602186a0c09c",
    "vllm": "0743b177600d62d758bf35f657334154f3481fdd56fec938b04bfd8b76dfdcbe",
}


def _config(name: str, caching: bool | None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    if caching is not None:
        for inst in config["instances"]:
            engine = inst.setdefault("engine", {})
            if engine.get("kind", "continuous") == "continuous":
                engine["enable_prefix_caching"] = caching
    return config


def _summary_sha(config: dict[str, Any], out: Path) -> str:
    simulate(config).write(out)
    return hashlib.sha256((out / "summary.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("caching", [False, True])
def test_w1_summary_is_byte_identical_caching_off_and_on(tmp_path: Path, caching: bool) -> None:
    """W1's summary.json is the pinned one with enable_prefix_caching false and true."""
    assert _summary_sha(_config("w1", caching), tmp_path) == PINNED["w1"]


@pytest.mark.parametrize("name", sorted(set(PINNED) - {"w1"}))
def test_shipped_examples_summary_is_byte_identical(tmp_path: Path, name: str) -> None:
    """Every shipped simulate example (caching on by default) writes the pinned summary.json."""
    assert _summary_sha(_config(name, None), tmp_path) == PINNED[name]
