"""The step model's fused MoE under expert parallelism, against vLLM's measured EP calls.

The experts' constants (``sincere fit kernels``) are fitted on the fused-MoE rows of one GPU
holding every expert (``moe_ep_size`` 1). AIConfigurator's database also times vLLM's kernel
with the experts spread over 2 to 256 GPUs (``moe_ep_size`` > 1: one GPU's call, holding
``1/ep`` of the experts, over every token of the batch), which no family fitted before
``moe_ep``. This prices each of them, bf16 experts, balanced routing, the GPU's dominant
kernel, newest release, as the step model does (``expert_work`` with ``ep``: the GPU
computes its ``T k / ep`` routed pairs, reads its active experts' weights; at the kernel
benchmark's clock, ``sustained_compute_ratio`` 1), and reports the error by EP size.

Then the term the step model adds since (``moe_ep_foreign_factor``, fitted per GPU by
``sincere fit kernels``, family ``moe_ep``), at the shipped factor and at one minimising
the mean absolute error (the first judgement of it, kept to show its reach): vLLM's
fused MoE under EP (no attention DP, or attention DP with the naive all-gather dispatch;
the step model prices it without attention DP) computes only its own experts' pairs, but
its intermediate buffers, activation and per-token reduction span every routed pair, and
the pairs of other GPUs' experts are written as zeros. Per such *foreign* pair,
``(2 up + width + 2 hidden)`` activations (``up``: ``2 width`` gated) at HBM speed times
one factor per GPU (0: no such pass), added in series:

    foreign_s = factor * T k (1 - 1/ep) (2 up + width + 2 hidden) * 2 bytes / HBM bytes/s

Each GPU's factor is also carried to it from the other GPUs running its class of kernel
(leave-one-GPU-out: the mean of theirs), the check a GPU without EP rows relies on.

    python benchmarks/moe_ep_rows.py [--kernels ../shared/data/kernels/aiconfigurator]

Machine-independent (no timing); about 4 s.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from sincere.catalog import get_accelerator
from sincere.fit.kernels import ACT_BYTES, COLUMNS, MOE_TILE
from sincere.perf import default_roofline_params
from sincere.perf.kernel_tables import KernelTable, dominant, read_table
from sincere.perf.moe import expert_work, fused_moe_s, narrow_expert_scale

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT.parent / "shared" / "data" / "kernels" / "aiconfigurator"
GPUS = {
    "h100_sxm": "H100-SXM",
    "h200_sxm": "H200",
    "b200_sxm": "B200",
    "l40s": "L40S",
    "rtx_pro_6000_server": "RTX-PRO-6000",
}
"""AIConfigurator's folder -> the catalog's accelerator (A100's table has no EP rows)."""
MAX_FACTOR = 10.0


@dataclass(frozen=True)
class EpRows:
    """One GPU's EP rows: the step model's price, the foreign pairs' bytes over HBM's bytes/s
    (the term at factor 1), the measurement, the EP size, the tokens and the shipped
    factor."""

    gpu: str
    kernel: str
    version: str
    priced: np.ndarray
    foreign: np.ndarray
    measured: np.ndarray
    ep: np.ndarray
    tokens: np.ndarray
    shipped: float

    def error(self, factor: float) -> np.ndarray:
        """Relative error of each row with the candidate term at ``factor``."""
        out: np.ndarray = (self.priced + factor * self.foreign) / self.measured - 1.0
        return out


def ep_rows(table: KernelTable, gpu: str) -> EpRows:
    """The bf16, balanced EP rows of the GPU's dominant kernel, priced."""
    keep = (
        table.equals("moe_dtype", "bfloat16")
        & table.equals("distribution", "balanced")
        & (table.num("moe_ep_size") > 1)
    )
    rows = table.where(keep)
    kernel = dominant(rows, "kernel_source")
    rows = rows.where(rows.equals("kernel_source", kernel))
    acc = get_accelerator(gpu)
    p = default_roofline_params(acc, {"sustained_compute_ratio": 1.0})
    if p.moe_mfu_efficiency is None or p.moe_bw_efficiency is None:
        raise ValueError(f"{gpu}: no fitted experts' constants to price its EP rows with")
    hbm = acc.hbm_bandwidth_gbps * 1e9
    rates = (acc.peak_tflops("bf16") * 1e12 * p.moe_mfu_efficiency, hbm * p.moe_bw_efficiency)
    t, h, inter = rows.num("num_tokens"), rows.num("hidden_size"), rows.num("inter_size")
    k, e = rows.num("topk"), rows.num("num_experts")
    ep, tp = rows.num("moe_ep_size"), rows.num("moe_tp_size")
    priced, foreign = np.empty(len(t)), np.empty(len(t))
    for i in range(len(t)):
        width = max(1, int(inter[i] // tp[i]))
        routing = (int(e[i]), int(k[i]), 0.0, MOE_TILE)
        work = expert_work(
            float(t[i]), int(h[i]), width, routing, ACT_BYTES, True, int(ep[i]), dealt=True
        )
        one = np.array(work).reshape(5, 1)
        one[:2] *= narrow_expert_scale(width, p.moe_width_offset)
        feats = (one[0], one[1], one[2], one[3], one[4])
        seconds = fused_moe_s(
            feats, rates, 2.0, p.moe_kernel_s, p.moe_tail_share, p.overlap_exponent, p.moe_expert_s
        )
        priced[i] = float(seconds[0])
        pairs = t[i] * k[i] * (1.0 - 1.0 / ep[i])
        foreign[i] = pairs * (2 * 2 * width + width + 2 * h[i]) * ACT_BYTES / hbm
    measured = rows.num("latency") * 1e-3
    shipped = p.moe_ep_foreign_factor
    return EpRows(gpu, kernel, table.version, priced, foreign, measured, ep, t, shipped)


def fit_factor(rows: EpRows) -> float:
    """The candidate term's factor minimising the rows' mean absolute error, 0 to
    :data:`MAX_FACTOR`."""
    found = minimize_scalar(
        lambda f: float(np.mean(np.abs(rows.error(f)))),
        bounds=(0.0, MAX_FACTOR),
        method="bounded",
    )
    zero = float(np.mean(np.abs(rows.error(0.0))))
    return 0.0 if zero <= found.fun else float(found.x)


def kernel_class(kernel: str) -> str:
    """vLLM's Triton fused MoE or another kernel (FlashInfer's CUTLASS on RTX PRO 6000)."""
    return "triton" if "triton" in kernel or kernel == "vllm_fused_moe" else kernel


def cell(errors: np.ndarray) -> str:
    """Mean absolute error and bias, in per cent."""
    return f"{100 * np.mean(np.abs(errors)):.1f} % ({100 * np.mean(errors):+.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=Path, default=KERNELS)
    args = parser.parse_args()
    found: dict[str, EpRows] = {}
    for folder, gpu in GPUS.items():
        table = read_table(args.kernels / folder, "moe", COLUMNS["moe"])
        if table is None:
            print(f"{gpu}: no moe table under {args.kernels / folder}")
            continue
        found[gpu] = ep_rows(table, gpu)
    factors = {gpu: fit_factor(rows) for gpu, rows in found.items()}
    print("| GPU (vLLM, kernel) | rows | without the pass | shipped factor | with it | "
          "least-error factor | with it | from its kernel class's other GPUs (factor) "
          "|")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for gpu, rows in found.items():
        peers = [
            factors[g]
            for g, r in found.items()
            if g != gpu and kernel_class(r.kernel) == kernel_class(rows.kernel)
        ]
        carried = (
            f"{cell(rows.error(float(np.mean(peers))))} ({np.mean(peers):.2f})" if peers else "none"
        )
        print(f"| {gpu} ({rows.version}, {rows.kernel}) | {len(rows.measured)} | "
              f"{cell(rows.error(0.0))} | {rows.shipped:.2f} | {cell(rows.error(rows.shipped))} "
              f"| {factors[gpu]:.2f} | {cell(rows.error(factors[gpu]))} | {carried} |")  # fmt: skip
    sizes = sorted({int(x) for rows in found.values() for x in rows.ep})
    print()
    print("By EP size, mean absolute error (bias), without the pass -> with the shipped factor; "
          "rows of 1,024 tokens and more in the second line of each cell:")  # fmt: skip
    print()
    print("| GPU | " + " | ".join(f"EP {s}" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for gpu, rows in found.items():
        cells = []
        for s in sizes:
            at = rows.ep == s
            big = at & (rows.tokens >= 1024)
            if not at.any():
                cells.append("")
                continue
            with_it = rows.error(rows.shipped)
            text = f"{cell(rows.error(0.0)[at])} -> {cell(with_it[at])}"
            if big.any():
                text += f"<br>{cell(rows.error(0.0)[big])} -> {cell(with_it[big])}"
            cells.append(text)
        print(f"| {gpu} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
