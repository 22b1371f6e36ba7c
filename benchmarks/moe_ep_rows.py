"""The step model's fused MoE under expert parallelism, against vLLM's measured EP calls.

The experts' constants (``sincere fit kernels``) are fitted on the fused-MoE rows of one GPU
holding every expert (``moe_ep_size`` 1). AIConfigurator's database also times vLLM's kernel
with the experts spread over 2 to 256 GPUs (``moe_ep_size`` > 1: one GPU's call, holding
``1/ep`` of the experts, over every token of the batch), which no family fitted before
``moe_ep``. This takes the rows that family is fitted on (``fit.kernels.moe_ep_rows``: bf16,
balanced routing, the dominant kernel, newest release) and prices them as the fit does, at
the GPU's shipped kernel constants (``fit.kernels.moe_ep_terms``: ``expert_work`` with
``ep``, the GPU's ``T k / ep`` routed pairs and its active experts' weights, at the kernel
benchmark's clock), and reports the error by EP size.

Then the terms the step model adds since (``moe_ep_foreign_factor``, ``moe_ep_kernel_s``
and ``moe_ep_onchip_share``, fitted per GPU by ``sincere fit kernels``, family ``moe_ep``), at the
shipped constants and at those minimising the mean absolute error (the first judgement of
them, kept to show their reach): vLLM's
fused MoE under EP (no attention DP, or attention DP with the naive all-gather dispatch;
the step model prices it without attention DP) computes only its own experts' pairs, but
its intermediate buffers, activation and per-token reduction span every routed pair, and
the pairs of other GPUs' experts are written as zeros. Per such *foreign* pair,
``(2 up + width + 2 hidden)`` activations (``up``: ``2 width`` gated) at HBM speed times
one factor per GPU (0: no such pass), for the bytes beyond a share of the L2 cache (what
the kernel's intermediates keep on chip), added in series with a fixed cost per call (what
an EP call pays beside the pass at every size), all three fitted together:

    bytes = T k (1 - 1/ep) (2 up + width + 2 hidden) * 2
    ep_s = kernel_s + factor * max(0, bytes - share * L2 bytes) / HBM bytes/s

Each GPU's constants are also carried to it from the other GPUs running its class of kernel
(leave-one-GPU-out: the mean of theirs), the check a GPU without EP rows relies on.

    python benchmarks/moe_ep_rows.py [--kernels ../shared/data/kernels/aiconfigurator]

Machine-independent (no timing); about 4 s.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from sincere.catalog import get_accelerator
from sincere.fit import kernels as kf
from sincere.perf.calibration import kernel_fits
from sincere.perf.kernel_tables import KernelTable, read_table

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT.parent / "shared" / "data" / "kernels" / "aiconfigurator"
GPUS = {
    "h100_sxm": "H100-SXM",
    "h200_sxm": "H200",
    "b200_sxm": "B200",
    "l40s": "L40S",
    "rtx_pro_6000_server": "RTX-PRO-6000",
}
"""AIConfigurator's folder -> the catalog's accelerator (A100's EP rows are power-law routings
only, and its kernel fit is not its default: ``step_fit.py`` judges it)."""
MAX_FACTOR = 10.0
MAX_KERNEL_S = 1e-3
MAX_SHARE = 1.0


@dataclass(frozen=True)
class EpRows:
    """One GPU's EP rows: the step model's price, the foreign pairs' bytes over HBM's bytes/s
    (the term at factor 1), the GPU's L2 bytes over HBM's bytes/s, the measurement, the EP
    size, the tokens and the shipped constants (factor, seconds per call, L2 share)."""

    gpu: str
    kernel: str
    version: str
    priced: np.ndarray
    foreign: np.ndarray
    l2: float
    measured: np.ndarray
    ep: np.ndarray
    tokens: np.ndarray
    shipped: tuple[float, float, float]

    def error(self, factor: float, kernel_s: float = 0.0, share: float = 0.0) -> np.ndarray:
        """Relative error of each row with the terms at ``factor``, ``kernel_s`` and
        ``share``."""
        terms = (self.priced, self.foreign, self.l2)
        priced = kf.moe_ep_predict(terms, factor, kernel_s, share)
        out: np.ndarray = priced / self.measured - 1.0
        return out


def ep_rows(table: KernelTable, gpu: str) -> EpRows:
    """The EP rows ``sincere fit kernels`` fits (:func:`~sincere.fit.kernels.moe_ep_rows`:
    bf16, balanced, the dominant kernel), priced at the GPU's shipped kernel fit."""
    rows = kf.moe_ep_rows(table)
    params = kernel_fits()[gpu]["params"]
    priced, foreign, l2 = kf.moe_ep_terms(rows, get_accelerator(gpu), params)
    kernel = str(rows.columns["kernel_source"][0])
    measured = rows.num("latency") * 1e-3
    ep, tokens = rows.num("moe_ep_size"), rows.num("num_tokens")
    shipped = kf.moe_ep_constants(params)
    return EpRows(gpu, kernel, table.version, priced, foreign, l2, measured, ep, tokens, shipped)


def fit_constants(rows: EpRows) -> tuple[float, float, float]:
    """The factor (0 to :data:`MAX_FACTOR`), cost per call (0 to :data:`MAX_KERNEL_S`) and L2
    share (0 to :data:`MAX_SHARE`) minimising the rows' mean absolute error, from the
    shipped ones (Powell's method: the mean absolute error has corners); none where none
    beats no terms."""

    def mean_error(x: np.ndarray) -> float:
        errors = rows.error(float(x[0]), float(x[1]) * 1e-6, float(x[2]))
        return float(np.mean(np.abs(errors)))

    start = np.array([rows.shipped[0], rows.shipped[1] * 1e6, rows.shipped[2]])
    bounds = [(0.0, MAX_FACTOR), (0.0, MAX_KERNEL_S * 1e6), (0.0, MAX_SHARE)]
    found = minimize(mean_error, start, method="Powell", bounds=bounds)
    if mean_error(np.zeros(3)) <= found.fun:
        return 0.0, 0.0, 0.0
    return float(found.x[0]), float(found.x[1]) * 1e-6, float(found.x[2])


def constants(values: tuple[float, float, float]) -> str:
    """A factor, a cost per call and an L2 share, as the tables show them."""
    return f"{values[0]:.2f}, {values[1] * 1e6:.1f} us, {values[2]:.2f}"


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
        table = read_table(args.kernels / folder, "moe", kf.COLUMNS["moe"])
        if table is None:
            print(f"{gpu}: no moe table under {args.kernels / folder}")
            continue
        found[gpu] = ep_rows(table, gpu)
    best = {gpu: fit_constants(rows) for gpu, rows in found.items()}
    print("| GPU (vLLM, kernel) | rows | without the terms | shipped (factor, per call, L2 "
          "share) | with them | least-error constants | with them | from its kernel class's "
          "other GPUs (constants) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for gpu, rows in found.items():
        peers = [
            best[g]
            for g, r in found.items()
            if g != gpu and kernel_class(r.kernel) == kernel_class(rows.kernel)
        ]
        carried = "none"
        if peers:
            factor, kernel_s, share = (float(np.mean(v)) for v in zip(*peers, strict=True))
            mean = (factor, kernel_s, share)
            carried = f"{cell(rows.error(*mean))} ({constants(mean)})"
        print(f"| {gpu} ({rows.version}, {rows.kernel}) | {len(rows.measured)} | "
              f"{cell(rows.error(0.0))} | {constants(rows.shipped)} | "
              f"{cell(rows.error(*rows.shipped))} | {constants(best[gpu])} | "
              f"{cell(rows.error(*best[gpu]))} | {carried} |")  # fmt: skip
    sizes = sorted({int(x) for rows in found.values() for x in rows.ep})
    print()
    print("By EP size, mean absolute error (bias), without the terms -> with the shipped ones; "
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
            with_it = rows.error(*rows.shipped)
            text = f"{cell(rows.error(0.0)[at])} -> {cell(with_it[at])}"
            if big.any():
                text += f"<br>{cell(rows.error(0.0)[big])} -> {cell(with_it[big])}"
            cells.append(text)
        print(f"| {gpu} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
