"""The fitted A100 roofline against the composed kernel sums of Vidur's A100 profiles.

For each profiled model at TP 1 and 2, iterations of four families -- prefills of 64 to
4,096 tokens, decodes of 1 to 128 sequences at 1k and 4k tokens of context, and mixed
iterations (a 128 / 256 / 512-token chunk at 0 or 2,048 cached tokens with 8 / 32 / 96
decodes at 1k or 4k) -- are timed by

* the reference: the ``profiled`` step model, i.e. the operator tables composed the
  way Vidur composes them (layers × (linear + attention + two all-reduces));
* the roofline with the A100 fit shipped in ``sincere/data/perf/roofline/``
  (fitted by ``sincere fit gpu-profiles``), its all-reduce the fit's own (NCCL, called
  eagerly, as Vidur timed it: :func:`vidur_params`); only its layer kernels are compared
  (the LM head and CPU are not in the tables). The A100 defaults price the all-reduce
  from vLLM's measured custom all-reduce instead (``COLLECTIVE_PARTS`` in
  ``sincere.perf.calibration``): a last line gives them against the same sums;
* the previous default for context: the iteration-level roofline at 50 % of peak
  FLOPs and 85 % of HBM bandwidth, ``max(2·params·tokens + attention FLOPs, bytes)``
  plus a ring all-reduce at 70 % of NVLink and 10 us, without its 1 ms CPU term.

Only Llama-2-70B and CodeLlama-34B at TP2 have their own attention table (32 query /
4 KV heads per GPU); for the other deployments the reference's attention is that
table scaled by head counts (``scale_attention``), a derived figure reported apart,
and the linear + communication kernels (all measured) are compared on their own.
Then a leave-one-model-out check: the linear fit on three models, judged on the
fourth. Machine-independent (no timing); about 40 s.

Hopper: the shipped H100-SXM fit against Vidur's H100 profiles (six models, TP 1 to 8).
Those hold no attention and no engine steps, so what is judged is the GPU work they
measure -- the layers' linear kernels (the iteration minus overhead, communication,
attention and LM head) -- on the same iterations, for the shipped fit (all six models)
and leave-one-model-out (the linear fit on the five others, judged on the sixth).

Links (``--only links``): the all-reduce's leave-one-GPU-out from every other GPU and
from the GPUs of its own link kind (NVLink, PCIe) only. Releases (``--only releases``):
per GPU and older vLLM release measured, the default fit
(the newest tables) against that release's rows, beside the release's own fit. Linear
attention (``--only linear-attention``): the Gated DeltaNet families alone, judged as
``kernels`` judges every family. Grids (``--only grids``): whether one GPU's factor by
shape of its bf16 GEMMs carries to another (each held-out GPU under the others' mean
constants, without a grid and with each other GPU's). Decode and L2 (``--only
decode-l2``): every decode-attention call's measured time over the time its KV read
takes at the GPU's HBM peak, by octaves of KV read: which calls the L2 cache serves.
Skewed routing (``--only moe-skew``): per GPU with balanced fused-MoE rows, the bf16
experts' constants (fitted on those) against the same calls timed under the database's
``power_law_1.01`` and ``power_law_1.2`` routing, read as a Zipf popularity (the step
model's reading) and as the collector's generator drew them; without EP and under EP.
Skewed-routing fit (``--only moe-skew-fit``): the same experts fitted on the balanced rows
(shipped) and on all three routings (the power-law rows in the collector's reading), each
judged on the balanced and power-law rows, own fit and leave-one-GPU-out, with the
constants both ways.

    python benchmarks/step_fit.py [--profiles ../shared/data/gpu-profiles]
        [--only a100|h100|kernels|releases|links|linear-attention|grids|decode-l2|
         decode-levels|moe-skew|moe-skew-fit]
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sincere.catalog import get_accelerator, get_model
from sincere.fit.gpu_profiles import fit_gpu_profiles
from sincere.perf import Batch, Deployment, Roofline, RooflineParams, default_roofline_params
from sincere.perf.operators import AttentionShape, OperatorProfiles, read_operator_profiles
from sincere.perf.profiled import ProfiledStep

ROOT = Path(__file__).resolve().parents[1]
ACCELERATOR = get_accelerator("A100-80GB")
HOPPER = get_accelerator("H100-SXM")
FAMILIES = ("prefill", "decode 1k", "decode 4k", "mixed")


def grid() -> Iterator[tuple[str, Batch]]:
    """The iterations compared, by family."""
    for c in (64, 128, 256, 512, 1024, 2048, 4096):
        yield "prefill", Batch.of(prefill=[(c, 0)])
    for ctx, family in ((1024, "decode 1k"), (4096, "decode 4k")):
        for n in (1, 2, 4, 8, 16, 32, 64, 128):
            yield family, Batch.of(decode=[ctx] * n)
    for c in (128, 256, 512):
        for cached in (0, 2048):
            for n in (8, 32, 96):
                for ctx in (1024, 4096):
                    yield "mixed", Batch.of(prefill=[(c, cached)], decode=[ctx] * n)


def previous_default_s(dep: Deployment, batch: Batch) -> float:
    """The iteration-level datasheet roofline sincere used before (without its CPU term)."""
    model, acc = dep.model, dep.accelerator
    pairs = batch.prefill_attn_pairs + batch.decode_ctx_tokens
    flops = model.flops_per_token() * batch.num_tokens + model.attention_flops_per_pair() * pairs
    compute = flops / dep.tp / (acc.bf16_tflops * 1e12 * 0.5)
    kv_tokens = batch.decode_ctx_tokens + batch.prefill_ctx_tokens + batch.num_tokens
    share = math.ceil(model.num_kv_heads / dep.tp) / model.num_kv_heads
    moved = model.weight_bytes("bf16") / dep.tp + kv_tokens * model.kv_bytes_per_token() * share
    memory = moved / (acc.hbm_bandwidth_gbps * 1e9 * 0.85)
    comm = 0.0
    if dep.tp > 1:
        link = acc.interconnect_gbps_per_direction * 1e9 * 0.7
        message = batch.num_tokens * model.hidden_size * 2.0
        comm = 2 * model.num_layers * (10e-6 + 2 * (dep.tp - 1) / dep.tp * message / link)
    return max(compute, memory) + comm


def compare(
    profiles: OperatorProfiles, params: RooflineParams | None, models: list[str]
) -> dict[tuple[str, int], list[tuple[str, float, float, float, bool]]]:
    """Per (model, tp): family, whole error, no-attention error, previous default's error,
    and whether the reference's attention was measured for this shape."""
    out = {}
    for name in models:
        for tp in (1, 2):
            dep = Deployment(get_model(name), ACCELERATOR, tp=tp)
            exact = profiles.attention_table(AttentionShape.of(dep.model, tp)) is not None
            ref = ProfiledStep(profiles, dep, scale_attention=True, cpu=False)
            model = Roofline(dep, params)
            rows = []
            for family, batch in grid():
                r, m = ref.parts(batch), model.parts(batch)
                whole = m.kernels_s / r.kernels_s - 1
                layers = (m.linear_s + m.communication_s) / (r.linear_s + r.communication_s) - 1
                before = previous_default_s(dep, batch) / r.kernels_s - 1
                rows.append((family, whole, layers, before, exact))
            out[(name, tp)] = rows
    return out


def stats(errors: list[float]) -> str:
    """``mean / max`` of absolute errors, in %."""
    e = np.abs(errors)
    return f"{100 * e.mean():.1f} / {100 * e.max():.1f}"


def accuracy_tables(
    results: dict[tuple[str, int], list[tuple[str, float, float, float, bool]]],
) -> None:
    """Per deployment and per family, with the previous default beside."""
    print(
        "| model | TP | reference attention | whole iteration: mean / max % "
        "| linear + comm only | previous default: mean / max % (bias) |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for (name, tp), rows in results.items():
        whole = [r[1] for r in rows]
        before = [r[3] for r in rows]
        kind = "measured" if rows[0][4] else "scaled (derived)"
        print(
            f"| {name} | {tp} | {kind} | {stats(whole)} | {stats([r[2] for r in rows])} "
            f"| {stats(before)} ({100 * np.mean(before):+.0f} %) |"
        )
    print(
        "\n| family | measured attention: mean / max % "
        "| all deployments, linear + comm: mean / max % "
        "| previous default (measured attention): bias |"
    )
    print("|---|---:|---:|---:|")
    for family in FAMILIES:
        exact = [r[1] for rows in results.values() for r in rows if r[0] == family and r[4]]
        layers = [r[2] for rows in results.values() for r in rows if r[0] == family]
        before = [r[3] for rows in results.values() for r in rows if r[0] == family and r[4]]
        print(f"| {family} | {stats(exact)} | {stats(layers)} | {100 * np.mean(before):+.0f} % |")


def leave_one_out(profiles: OperatorProfiles) -> None:
    """The linear work fitted on three models, judged on the fourth."""
    print(
        "\n| held-out model | fitted on | mfu / bw / tile | TP1 linear + comm: mean / max % "
        "| TP2 | TP2 whole (attention measured?) |"
    )
    print("|---|---|---|---:|---:|---:|")
    for held in profiles.models:
        others = [m for m in profiles.models if m != held]
        fit = fit_gpu_profiles(profiles, ACCELERATOR, models=others)
        results = compare(profiles, RooflineParams(**fit.params), [held])
        p = fit.params
        cells = [stats([r[2] for r in results[(held, tp)]]) for tp in (1, 2)]
        tp2 = results[(held, 2)]
        whole = f"{stats([r[1] for r in tp2])} ({'yes' if tp2[0][4] else 'scaled'})"
        print(
            f"| {held} | {', '.join(others)} | {p['mfu_efficiency']:.3f} / "
            f"{p['bw_efficiency']:.3f} / {p['token_tile']} | {cells[0]} | {cells[1]} | {whole} |"
        )


def hopper_errors(
    profiles: OperatorProfiles, params: RooflineParams | None, name: str
) -> dict[int, list[float]]:
    """Per TP: relative errors of the roofline's linear kernels vs the H100 tables' sums."""
    out: dict[int, list[float]] = {}
    if params is None:  # the shipped defaults at the kernel benchmark's clock, as the tables
        params = default_roofline_params(HOPPER, {"sustained_compute_ratio": 1.0})
    for (model_name, tp), table in sorted(profiles.linear.items()):
        if model_name != name:
            continue
        dep = Deployment(get_model(name), HOPPER, tp=tp)
        model = Roofline(dep, params)
        layers = dep.model.num_layers
        errors = []
        for _, batch in grid():
            measured = layers * table.layer_ms(batch.num_tokens) * 1e-3
            errors.append(model.parts(batch).linear_s / measured - 1)
        out[tp] = errors
    return out


def hopper(profiles: OperatorProfiles) -> None:
    """The shipped H100 fit and leave-one-model-out, per model and TP."""
    from sincere.perf.calibration import shipped_fits

    a100 = shipped_fits()["A100-80GB"]
    print(
        "\n| H100 model | TPs | shipped H100 fit: mean / max % | leave-one-model-out: mean / max % "
        "| held-out fit mfu / bw / tile |"
    )
    print("|---|---|---:|---:|---:|")
    shipped_all: list[float] = []
    held_all: list[float] = []
    for held in profiles.models:
        shipped = hopper_errors(profiles, None, held)
        others = [m for m in profiles.models if m != held]
        fit = fit_gpu_profiles(profiles, HOPPER, models=others, borrow_from=a100)
        out = hopper_errors(profiles, RooflineParams(**fit.params), held)
        flat_shipped = [e for errors in shipped.values() for e in errors]
        flat_held = [e for errors in out.values() for e in errors]
        shipped_all += flat_shipped
        held_all += flat_held
        p = fit.params
        print(
            f"| {held} | {', '.join(map(str, shipped))} | {stats(flat_shipped)} "
            f"| {stats(flat_held)} | {p['mfu_efficiency']:.3f} / {p['bw_efficiency']:.3f} "
            f"/ {p['token_tile']} |"
        )
    print(
        f"\none-line: H100 fit vs H100 linear kernel sums: shipped {stats(shipped_all)} %, "
        f"leave-one-model-out {stats(held_all)} % (mean / max)"
    )


# --- measured vLLM kernels (AIConfigurator's database) ------------------------------------
KERNEL_GPUS = (
    ("H100-SXM", "h100_sxm"),
    ("H200", "h200_sxm"),
    ("A100-80GB", "a100_sxm"),
    ("L40S", "l40s"),
    ("B200", "b200_sxm"),
    ("RTX-PRO-6000", "rtx_pro_6000_server"),
)
NUM_FOLDS = 4  # leave-one-model-shape-out: shapes dealt into this many folds


def errors_of(pred: np.ndarray, measured: np.ndarray) -> tuple[float, float, float]:
    """(mean |error|, max |error|, mean signed error), relative."""
    rel = pred / measured - 1.0
    return float(np.abs(rel).mean()), float(np.abs(rel).max()), float(rel.mean())


def cell(err: tuple[float, float, float]) -> str:
    """``mean / max (bias)`` in percent (``—`` where nothing was held out)."""
    if math.isnan(err[0]):
        return "—"
    return f"{100 * err[0]:.1f} / {100 * err[1]:.0f} ({100 * err[2]:+.1f})"


def fit_one(name: str, table, acc, context: dict, root: Path):  # type: ignore[no-untyped-def]
    """Fit family ``name`` on ``table`` (the others' constants it needs from ``context``)."""
    from sincere.fit import kernels as kf

    if name == "gemm_bf16":
        return kf.fit_gemm(table, acc, root)
    if name in kf.QUANT_GEMMS:  # on the bf16 fit's bandwidth share, exponent and tile
        return kf.fit_quant_gemm(name, table, acc, context["_bf16"], root)
    if name == "prefill_attention":
        return kf.fit_prefill_attention(table, acc, root)
    if name == "decode_attention":
        terms = (context["attn_head_dim_offset"], context["attn_kv_head_work"])
        return kf.fit_decode_attention(table, acc, context["attn_mfu_efficiency"], root, terms)
    if name == "allreduce":
        return kf.fit_allreduce(table, acc, root)
    if name == "alltoall":
        return kf.fit_alltoall(table, acc, root)
    if name in kf.QUANT_EXPERTS:  # on the bf16 experts' overlap exponent and tail share
        return kf.fit_quant_moe(name, table, acc, context, root)
    if name == "moe_ep":  # the bf16 experts' constants price each GPU's own pairs
        return kf.fit_moe_ep(table, acc, context, root)
    if name in kf.GDN_PHASES:  # linear attention: prefill or decode, on their own
        return kf.fit_gdn(name, table, acc, root)
    if name == "mla_decode":
        return kf.fit_mla_decode(table, acc, root)
    return kf.fit_moe(table, acc, context["overlap_exponent"], root)


def shape_folds(name: str, rows) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Each row's fold: its model shape's rank among the sorted shapes, modulo the folds."""
    from sincere.fit.kernels import SHAPE_COLUMNS

    keys = np.column_stack([rows.num(c) for c in SHAPE_COLUMNS[name]])
    _, index = np.unique(keys, axis=0, return_inverse=True)
    folds: np.ndarray = index.reshape(-1) % NUM_FOLDS
    return folds


def mean_params(docs: list[dict]) -> dict:  # type: ignore[type-arg]
    """The other GPUs' constants averaged (lists per entry, a token tile the smallest,
    a factor by shape node by node: its log factors averaged over one set of axes)."""
    out: dict = {}  # type: ignore[type-arg]
    for key in {k for d in docs for k in d}:
        values = [d[key] for d in docs if key in d]
        if key.endswith("token_tile"):  # a tile: the smallest, a whole number
            out[key] = min(values)
        elif isinstance(values[0], dict):  # a shape grid (the fits share its axes)
            assert all(v["axes"] == values[0]["axes"] for v in values), key
            nodes = np.array([g["log_factors"] for g in values])
            logs = [float(v) for v in nodes.mean(axis=0)]
            out[key] = {"axes": values[0]["axes"], "log_factors": logs}
        elif isinstance(values[0], list):
            out[key] = [float(np.mean(v)) for v in zip(*values, strict=True)]
        else:
            out[key] = float(np.mean(values))
    return out


def stand_ins(
    name: str, held: str, others: list[str], skewed: frozenset[str] = frozenset()
) -> list[str]:
    """The GPUs of ``others`` (which measured family ``name``) whose constants stand in for
    GPU ``held``'s when it is held out: where vLLM picks the family's kernel by
    architecture, or over the same link for the collectives
    (:data:`sincere.perf.kernel_choice.KERNEL_CLASSES`: prefill and decode attention,
    linear attention's prefill, MLA decode, the fused MoE under EP, the bf16 and quantised
    experts by the tensor-core instructions their kernels use, the all-reduce and the
    all-to-all) those running the same kernel whose family was not fitted on skewed
    routings alone (``skewed``), as the runtime's prior takes them
    (:mod:`sincere.perf.calibration`), all of them if none does; every other family, all of
    them."""
    from sincere.perf.kernel_choice import KERNEL_CLASSES

    classify = KERNEL_CLASSES.get(name)
    if classify is None:
        return others
    kind = classify(get_accelerator(held))
    same = [o for o in others if classify(get_accelerator(o)) == kind and o not in skewed]
    return same or others


def kernel_checks(database: Path) -> None:
    """Per GPU and family: the fit's own error, leave-one-GPU-out, leave-one-shape-out."""
    from sincere.fit.kernels import (
        COLUMNS,
        FAMILY_TABLES,
        QUANT_GEMMS,
        family_rows,
        fit_kernels,
        predict_family,
    )
    from sincere.perf.calibration import peak_scaled_shares
    from sincere.perf.kernel_choice import KERNEL_CLASSES
    from sincere.perf.kernel_tables import read_table
    from sincere.perf.moe import SKEWED_ROUTING_NOTE

    fits, tables = {}, {}
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        fit = fit_kernels(database / folder, acc)
        merged = {k: v for fam in fit.families for k, v in fam.params.items()}
        fits[acc_name] = (acc, fit, merged)
        tables[acc_name] = {n: read_table(database / folder, n, COLUMNS[n]) for n in COLUMNS}
    print("\n| GPU | family | rows | own fit: mean / max % (bias) | leave-one-GPU-out "
          "| leave-one-shape-out |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    totals: dict[str, list[tuple[float, float, float]]] = {"own": [], "gpu": [], "shape": []}
    for acc_name, (acc, fit, merged) in fits.items():
        for fam in fit.families:
            table = tables[acc_name][FAMILY_TABLES[fam.name]]
            rows = family_rows(fam.name, table)
            measured = rows.num("latency") * 1e-3
            own = errors_of(predict_family(fam.name, rows, acc, merged), measured)
            measured_by = [
                a for a, (_, f, _) in fits.items() if a != acc_name and f.family(fam.name)
            ]
            skewed = frozenset(
                a for a in measured_by if SKEWED_ROUTING_NOTE in fits[a][1].family(fam.name).notes
            )
            names = stand_ins(fam.name, acc_name, measured_by, skewed)
            others = [fits[a][2] for a in names]
            prior = {**merged, **mean_params([{k: m[k] for k in fam.params} for m in others])}
            if fam.name in KERNEL_CLASSES and names:  # a class prior, as the runtime's
                slope_from = {a: fits[a][2] for a in measured_by if a not in skewed}
                stand = {a: fits[a][2] for a in names}
                carried = peak_scaled_shares(acc, fam.params, stand, slope_from)
                prior.update({key: share for key, (share, _) in carried.items()})
            if fam.name in QUANT_GEMMS:  # the bf16 terms they build on, also the others'
                prior.update(
                    mean_params([{k: m[k] for k in fit.families[0].params} for m in others])
                )
            held = errors_of(predict_family(fam.name, rows, acc, prior), measured)
            shape = shape_out(fam.name, table, acc, merged, fit)
            for key, err in (("own", own), ("gpu", held), ("shape", shape)):
                totals[key].append(err)
            print(f"| {acc_name} | {fam.name} | {len(measured)} | {cell(own)} | {cell(held)} "
                  f"| {cell(shape)} |")  # fmt: skip
    means = {k: float(np.nanmean([e[0] for e in v])) for k, v in totals.items()}
    print(
        f"\none-line: kernel families on {len(fits)} GPUs, mean |error|: own fit "
        f"{100 * means['own']:.1f} %, leave-one-GPU-out {100 * means['gpu']:.1f} %, "
        f"leave-one-shape-out {100 * means['shape']:.1f} %"
    )


def grid_checks(database: Path) -> None:
    """Whether a GEMM factor by shape carries to another GPU (``--only grids``): each GPU's
    bf16 GEMMs priced by the other GPUs' mean constants (leave-one-GPU-out), without a grid
    and with each other GPU's grid in turn."""
    from sincere.fit.kernels import COLUMNS, FAMILY_TABLES, family_rows, fit_kernels, predict_family
    from sincere.perf.kernel_tables import read_table

    name = "gemm_bf16"
    fits, rows = {}, {}
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        fit = fit_kernels(database / folder, acc)
        fits[acc_name] = {k: v for fam in fit.families for k, v in fam.params.items()}
        table = read_table(database / folder, FAMILY_TABLES[name], COLUMNS[FAMILY_TABLES[name]])
        rows[acc_name] = family_rows(name, table)
    names = list(fits)
    print(f"\n{name}, mean |error| % of each GPU's rows under the other GPUs' mean constants:")
    print("\n| held out | no grid | " + " | ".join(f"{n}'s grid" for n in names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for held in names:
        acc, measured = get_accelerator(held), rows[held].num("latency") * 1e-3
        others = [fits[o] for o in names if o != held]
        keys = [k for k in fits[held] if not k.endswith("_grid")]
        prior = {**fits[held], **mean_params([{k: m[k] for k in keys if k in m} for m in others])}
        prior.pop(f"{name}_grid")
        cells = [errors_of(predict_family(name, rows[held], acc, prior), measured)[0]]
        for other in names:
            if other == held:
                cells.append(float("nan"))
                continue
            with_grid = {**prior, f"{name}_grid": fits[other][f"{name}_grid"]}
            cells.append(errors_of(predict_family(name, rows[held], acc, with_grid), measured)[0])
        shown = ["—" if math.isnan(c) else f"{100 * c:.1f}" for c in cells]
        print(f"| {held} | " + " | ".join(shown) + " |")


def shape_out(name, table, acc, merged, fit) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Leave-one-shape-out: fit on the other folds' shapes, predict the held-out fold."""
    from sincere.fit.kernels import family_rows, predict_family

    if name in ("allreduce", "alltoall"):  # the shape is the GPU count: its own constants
        return (float("nan"),) * 3
    table = family_rows(name, table)  # the rows the family is fitted on: folds of their shapes
    table_folds = shape_folds(name, table)
    context = {**merged, "_bf16": fit.families[0] if fit is not None else None}
    preds, meas = [], []
    for fold in range(NUM_FOLDS):
        train = table.where(table_folds != fold)
        test = table.where(table_folds == fold)
        if train.num_rows == 0 or test.num_rows == 0:
            continue
        fam = fit_one(name, train, acc, context, table.path.parents[4])
        test_rows = family_rows(name, test)
        preds.append(predict_family(name, test_rows, acc, {**merged, **fam.params}))
        meas.append(test_rows.num("latency") * 1e-3)
    if not preds:  # one measured shape (INT4 experts): nothing to hold out
        return (float("nan"),) * 3
    return errors_of(np.concatenate(preds), np.concatenate(meas))


def linear_attention_checks(database: Path) -> None:
    """The Gated DeltaNet families alone (``--only linear-attention``): each GPU's own fit,
    leave-one-GPU-out and leave-one-shape-out, as :func:`kernel_checks` judges every family,
    without fitting the others."""
    from sincere.fit.kernels import COLUMNS, GDN_PHASES, family_rows, fit_gdn, predict_family
    from sincere.perf.kernel_tables import read_table

    fits = {}
    for acc_name, folder in KERNEL_GPUS:
        table = read_table(database / folder, "gdn", COLUMNS["gdn"])
        if table is None:
            continue
        acc = get_accelerator(acc_name)
        fams = {name: fit_gdn(name, table, acc, database) for name in GDN_PHASES}
        fits[acc_name] = (acc, table, fams)
    print("\n| GPU | family | rows | own fit: mean / max % (bias) | leave-one-GPU-out "
          "| leave-one-shape-out |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    totals: dict[str, list[float]] = {"own": [], "gpu": [], "shape": []}
    for acc_name, (acc, table, fams) in fits.items():
        for name, fam in fams.items():
            rows = family_rows(name, table)
            measured = rows.num("latency") * 1e-3
            own = errors_of(predict_family(name, rows, acc, fam.params), measured)
            peers = stand_ins(name, acc_name, [a for a in fits if a != acc_name])
            others = [fits[a][2][name].params for a in peers]
            held = errors_of(predict_family(name, rows, acc, mean_params(others)), measured)
            shape = shape_out(name, table, acc, fam.params, None)
            for key, err in (("own", own), ("gpu", held), ("shape", shape)):
                totals[key].append(err[0])
            print(f"| {acc_name} | {name} | {len(measured)} | {cell(own)} | {cell(held)} "
                  f"| {cell(shape)} |")  # fmt: skip
    means = {k: 100 * float(np.nanmean(v)) for k, v in totals.items()}
    print(
        f"\none-line: linear attention on {len(fits)} GPUs, mean |error|: own fit "
        f"{means['own']:.1f} %, leave-one-GPU-out {means['gpu']:.1f} %, leave-one-shape-out "
        f"{means['shape']:.1f} %"
    )


RELEASE_FAMILIES = ("gemm_bf16", "prefill_attention", "decode_attention", "allreduce", "moe")
"""Families compared across vLLM releases (their tables carry vLLM's version)."""


def older_releases(folder: Path) -> list[str]:
    """vLLM versions under ``folder`` older than its newest, oldest first."""
    from sincere.perf.calibration import version_key

    held = {
        p.name for op in ("gemm", "attention", "comm", "moe") for p in folder.glob(f"{op}/vllm/*")
    }
    ordered = sorted(held, key=version_key)
    return ordered[:-1]


def release_checks(database: Path) -> None:
    """Per GPU, family and older vLLM release: the newest tables' fit (the default) against
    that release's rows, beside the release's own fit (``fit kernels --vllm-version``)."""
    from sincere.fit.kernels import FAMILY_TABLES, family_rows, fit_kernels, predict_family

    print("\n| GPU | vLLM | family | rows | newest fit on them: mean % (bias) "
          "| own release fit: mean % (bias) |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|")
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        newest = fit_kernels(database / folder, acc)
        base = {k: v for fam in newest.families for k, v in fam.params.items()}
        for version in older_releases(database / folder):
            old = fit_kernels(database / folder, acc, version)
            merged = {**base, **{k: v for fam in old.families for k, v in fam.params.items()}}
            for fam in old.families:
                mine = newest.family(fam.name)
                if (
                    fam.name not in RELEASE_FAMILIES
                    or fam.version != version
                    or mine is None
                    or mine.version == version
                ):
                    continue  # a table this release did not measure, or the newest is it
                table = read_release(database / folder, FAMILY_TABLES[fam.name], version)
                rows = family_rows(fam.name, table)
                measured = rows.num("latency") * 1e-3
                theirs = errors_of(predict_family(fam.name, rows, acc, base), measured)
                own = errors_of(predict_family(fam.name, rows, acc, merged), measured)
                print(f"| {acc_name} | {version} | {fam.name} | {len(measured)} "
                      f"| {100 * theirs[0]:.1f} ({100 * theirs[2]:+.1f}) "
                      f"| {100 * own[0]:.1f} ({100 * own[2]:+.1f}) |")  # fmt: skip


LINKS = {"L40S": "PCIe", "RTX-PRO-6000": "PCIe"}
"""GPUs whose GPU-to-GPU link is PCIe (the others of KERNEL_GPUS: NVLink)."""


def held_out_allreduce(others: list[dict], counts: list[int]) -> dict:  # type: ignore[type-arg]
    """The all-reduce constants of the GPUs in ``others``, averaged per GPU count."""
    out: dict = {}  # type: ignore[type-arg]
    for key in ("allreduce_eager_s", "allreduce_eager_floor_s"):
        out[key] = float(np.mean([p[key] for p in others]))
    for key in ("allreduce_latencies_s", "allreduce_efficiencies"):
        values = []
        for c in counts:
            held = [
                q[key][q["allreduce_gpus"].index(c)] for q in others if c in q["allreduce_gpus"]
            ]
            values.append(float(np.mean(held)))
        out[key] = values
    out["allreduce_gpus"] = list(counts)
    return out


def link_checks(database: Path) -> None:
    """The all-reduce leave-one-GPU-out, from every other GPU and from those of its own link
    kind only (NVLink or PCIe): does a per-interconnect transfer carry? First, the
    stack-wide prior a GPU without kernel rows took before (the Vidur fits' eager NCCL
    latency and link share, averaged) against each GPU's measured vLLM all-reduce."""
    from sincere.fit.kernels import COLUMNS, family_rows, fit_allreduce, predict_family
    from sincere.perf.calibration import shipped_fits
    from sincere.perf.kernel_tables import read_table

    vidur = [doc["params"] for doc in shipped_fits().values()]
    stack = {k: float(np.mean([p[k] for p in vidur if k in p]))
             for k in ("allreduce_latency_s", "interconnect_efficiency")}  # fmt: skip

    fits = {}
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        table = read_table(database / folder, "custom_allreduce", COLUMNS["custom_allreduce"])
        fits[acc_name] = (acc, table, fit_allreduce(table, acc, database).params)
    print("\n| GPU | link | own fit | stack-wide prior | from every other GPU "
          "| from its link kind only |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for name, (acc, table, params) in fits.items():
        rows = family_rows("allreduce", table)
        measured = rows.num("latency") * 1e-3
        link = LINKS.get(name, "NVLink")
        counts = len(params["allreduce_gpus"])
        affine = {**params, "allreduce_latencies_s": [stack["allreduce_latency_s"]] * counts,
                  "allreduce_efficiencies": [stack["interconnect_efficiency"]] * counts,
                  "allreduce_eager_s": 0.0, "allreduce_eager_floor_s": 0.0,
                  "allreduce_grid": None}  # fmt: skip
        cells = [errors_of(predict_family("allreduce", rows, acc, params), measured),
                 errors_of(predict_family("allreduce", rows, acc, affine), measured)]  # fmt: skip
        for same in (False, True):
            others = [p for n, (_, _, p) in fits.items()
                      if n != name and (not same or LINKS.get(n, "NVLink") == link)]  # fmt: skip
            held = held_out_allreduce(others, params["allreduce_gpus"])
            cells.append(errors_of(predict_family("allreduce", rows, acc, held), measured))
        shown = " | ".join(f"{100 * e[0]:.1f} ({100 * e[2]:+.1f})" for e in cells)
        print(f"| {name} | {link} | {shown} |")


L2_OCTAVES_MB = (0.0, 1.0, 4.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, math.inf)


def decode_l2_checks(database: Path) -> None:
    """Per GPU, every bf16 decode-attention call (the fit's rows before the L2 window is
    left out) by octave of the KV it reads: the median and least of measured time over
    that read at the datasheet's HBM bandwidth (under 1: faster than HBM can deliver)."""
    from sincere.fit.kernels import COLUMNS, _attention_rows, decode_kv_bytes
    from sincere.perf.kernel_tables import read_table

    edges = L2_OCTAVES_MB
    names = [f"{lo:g}-{hi:g} MB" for lo, hi in itertools.pairwise(edges)]
    print("\n| GPU | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        name = "generation_attention"
        table = read_table(database / folder, name, COLUMNS[name])
        rows = _attention_rows(table)
        kv = decode_kv_bytes(rows)
        ratio = rows.num("latency") * 1e-3 / (kv / (acc.hbm_bandwidth_gbps * 1e9))
        cells = []
        for lo, hi in itertools.pairwise(edges):
            at = (kv >= lo * 1e6) & (kv < hi * 1e6)
            cells.append(f"{np.median(ratio[at]):.2f} ({ratio[at].min():.2f})" if at.any() else "—")
        print(f"| {acc_name} | " + " | ".join(cells) + " |")


def decode_level_checks(database: Path) -> None:
    """Per GPU, the decode-attention calls the fit keeps that read under 2 MB of KV (its
    fixed cost), split by whether the call has one sequence or one KV head per GPU: the
    measured time's median and 10th / 90th percentiles (us), and the shipped fit's median
    error (bias) and mean absolute error in each half."""
    from sincere.fit.kernels import (
        COLUMNS,
        LAUNCH_BOUND_BYTES,
        decode_kv_bytes,
        family_rows,
        grouped_decode,
        predict_family,
    )
    from sincere.perf.calibration import kernel_fit
    from sincere.perf.kernel_tables import read_table

    print("\n| GPU | calls | one sequence or one KV head: median (p10-p90) us | fit: bias, "
          "mean abs. error % | two or more of both | fit: bias, mean abs. error % |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        shipped = kernel_fit(acc_name)
        if shipped is None:
            raise SystemExit(f"no shipped kernel fit for {acc_name}")
        params = shipped["params"]
        name = "generation_attention"
        rows = family_rows("decode_attention", read_table(database / folder, name, COLUMNS[name]))
        small = decode_kv_bytes(rows) < LAUNCH_BOUND_BYTES
        measured = rows.num("latency") * 1e3  # us
        error = predict_family("decode_attention", rows, acc, params) * 1e6 / measured - 1.0
        grouped = grouped_decode(rows) > 0
        cells = []
        for part in (small & ~grouped, small & grouped):
            t, e = measured[part], error[part]
            p10, p50, p90 = np.percentile(t, [10, 50, 90])
            cells.append(f"{p50:.1f} ({p10:.1f}-{p90:.1f})")
            cells.append(f"{100 * np.median(e):+.1f}, {100 * np.abs(e).mean():.1f}")
        print(f"| {acc_name} | {int(small.sum())} | " + " | ".join(cells) + " |")


SKEWED_ROUTINGS = ("power_law_1.01", "power_law_1.2")
CALL_COLUMNS = ("hidden_size", "inter_size", "num_experts", "topk", "num_tokens",
                "moe_tp_size", "moe_ep_size", "moe_dtype", "kernel_source")  # fmt: skip
"""What makes one fused-MoE call apart from its routing."""


def same_calls(balanced, table, routing: str):  # type: ignore[no-untyped-def]
    """The rows of ``table`` timed under ``routing`` whose calls the family's ``balanced``
    rows time (the same shapes, tokens, split and kernel)."""

    def keys(rows):  # type: ignore[no-untyped-def]
        return zip(*(rows.columns[c].astype(str) for c in CALL_COLUMNS), strict=True)

    wanted = set(keys(balanced))
    rows = table.where(table.equals("distribution", routing))
    return rows.where(np.array([k in wanted for k in keys(rows)], dtype=bool))


def bias_cell(pred: np.ndarray, measured: np.ndarray) -> str:
    """``mean |error| / bias`` in percent."""
    err = errors_of(pred, measured)
    return f"{100 * err[0]:.1f} / {100 * err[2]:+.1f}"


def moe_skew_checks(database: Path) -> None:
    """The bf16 experts on skewed routing (``--only moe-skew``): each GPU's own fit (its
    balanced rows) against the same calls under each power law, the rows read as a Zipf
    popularity (a) and as the collector's generator drew them (b)."""
    from sincere.fit.kernels import COLUMNS, family_rows, fit_kernels, predict_family
    from sincere.perf.kernel_tables import read_table

    lines: dict[str, list[str]] = {"moe": [], "moe_ep": []}
    for acc_name, folder in KERNEL_GPUS:
        acc = get_accelerator(acc_name)
        table = read_table(database / folder, "moe", COLUMNS["moe"])
        if not table.equals("distribution", "balanced").any():
            print(f"\n{acc_name}: no balanced fused-MoE rows (fitted on the skewed): left out")
            continue
        fit = fit_kernels(database / folder, acc)
        merged = {k: v for fam in fit.families for k, v in fam.params.items()}
        for name in lines:
            if fit.family(name) is None:
                continue
            balanced = family_rows(name, table)
            ref = bias_cell(predict_family(name, balanced, acc, merged),
                            balanced.num("latency") * 1e-3)  # fmt: skip
            for routing in SKEWED_ROUTINGS:
                rows = same_calls(balanced, table, routing)
                if rows.num_rows == 0:
                    continue
                measured = rows.num("latency") * 1e-3
                cells = [bias_cell(predict_family(name, rows, acc, merged, collector), measured)
                         for collector in (False, True)]  # fmt: skip
                shown = f"{cells[0]} | {cells[1]} | {ref} ({balanced.num_rows})"
                lines[name].append(f"| {acc_name} | {routing} | {rows.num_rows} | {shown} |")
    for name, body in lines.items():
        print(f"\n{name}: mean |error| / bias %, balanced-fitted constants")
        print("| GPU | routing | rows | (a) Zipf reading | (b) collector's reading "
              "| balanced rows (rows) |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|")
        print("\n".join(body))


FIT_WAYS = {"balanced": False, "all routings": True}
"""How the experts are fitted (``--only moe-skew-fit``) -> ``all_routings``."""


def fit_both_ways(database: Path, acc_name: str, folder: str, table) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Per way of :data:`FIT_WAYS`, the ``moe`` and ``moe_ep`` constants of one GPU (the
    experts' overlap exponent its bf16 GEMMs' fit)."""
    from sincere.fit import kernels as kf
    from sincere.perf.kernel_tables import read_table

    acc = get_accelerator(acc_name)
    gemms = read_table(database / folder, "gemm", kf.COLUMNS["gemm"])
    overlap = kf.fit_gemm(gemms, acc, database).params["overlap_exponent"]
    out = {}
    for way, every in FIT_WAYS.items():
        moe = kf.fit_moe(table, acc, overlap, database, every).params
        experts = {**moe, "overlap_exponent": overlap}
        ep = kf.fit_moe_ep(table, acc, experts, database, every).params
        out[way] = {"moe": moe, "moe_ep": ep, "overlap_exponent": overlap}
    return out


def moe_skew_fit_checks(database: Path) -> None:
    """The bf16 experts fitted on balanced rows (shipped) and on every routing, the skewed
    rows read as the collector drew them (``--only moe-skew-fit``): each judged on the
    balanced rows and on the same calls under each power law (collector's reading), on its
    own GPU's constants and leave-one-GPU-out; then the fitted constants both ways."""
    from sincere.fit.kernels import COLUMNS, family_rows, predict_family
    from sincere.perf.kernel_tables import read_table

    gpus = {}
    for acc_name, folder in KERNEL_GPUS:
        table = read_table(database / folder, "moe", COLUMNS["moe"])
        if not table.equals("distribution", "balanced").any():
            print(f"\n{acc_name}: no balanced fused-MoE rows: left out")
            continue
        gpus[acc_name] = (table, fit_both_ways(database, acc_name, folder, table))
    for name in ("moe", "moe_ep"):
        print(f"\n{name}: mean |error| / bias % (rows), skewed rows in the collector's reading")
        print("| GPU | fitted on | balanced | power_law_1.01 | power_law_1.2 "
              "| LOGO balanced | LOGO 1.01 | LOGO 1.2 |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for acc_name, (table, fits) in gpus.items():
            acc = get_accelerator(acc_name)
            balanced = family_rows(name, table)
            sets = [balanced, *(same_calls(balanced, table, r) for r in SKEWED_ROUTINGS)]
            others = stand_ins(name, acc_name, [g for g in gpus if g != acc_name])
            for way, p in fits.items():
                own = {"overlap_exponent": p["overlap_exponent"], **p["moe"], **p["moe_ep"]}
                prior = {**own, **mean_params([gpus[g][1][way][name] for g in others])}
                cells = [
                    bias_cell(predict_family(name, rows, acc, params, True),
                              rows.num("latency") * 1e-3)
                    + (f" ({rows.num_rows})" if params is own else "")
                    for params in (own, prior) for rows in sets
                ]  # fmt: skip
                print(f"| {acc_name} | {way} | {' | '.join(cells)} |")
        keys = sorted({k for _, fits in gpus.values() for p in fits.values() for k in p[name]})
        print(f"\n{name} constants: " + ", ".join(keys))
        print("| GPU | fitted on | " + " | ".join(keys) + " |")
        print("|---|---|" + "---:|" * len(keys))
        for acc_name, (_, fits) in gpus.items():
            for way, p in fits.items():
                values = [f"{p[name][k]:.4g}" if k in p[name] else "—" for k in keys]
                print(f"| {acc_name} | {way} | " + " | ".join(values) + " |")


def read_release(folder: Path, name: str, version: str):  # type: ignore[no-untyped-def]
    """Table ``name`` of one vLLM release."""
    from sincere.fit.kernels import COLUMNS
    from sincere.perf.kernel_tables import read_table

    return read_table(folder, name, COLUMNS[name], version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--profiles", type=Path, default=ROOT.parent / "shared" / "data" / "gpu-profiles"
    )
    database_checks = {
        "releases": release_checks, "links": link_checks,
        "linear-attention": linear_attention_checks, "grids": grid_checks,
        "decode-l2": decode_l2_checks, "decode-levels": decode_level_checks,
        "moe-skew": moe_skew_checks, "moe-skew-fit": moe_skew_fit_checks,
    }  # fmt: skip
    only = ("a100", "h100", "kernels", *database_checks)
    parser.add_argument("--only", choices=only, default=None)
    parser.add_argument(
        "--kernels",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "kernels" / "aiconfigurator",
    )
    args = parser.parse_args()
    if args.only in database_checks:
        database_checks[args.only](args.kernels)
        return
    if args.only in (None, "kernels"):
        kernel_checks(args.kernels)
    if args.only == "kernels":
        return
    if args.only != "a100":
        hopper(read_operator_profiles(args.profiles / "h100"))
    if args.only == "h100":
        return
    profiles = read_operator_profiles(args.profiles / "a100")
    results = compare(profiles, vidur_params(), profiles.models)
    accuracy_tables(results)
    leave_one_out(profiles)
    for name, rows_of in (("fitted A100 roofline", results),
                          ("A100 defaults (vLLM's all-reduce)",
                           compare(profiles, None, profiles.models))):  # fmt: skip
        exact = [r[1] for rows in rows_of.values() for r in rows if r[4]]
        layers = [r[2] for rows in rows_of.values() for r in rows]
        print(
            f"\none-line: {name} vs composed kernel sums: measured-attention iterations "
            f"{stats(exact)} % (mean / max), linear + comm of all {len(rows_of)} deployments "
            f"{stats(layers)} %"
        )


def vidur_params() -> RooflineParams:
    """The A100 defaults with the all-reduce of the A100 fit itself (Vidur's NCCL calls,
    eager: one latency and one bandwidth share), not vLLM's custom all-reduce per GPU
    count that the defaults take from A100's kernel fit."""
    import dataclasses

    from sincere.perf.calibration import KERNEL_PARTS, shipped_fits

    fit = shipped_fits()["A100-80GB"]["params"]
    own = {k: fit[k] for k in KERNEL_PARTS["communication"] if k in fit}
    base = default_roofline_params(ACCELERATOR, own)
    return dataclasses.replace(
        base, allreduce_gpus=(), allreduce_latencies_s=(), allreduce_efficiencies=(),
        allreduce_eager_s=0.0, allreduce_eager_floor_s=0.0, allreduce_grid=None,
    )  # fmt: skip


if __name__ == "__main__":
    main()
