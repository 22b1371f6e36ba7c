"""Roofline predictions for Llama-3-8B beside published measurements of real engines.

Computed from catalog figures with each accelerator's default constants (H100 and H200
have no fit of their own: they take the A100 fit's efficiencies and fixed costs as their
prior, sincere.perf.calibration); no hardware needed.
Run: ``python benchmarks/roofline.py``. Prints a Markdown table (the one recorded in
benchmarks/README.md) and a one-line summary.
"""

from __future__ import annotations

from sincere.catalog import get_accelerator, get_model
from sincere.perf import Batch, Deployment, Roofline, sincere_profile

CONTEXT = 512  # tokens of context per decoding sequence


def decode_rows(name: str, model: Roofline) -> list[tuple[str, str, float]]:
    """Decode time per output token (one step) at batch 1, 8 and 64."""
    rows = []
    for n in (1, 8, 64):
        seconds = model.decode_step_s(n, n * CONTEXT)
        rows.append((name, f"decode step, batch {n}, ctx {CONTEXT}", seconds * 1e3))
    return rows


def prefill_rows(name: str, model: Roofline) -> list[tuple[str, str, float]]:
    """Prefill of one prompt of 512 and 2048 tokens."""
    rows = []
    for tokens in (512, 2048):
        seconds = model.iteration_s(Batch.of(prefill=[(tokens, 0)]))
        rows.append((name, f"prefill {tokens} tokens, batch 1", seconds * 1e3))
    return rows


def main() -> None:
    llama = get_model("llama-3-8b")
    h100 = get_accelerator("H100-SXM")
    configs = {
        "H100-SXM bf16": Roofline(Deployment(llama, h100, precision="bf16")),
        "H100-SXM fp8": Roofline(Deployment(llama, h100, precision="fp8", kv_precision="fp8")),
        "H200 bf16": Roofline(Deployment(llama, get_accelerator("H200"), precision="bf16")),
    }
    rows = decode_rows("H100-SXM bf16", configs["H100-SXM bf16"])
    rows += prefill_rows("H100-SXM bf16", configs["H100-SXM bf16"])
    rows += decode_rows("H100-SXM fp8", configs["H100-SXM fp8"])[:2]
    rows += [("H200 bf16", r[1], r[2]) for r in decode_rows("H200 bf16", configs["H200 bf16"])[1:2]]
    print("| deployment | work | roofline (ms) |")
    print("| --- | --- | ---: |")
    for dep, work, ms in rows:
        print(f"| {dep} | {work} | {ms:.2f} |")
    hf_call = sincere_profile("llama3-8b").batch_time_s(1)
    print(
        f"\nSINCERE HF pipeline, batch 1, 50 tokens: {hf_call:.3f} s -> {hf_call / 50 * 1e3:.1f} ms"
    )
    print(f"one-line: llama-3-8b bf16 H100 decode b1 = {rows[0][2]:.2f} ms/token (roofline)")


if __name__ == "__main__":
    main()
