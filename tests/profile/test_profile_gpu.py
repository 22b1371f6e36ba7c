"""``sincere profile gpu``: the engine-like shard profiler (CPU path here; CUDA where present)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sincere.core.errors import ConfigError
from sincere.profile.csvio import read_profile_csv
from sincere.profile.gpu import GpuProfileConfig
from sincere.profile.gpu_model import IterationShape, ShardShape
from sincere.profile.local import resolve_config

SMALL = ["--device", "cpu", "--dtype", "float32", "--num-tokens", "1,16,64",
         "--prefill-chunks", "16,32", "--kv-sizes", "0,32", "--decode-batches", "1,4",
         "--decode-contexts", "16,64", "--batch-sizes", "1,2", "--context-tokens", "16",
         "--replays", "2"]  # fmt: skip


def small_config(**changes: Any) -> GpuProfileConfig:
    """The grid of SMALL as a config (for direct calls)."""
    base: dict[str, Any] = dict(
        device="cpu", dtype="float32", num_tokens=(1, 16, 64), prefill_chunks=(16, 32),
        kv_sizes=(0, 32), decode_batches=(1, 4), decode_contexts=(16, 64), batch_sizes=(1, 2),
        context_tokens=(16,), replays=2, warmups=1,
    )  # fmt: skip
    return GpuProfileConfig(**{**base, **changes})


def cli(args: list[str]) -> Any:
    """Run ``sincere`` in-process."""
    import sincere.cli.fit
    import sincere.cli.profile  # noqa: F401
    from sincere.cli.app import app

    return CliRunner().invoke(app, args)


def test_shard_shape_splits_heads_ffn_and_vocab() -> None:
    """At TP 4 a shard holds a quarter of the heads, FFN and vocabulary; KV heads replicate."""
    _, config = resolve_config("llama-3-8b")
    shard = ShardShape.of(config, 4)
    assert (shard.heads, shard.kv_heads, shard.inter) == (8, 2, 3584)
    assert shard.vocab == 128256 // 4 and shard.hidden == 4096
    assert ShardShape.of(config, 16).kv_heads == 1  # 8 KV heads over 16 GPUs: replicated
    with pytest.raises(ConfigError, match="tensor-parallel"):
        ShardShape.of(config, 0)


def test_iteration_shape_counts_tokens_and_sequences() -> None:
    """A mixed iteration computes its chunk's tokens plus one per decode."""
    it = IterationShape(prefill_seqs=1, chunk=128, decode_seqs=8, decode_ctx=512)
    assert (it.num_tokens, it.num_seqs) == (136, 9)


def test_config_refuses_bad_grids() -> None:
    """Unknown dtype, a zero size or a non-positive limit is refused, naming the value."""
    with pytest.raises(ConfigError, match="dtype"):
        GpuProfileConfig(dtype="int3")
    with pytest.raises(ConfigError, match=">= 1"):
        GpuProfileConfig(num_tokens=(0, 8))
    with pytest.raises(ConfigError, match="max duration"):
        GpuProfileConfig(max_duration_s=0)


def test_cpu_profile_writes_vidur_layouts_that_fit_end_to_end(tmp_path: Path) -> None:
    """profile gpu tiny-llama on CPU writes Vidur layouts; fit gpu-profiles fits them."""
    pytest.importorskip("torch")
    out = tmp_path / "cpu"
    result = cli(["profile", "gpu", "tiny-llama", "--out", str(out), "--tp", "1,2", *SMALL])
    assert result.exit_code == 0, result.output
    assert "timer: wall_clock" in result.output
    mlp = read_profile_csv(out / "mlp_tiny-llama.csv")
    assert {(r["num_tokens"], r["num_tensor_parallel_workers"]) for r in mlp} == {
        (t, tp) for t in (1, 16, 64) for tp in (1, 2)
    }
    assert all(r["time_stats.attn_pre_proj.median"] > 0 for r in mlp)
    attention = read_profile_csv(out / "attention_tiny-llama_tp1.csv")
    assert sum(r["is_prefill"] == "True" for r in attention) == 4
    iterations = read_profile_csv(out / "iterations.csv")
    assert {r["phase"] for r in iterations} == {"prefill", "decode", "mixed"}
    assert all(r["iteration_s"] > 0 and r["status"] == "ok" for r in iterations)
    fitted = tmp_path / "fit.yaml"
    result = cli(["fit", "gpu-profiles", str(out), "--accelerator", "cpu", "--out", str(fitted)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(fitted.read_text())
    assert set(doc["fit"]["errors"]) >= {"linear", "elementwise", "attention"}
    assert doc["fit"]["models"] == ["tiny-llama"]


def test_out_of_memory_ends_the_series_and_every_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OOM at 64 tokens / batch 2 stops those series, is recorded, and the run completes."""
    torch = pytest.importorskip("torch")
    from sincere.profile import gpu_model
    from sincere.profile.gpu import run_gpu_profile

    real_operators = gpu_model.ShardModel.operators
    real_iteration = gpu_model.ShardModel.iteration

    def operators(self: Any, num_tokens: int) -> Any:
        if num_tokens >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 31.25 GiB")
        return real_operators(self, num_tokens)

    def iteration(self: Any, it: IterationShape) -> Any:
        if it.num_seqs >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_iteration(self, it)

    monkeypatch.setattr(gpu_model.ShardModel, "operators", operators)
    monkeypatch.setattr(gpu_model.ShardModel, "iteration", iteration)
    paths = run_gpu_profile("tiny-llama", small_config(), tmp_path)
    assert {"mlp", "attention tp1", "iterations", "series"} <= set(paths)
    series = {r["series"]: r for r in read_profile_csv(tmp_path / "series.csv")}
    assert series["mlp tp1"]["status"] == "oom"
    assert (series["mlp tp1"]["largest_ok"], series["mlp tp1"]["stopped_at"]) == (16, 64)
    assert series["attention decode tp1 batch 4"]["status"] == "complete"
    assert [r["num_tokens"] for r in read_profile_csv(tmp_path / "mlp_tiny-llama.csv")] == [1, 16]
    iterations = read_profile_csv(tmp_path / "iterations.csv")
    decode = [r for r in iterations if r["phase"] == "decode"]
    assert [(r["batch_size"], r["status"]) for r in decode] == [(1, "ok"), (2, "oom")]
    assert decode[1]["iteration_s"] is None
    assert series["iterations prefill tp1 ctx 16"]["largest_ok"] == 1


def test_max_duration_stops_the_run_and_still_writes(tmp_path: Path) -> None:
    """A run past --max-duration records a time-limit row and writes iterations and series."""
    pytest.importorskip("torch")
    from sincere.profile.gpu import run_gpu_profile

    paths = run_gpu_profile("tiny-llama", small_config(max_duration_s=1e-9), tmp_path)
    assert (tmp_path / "iterations.csv").exists() and "series" in paths
    rows = read_profile_csv(tmp_path / "series.csv")
    assert rows[-1]["status"] == "time limit" and rows[-1]["series"] == "mlp tp1"


def test_cuda_path_captures_graphs() -> None:
    """On a CUDA GPU each shape is a CUDA graph timed by events (skipped without one)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from sincere.profile.gpu import Timer
    from sincere.profile.gpu_model import ShardModel

    _, config = resolve_config("tiny-llama")
    cfg = small_config(device="cuda", dtype="bfloat16")
    model = ShardModel(torch, ShardShape.of(config, 1), torch.device("cuda"), torch.bfloat16, 0, 2)
    times, timer = Timer(torch, torch.device("cuda"), cfg).seconds(
        model.iteration(IterationShape(decode_seqs=4, decode_ctx=64))
    )
    assert timer == "cuda_graph" and len(times) == cfg.replays and min(times) > 0


def test_a_shard_whose_weights_do_not_fit_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full shard running out of memory skips the iterations, records it, writes the rest."""
    torch = pytest.importorskip("torch")
    from sincere.profile import gpu_model
    from sincere.profile.gpu import run_gpu_profile

    real_init = gpu_model.ShardModel.__init__

    def init(self: Any, *args: Any) -> None:
        if args[-1] > 1:  # num_layers: only the one-layer operator models fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 70 GiB")
        real_init(self, *args)

    monkeypatch.setattr(gpu_model.ShardModel, "__init__", init)
    cfg = small_config(num_tokens=(1,), decode_batches=(1,), prefill_chunks=(16,))
    paths = run_gpu_profile("tiny-llama", cfg, tmp_path)
    assert "mlp" in paths and read_profile_csv(paths["iterations"]) == []
    series = {r["series"]: r for r in read_profile_csv(paths["series"])}
    assert series["iterations tp1 (weights)"]["status"] == "oom"
    assert "70 GiB" in series["iterations tp1 (weights)"]["detail"]


def test_fused_layers_compute_what_the_eager_ones_do(tmp_path: Path) -> None:
    """``fuse()`` (torch.compile around attention, as vLLM V1 compiles its models) changes
    which kernels run, not the result: two shards of the same seed give the same logits for
    a mixed iteration (a prefill chunk beside decodes), and ``--fused`` marks its rows."""
    torch = pytest.importorskip("torch")
    from sincere.profile.gpu_model import ShardModel

    _, config = resolve_config("tiny-llama")
    shape = ShardShape.of(config, 1)
    it = IterationShape(prefill_seqs=1, chunk=8, decode_seqs=3, decode_ctx=16)
    cpu = torch.device("cpu")
    eager = ShardModel(torch, shape, cpu, torch.float32, 3, shape.num_layers)
    fused = ShardModel(torch, shape, cpu, torch.float32, 3, shape.num_layers)
    fused.fuse()
    with torch.inference_mode():
        want, got = eager.iteration(it)(), fused.iteration(it)()
    assert got.shape == (it.num_seqs, shape.vocab)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    out = tmp_path / "prof"
    result = cli(["profile", "gpu", "tiny-llama", *SMALL, "--fused", "--batch-sizes", "1",
                  "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_profile_csv(out / "iterations.csv")
    assert rows and all(str(r["fused"]) == "True" and r["status"] == "ok" for r in rows)


def test_a_compiler_that_fails_leaves_the_run_unfused_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``torch.compile`` failing at its first run (no Triton for the GPU, say) does not end
    the profile: the iterations are measured unfused, their rows say so, and series.csv
    and stderr carry the compiler's message."""
    torch = pytest.importorskip("torch")
    from sincere.profile.gpu import run_gpu_profile

    def compile_(fn: Any, **_: Any) -> Any:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no Triton backend for this device")

        return broken

    monkeypatch.setattr(torch, "compile", compile_)
    cfg = small_config(num_tokens=(1,), decode_batches=(1,), prefill_chunks=(16,), fused=True)
    paths = run_gpu_profile("tiny-llama", cfg, tmp_path)
    rows = read_profile_csv(paths["iterations"])
    assert rows and all(r["status"] == "ok" and str(r["fused"]) == "False" for r in rows)
    series = {r["series"]: r for r in read_profile_csv(paths["series"])}
    failed = series["iterations tp1 (fused)"]
    assert failed["status"] == "unfused" and "no Triton backend" in failed["detail"]
    assert "torch.compile failed, iterations run unfused" in capsys.readouterr().err
