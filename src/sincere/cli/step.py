"""``sincere step MODEL --accelerator A --prefill 512@1024 --decode 32@1200``: one iteration.

Times one continuous-batching iteration of a catalog model on a catalog accelerator
with any step-time model (default: the roofline with the accelerator's default
constants) and breaks it into parts -- the layers' linear work, attention and
communication, the LM head, and the CPU's overhead -- where the model can
(``roofline``, ``profiled``). ``--prefill TOKENS[@CACHED]`` adds a prefill chunk of
``TOKENS`` tokens after ``CACHED`` cached ones; ``--decode N@CTX`` adds ``N`` decoding
sequences with ``CTX`` tokens of context each; both repeat. ``--json`` prints
``{"iteration_s": …, "parts": {…}}`` (seconds), with ``"notes"`` when there are any.
A mixture-of-experts model's parts add ``router``, ``experts`` and ``all_to_all``
(``--ep`` spreads the experts over that many of the TP group's GPUs; ``--attention-dp D``
times one of ``D`` data-parallel attention ranks whose ``D × tp`` GPUs share the experts,
every rank carrying a batch like this one); weights in a
precision the accelerator has no rate for (fp8 on A100, MXFP4 anywhere) are said to
run dequantised to bf16.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.perf.base import Batch, Deployment, StepParts, StepTimeModel
    from sincere.perf.execution import ExecutionParams
    from sincere.perf.roofline import RooflineParams

console = Console()


def parse_prefill(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 0); ``"512@1024"`` -> (512, 1024): chunk tokens and cached tokens."""
    chunk, _, cached = text.partition("@")
    try:
        pair = int(chunk), int(cached or 0)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected TOKENS or TOKENS@CACHED (integers)") from None
    if pair[0] < 1 or pair[1] < 0:
        raise typer.BadParameter(f"{text!r}: TOKENS must be >= 1 and CACHED >= 0")
    return pair


def parse_decode(text: str) -> tuple[int, int]:
    """``"32@1200"`` -> (32, 1200): sequences and context tokens per sequence."""
    count, sep, ctx = text.partition("@")
    try:
        pair = int(count), int(ctx)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected N@CTX (integers)") from None
    if not sep or pair[0] < 1 or pair[1] < 1:
        raise typer.BadParameter(f"{text!r}: expected N@CTX with N >= 1 and CTX >= 1")
    return pair


def gemm_shape_factor(built: object, plain: object, batch: Batch) -> float | None:
    """The GEMMs' time (linear work and LM head) of ``built`` over that of ``plain`` (the
    same roofline with ``shape_corrections`` off) on ``batch``; None where no GEMM takes a
    factor (no grid for this GPU and precision) or a model gives no breakdown."""
    from sincere.perf.base import StepBreakdown

    if not isinstance(built, StepBreakdown) or not isinstance(plain, StepBreakdown):
        return None
    with_grid, form = built.parts(batch), plain.parts(batch)
    base = form.linear_s + form.lm_head_s
    if base <= 0.0 or with_grid.linear_s + with_grid.lm_head_s == base:
        return None
    return (with_grid.linear_s + with_grid.lm_head_s) / base


def _parts_table(parts: StepParts) -> Table:
    table = Table()
    table.add_column("part")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    total = parts.total_s
    for name, seconds in parts.as_dict().items():
        share = seconds / total if total > 0 else 0.0
        table.add_row(name, f"{1e3 * seconds:.3f}", f"{100 * share:.1f} %")
    table.add_row("[bold]iteration[/bold]", f"[bold]{1e3 * total:.3f}[/bold]", "100.0 %")
    return table


def precision_notes(dep: Deployment, mxfp4_activations: str | None = None) -> list[str]:
    """What the weight precision means on this accelerator, when it is not run as stored."""
    acc, precision = dep.accelerator, dep.precision
    compute = acc.compute_precision(precision)
    if precision == "fp8" and compute != "fp8":
        return [f"{acc.name} has no fp8 rate: fp8 weights run dequantised, GEMMs at bf16"]
    if precision == "mxfp4" and mxfp4_activations == "mxfp8" and dep.model.is_moe:
        return [f"MXFP4 experts multiply MXFP8 activations on {acc.name}: at the fp8 rate"]
    if precision == "mxfp4":
        whose = " of the experts" if dep.model.is_moe else ""
        return [f"MXFP4 weights{whose} are dequantised on {acc.name}: GEMMs at bf16"]
    return []


def unaligned_expert_notes(
    dep: Deployment, params: RooflineParams, vllm_version: str | None = None
) -> list[str]:
    """A note where the routed experts' width on one GPU is off a multiple of 16 and this
    GPU's kernel fit (under vLLM ``vllm_version``'s kernels where given), or its class's
    where it has none, prices that (``moe_unaligned_factor``)."""
    from sincere.perf.arch_step import expert_width
    from sincere.perf.calibration import roofline_defaults
    from sincere.perf.moe import ALIGNED_WIDTH, unaligned_factor
    from sincere.perf.roofline import expert_unaligned_factor

    if not dep.model.is_moe:
        return []
    width = expert_width(dep)
    compute = dep.accelerator.compute_precision(dep.precision)
    factor = unaligned_factor(width, expert_unaligned_factor(params, dep.precision, compute))
    if factor == 1.0:
        return []
    name = dep.accelerator.name
    whose = f"{name}'s bf16 fused-MoE kernel was"
    experts = roofline_defaults(dep.accelerator, vllm_version).parts.get("experts", "")
    if experts.startswith("prior"):
        whose = f"the bf16 fused-MoE kernels of {name}'s class were, averaged,"
    return [
        f"experts {width} wide on each GPU, off a multiple of {ALIGNED_WIDTH}: x{factor:.2f}, "
        f"as {whose} measured at such widths"
    ]


def constants_origin(dep: Deployment, vllm_version: str | None = None) -> dict[str, str]:
    """Where each part's default constants come from, for the parts this deployment uses
    (under vLLM ``vllm_version``'s kernels where given)."""
    from sincere.catalog.specs import PRECISION_BYTES
    from sincere.perf.calibration import roofline_defaults

    parts = roofline_defaults(dep.accelerator, vllm_version).parts
    skip = set()
    compute = dep.accelerator.compute_precision(dep.precision)
    if compute != "fp8":
        skip.add("linear_fp8")
    if compute != "nvfp4":
        skip.add("linear_nvfp4")
    if dep.tp == 1:
        skip.add("communication")
    if not dep.model.is_moe:
        skip.update(("experts", "quantised_experts"))
    elif PRECISION_BYTES[dep.precision] >= 2.0:  # bf16, fp16 or fp32 experts
        skip.add("quantised_experts")
    if dep.ep == 1:
        skip.add("all_to_all")
    if not dep.model.num_linear_layers:
        skip.add("linear_attention")
    return {part: origin for part, origin in parts.items() if part not in skip}


@dataclass(frozen=True)
class SpecOptions:
    """``sincere step``'s speculation options."""

    method: str
    draft_tokens: int | None
    acceptance: str | None
    max_batch: int | None
    draft_model: str | None


def speculation_report(
    options: SpecOptions,
    dep: Deployment,
    built: StepTimeModel,
    batch: Batch,
    execution: ExecutionParams,
    max_num_seqs: int,
) -> dict[str, object]:
    """The iteration with and without speculation: its time, the tokens each decoding
    sequence gains, and the time per output token (the iteration over those tokens)."""
    from sincere.catalog import get_model
    from sincere.cli.speculate import params_of_options, speculative_decode
    from sincere.perf.base import Deployment
    from sincere.perf.execution import with_execution
    from sincere.perf.factory import StepModelConfig
    from sincere.perf.speculation import SpeculativeStepModel

    if batch.num_decode_seqs == 0:
        raise ConfigError("--speculation speculates the decodes: give --decode N@CTX too",
                          where="--speculation", value=options.method)  # fmt: skip
    params = params_of_options(
        options.method, options.draft_tokens, options.acceptance, options.max_batch
    )

    def draft_step(name: str) -> StepTimeModel:
        draft_dep = Deployment(get_model(name), dep.accelerator, dep.precision, tp=dep.tp)
        roofline = StepModelConfig(kind="roofline").for_engine(execution).build(draft_dep)
        return with_execution(roofline, execution, max_num_seqs)

    spec = speculative_decode(built, params, dep.model.num_layers, options.draft_model, draft_step)
    n = batch.num_decode_seqs
    plain_s, spec_s = built.iteration_s(batch), SpeculativeStepModel(spec).iteration_s(batch)
    tokens = spec.tokens_per_step(n)
    return {
        "method": params.method, "draft_tokens": params.num_draft_tokens,
        "acceptance": list(params.acceptance), "speculates": params.speculates(n),
        "plain": {"iteration_s": plain_s, "tokens_per_step": 1.0, "per_token_s": plain_s},
        "speculative": {"iteration_s": spec_s, "tokens_per_step": tokens,
                        "per_token_s": spec_s / tokens},
        "speedup": plain_s / (spec_s / tokens),
    }  # fmt: skip


def speculation_line(spec: dict[str, Any]) -> str:
    """One line of :func:`speculation_report`'s figures."""
    plain, fast = spec["plain"], spec["speculative"]
    off = "" if spec["speculates"] else " (off at this batch size: above --spec-max-batch)"
    return (
        f"speculation {spec['method']}, {spec['draft_tokens']} drafted at {spec['acceptance']}"
        f"{off}: {1e3 * fast['iteration_s']:.3f} ms a step, {fast['tokens_per_step']:.2f} "
        f"tokens a sequence, {1e3 * fast['per_token_s']:.3f} ms a token; without: "
        f"{1e3 * plain['iteration_s']:.3f} ms, 1 token; speed-up {spec['speedup']:.2f}x"
    )


@app.command("step")
def step_command(
    model: Annotated[str, typer.Argument(help="catalog model (sincere catalog models)")],
    accelerator: Annotated[str, typer.Option(help="catalog accelerator")],
    tp: Annotated[int, typer.Option(min=1, help="tensor-parallel degree")] = 1,
    ep: Annotated[
        int,
        typer.Option(min=1, help="expert-parallel degree (MoE models; divides tp x attention-dp)"),
    ] = 1,
    attention_dp: Annotated[
        int,
        typer.Option(
            min=1, help="data-parallel attention ranks sharing the experts (MoE models, with ep)"
        ),
    ] = 1,
    precision: Annotated[
        str, typer.Option(help="weight precision (bf16, fp16, fp8, mxfp4, int8, …)")
    ] = "bf16",
    step_model: Annotated[
        str,
        typer.Option(
            help="step-time model kind: roofline, inferno, profiled, ... (a wrong name lists "
            "them all)"
        ),
    ] = "roofline",
    params: Annotated[
        Path | None, typer.Option(help="parameter file of the step model (e.g. from `sincere fit`)")
    ] = None,
    vllm_version: Annotated[
        str | None,
        typer.Option(help="roofline: price with the kernels of this vLLM release (0.19.0)"),
    ] = None,
    mxfp4_activations: Annotated[
        str | None,
        typer.Option(
            help="roofline: what MXFP4 experts multiply with: bf16 (vLLM's default) or mxfp8 "
            "(Blackwell's MXFP4 x MXFP8 kernel)"
        ),
    ] = None,
    prefill: Annotated[
        list[str] | None,
        typer.Option(help="a prefill chunk TOKENS[@CACHED] (repeatable)"),
    ] = None,
    decode: Annotated[
        list[str] | None,
        typer.Option(help="N decoding sequences at CTX tokens: N@CTX (repeatable)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"iteration_s": …, "parts": {…}}')
    ] = False,
    preset: Annotated[
        str | None,
        typer.Option(
            help="engine execution model: vllm-v1, sglang, trtllm, eager (CPU in series); "
            "default: vllm-v1 over the roofline, eager over other step models"
        ),
    ] = None,
    max_num_seqs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="the engine's max_num_seqs (bounds vLLM's CUDA graphs); default: the "
            "preset's on this GPU (vLLM V1: 1,024 from 70 GiB, else 256)",
        ),
    ] = None,
    speculation: Annotated[
        str | None,
        typer.Option(help="speculative decoding of the decodes: eagle, mtp, draft-model, ngram"),
    ] = None,
    draft_tokens: Annotated[
        int | None, typer.Option(min=1, help="tokens drafted per step (default: one per rate)")
    ] = None,
    acceptance: Annotated[
        str | None, typer.Option(help="acceptance rate(s) per drafted position: 0.7 or 0.8,0.7")
    ] = None,
    spec_max_batch: Annotated[
        int | None, typer.Option(min=1, help="speculate only up to this many decoding sequences")
    ] = None,
    draft_model: Annotated[
        str | None, typer.Option(help="catalog model drafting (--speculation draft-model)")
    ] = None,
) -> None:
    """Time one iteration and break it into parts (linear, attention, communication, …)."""
    from sincere.catalog.loader import default_catalog
    from sincere.engine.build import check_parallelism
    from sincere.engine.defaults import default_limits, default_preset
    from sincere.engine.fit_check import check_step_fits
    from sincere.perf.base import Batch, Deployment, StepBreakdown
    from sincere.perf.calibration import roofline_defaults
    from sincere.perf.execution import execution_params, with_execution
    from sincere.perf.factory import StepModelConfig
    from sincere.perf.roofline import Roofline

    chunks = [parse_prefill(p) for p in prefill or []]
    decodes = [parse_decode(d) for d in decode or []]
    if not chunks and not decodes:
        raise ConfigError("nothing to time: give at least one --prefill or --decode")
    catalog = default_catalog()
    try:
        check_parallelism(catalog.model(model), tp, 1)
    except ConfigError as exc:
        raise ConfigError(str(exc), where="--tp") from None
    dep = Deployment(
        catalog.model(model),
        catalog.accelerator(accelerator),
        precision=precision,
        tp=tp,
        ep=ep,
        attention_dp=attention_dp,
    )
    batch = Batch.of(prefill=chunks, decode=[ctx for n, ctx in decodes for _ in range(n)])
    check_step_fits(dep, batch)
    notes = precision_notes(dep, mxfp4_activations)
    inline: dict[str, object] = {} if vllm_version is None else {"vllm_version": vllm_version}
    if mxfp4_activations is not None:
        if step_model != "roofline":
            raise ConfigError(
                "--mxfp4-activations prices the roofline's expert kernels",
                value=step_model,
                allowed=["roofline"],
                where="--step-model",
            )
        inline["mxfp4_activations"] = mxfp4_activations
    if preset is None:
        preset = default_preset(step_model, False, dep.accelerator)
    if max_num_seqs is None:
        max_num_seqs = default_limits(preset, dep.accelerator).max_num_seqs
    execution = execution_params(preset, {})

    def config(extra: dict[str, object]) -> StepModelConfig:
        """The step model with ``extra`` parameters, as the preset's engine runs it."""
        cfg = StepModelConfig(kind=step_model, params={**inline, **extra}, params_file=params)
        return cfg.for_engine(execution)

    built = config({}).build(dep)
    shape_factor = None
    if step_model == "roofline":  # what the measured GEMMs' factor by shape makes of the form
        plain = config({"shape_corrections": False}).build(dep)
        shape_factor = gemm_shape_factor(built, plain, batch)
        if isinstance(built, Roofline):
            notes += unaligned_expert_notes(dep, built.params, vllm_version)
            share = built.params.allreduce_latency_share
            if share != 1.0 and dep.tp * dep.attention_dp > 1:
                whose = (
                    f"the {execution.name} preset's own kernel"
                    if share == execution.allreduce_latency_share
                    else "as the step model's parameters set"
                )
                notes.append(
                    f"all-reduce latency at {share:g} of the kernel fit's (vLLM's "
                    f"all-reduce): {whose} (allreduce_latency_share, docs/engine.md)"
                )
    ratio = built.params.sustained_compute_ratio if isinstance(built, Roofline) else 1.0
    burst_s = None
    if ratio < 1.0:  # the same iteration at the burst clock (a lone one after a pause)
        fast = config({"sustained_compute_ratio": 1.0}).build(dep)
        burst_s = with_execution(fast, execution, max_num_seqs).iteration_s(batch)
    built = with_execution(built, execution, max_num_seqs)
    seconds = built.iteration_s(batch)
    parts = built.parts(batch) if isinstance(built, StepBreakdown) else None
    spec = None
    if speculation is not None:
        options = SpecOptions(speculation, draft_tokens, acceptance, spec_max_batch, draft_model)
        spec = speculation_report(options, dep, built, batch, execution, max_num_seqs)
    elif any(v is not None for v in (draft_tokens, acceptance, spec_max_batch, draft_model)):
        raise ConfigError(
            "--draft-tokens, --acceptance, --spec-max-batch and --draft-model "
            "set up --speculation: give its method too",
            where="--speculation",
        )
    if as_json:
        out: dict[str, object] = {
            "iteration_s": seconds,
            "parts": parts.as_dict() if parts else {},
        }
        if spec is not None:
            out["speculation"] = spec
        if shape_factor is not None:
            out["gemm_shape_factor"] = shape_factor
        if burst_s is not None:
            out["gpu_clock"] = {"sustained_ratio": ratio, "burst_iteration_s": burst_s}
        if notes:
            out["notes"] = notes
        if step_model == "roofline" and params is None:
            out["constants"] = constants_origin(dep, vllm_version)
        out["execution"] = {"preset": execution.name, "source": execution.source}
        typer.echo(json.dumps(out))
        return
    layout = f"tp {tp}, ep {ep}" if ep > 1 else f"tp {tp}"
    if attention_dp > 1:
        layout += f", attention dp {attention_dp}: one rank of {attention_dp * tp} GPUs"
        if ep == 1:
            layout += ", every expert split over them"
    what = (
        f"{dep.model.name} on {dep.accelerator.name} ({layout}, {precision}), {step_model}: "
        f"{batch.num_tokens} tokens, {batch.num_seqs} sequences"
    )
    if parts is None:
        console.print(f"{what}: {1e3 * seconds:.3f} ms (this step model gives no breakdown)")
    else:
        console.print(what, highlight=False)
        print_table(_parts_table(parts))
    if spec is not None:
        console.print(speculation_line(spec), highlight=False)
    if shape_factor is not None:
        console.print(
            f"GEMMs (linear work and LM head): x{shape_factor:.3f} the roofline's form, by the "
            "factor by shape fitted to the measured GEMMs its linear constants come from "
            "(shape_corrections: false for the form alone)",
            highlight=False,
        )
    if burst_s is not None:
        console.print(
            f"GPU clock: {1e3 * seconds:.3f} ms under sustained load (compute at {ratio:.3f} "
            f"of the kernel rate, as back-to-back prefills run), {1e3 * burst_s:.3f} ms at the "
            "burst clock (a short iteration after an idle pause); a serving engine moves "
            "between the two with its recent compute (engine.gpu_clock, docs/engine.md)",
            highlight=False,
        )
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"engine execution model: {execution.name} ({execution.source})", highlight=False)
    if step_model == "roofline" and params is None:
        origin = roofline_defaults(dep.accelerator, vllm_version).origin
        console.print(f"constants: {origin}", highlight=False)
        for part, origin in constants_origin(dep, vllm_version).items():
            console.print(f"  {part}: {origin}", highlight=False)
