"""``sincere profile local``: random-weight PyTorch profiling (needs the ml extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sincere.core.errors import ConfigError
from sincere.profile.csvio import read_profile_csv
from sincere.profile.local import LocalProfileConfig, require_ml, resolve_config


def test_missing_ml_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch the error names the missing module and the extra to install."""
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConfigError, match=r"torch is missing.*sincere\[ml\]"):
        require_ml()


def test_config_validation_names_the_bad_value() -> None:
    """An unknown dtype or a zero batch size is refused."""
    with pytest.raises(ConfigError, match="dtype"):
        LocalProfileConfig(dtype="int3")
    with pytest.raises(ConfigError, match="batch sizes"):
        LocalProfileConfig(batch_sizes=(0,))


def test_resolve_config_from_catalog_or_file(tmp_path: Path) -> None:
    """A catalog name and a config.json path both give a Llama config."""
    name, cfg = resolve_config("tiny-llama")
    assert name == "tiny-llama" and cfg["hidden_size"] == 128
    path = tmp_path / "mymodel"
    path.mkdir()
    (path / "config.json").write_text('{"num_hidden_layers": 3, "hidden_size": 64}')
    assert resolve_config(str(path)) == ("mymodel", {"num_hidden_layers": 3, "hidden_size": 64})


def test_local_profile_writes_three_published_layouts(tmp_path: Path) -> None:
    """Iterations, MaverIQ fingerprints and loading times come out with sane values."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    import sincere.cli.profile  # noqa: F401
    from sincere.cli.app import app
    from sincere.estimate.fingerprint import read_measurements

    args = ["profile", "local", "tiny-llama", "--out", str(tmp_path), "--batch-sizes", "1,2",
            "--context-tokens", "8,32", "--repeats", "1", "--output-lengths", "2,4",
            "--swap-repeats", "1", "--dtype", "bfloat16"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    iters = read_profile_csv(tmp_path / "iterations.csv")
    assert len(iters) == 8 and all(r["iteration_s"] > 0 for r in iters)
    assert any("memory/used_memory_sys_MB" in r for r in iters)
    rows = read_measurements(tmp_path / "fingerprints.csv")
    assert len(rows) == 8
    loading = read_profile_csv(tmp_path / "model_loading_times.csv")[0]
    assert loading["model_name"] == "tiny-llama" and loading["mean_loading_time /s"] > 0


def test_prefill_asks_for_the_last_logits_only() -> None:
    """The timed prefill passes logits_to_keep=1: no LM head over every prompt token."""
    pytest.importorskip("transformers")
    from sincere.profile.local import LocalProfiler

    name, config = resolve_config("tiny-llama")
    profiler = LocalProfiler(name, config, LocalProfileConfig(repeats=1))
    model = profiler.build(1)
    seen: list[object] = []
    forward = model.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("logits_to_keep"))
        out = forward(*args, **kwargs)
        seen.append(out.logits.shape[1])
        return out

    model.forward = spy
    profiler.prefill_s(model, 2, 16)
    profiler.decode_s(model, 2, 16)
    assert seen and all(value == 1 for value in seen)


def test_out_of_memory_ends_a_series_and_every_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OOM from batch 2 up is recorded; iterations, fingerprints, loading, series all written."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sincere.profile.local import LocalProfiler, run_local_profile

    real_decode, real_generate = LocalProfiler.decode_s, LocalProfiler.generate_s

    def decode_s(self: LocalProfiler, model: object, batch: int, ctx: int) -> list[float]:
        if batch >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 31.25 GiB")
        return real_decode(self, model, batch, ctx)

    def generate_s(self: LocalProfiler, model: object, batch: int, out_len: int) -> float:
        if batch >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_generate(self, model, batch, out_len)

    monkeypatch.setattr(LocalProfiler, "decode_s", decode_s)
    monkeypatch.setattr(LocalProfiler, "generate_s", generate_s)
    cfg = LocalProfileConfig(
        batch_sizes=(1, 2, 4),
        context_tokens=(8,),
        repeats=1,
        output_lengths=(2,),
        fingerprint_layers=(1,),
        swap_repeats=1,
    )
    paths = run_local_profile("tiny-llama", cfg, tmp_path)
    assert {"iterations", "fingerprints", "loading", "series"} <= set(paths)
    decode = [r for r in read_profile_csv(paths["iterations"]) if r["phase"] == "decode"]
    assert [(r["batch_size"], r["status"]) for r in decode] == [(1, "ok"), (2, "oom")]
    assert decode[1]["iteration_s"] is None
    assert [r["Batch_Size"] for r in read_profile_csv(paths["fingerprints"])] == [1]
    assert read_profile_csv(paths["loading"])[0]["mean_loading_time /s"] > 0
    series = {r["series"]: r for r in read_profile_csv(paths["series"])}
    assert series["iterations decode ctx 8"]["status"] == "oom"
    assert series["iterations decode ctx 8"]["largest_ok"] == 1
    assert series["iterations prefill ctx 8"]["status"] == "complete"


def test_loading_times_draw_no_transformers_progress_bars(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Saving and loading the model for its swap times prints no tqdm bars of transformers
    or the Hub (they would cut into the command's own progress bar), and leaves them on."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from sincere.profile.local import LocalProfileConfig, LocalProfiler
    from sincere.profile.series import SeriesLog

    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
            "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 128,
            "max_position_embeddings": 64}  # fmt: skip
    cfg = LocalProfileConfig(swap_repeats=1, dtype="float32")
    profiler = LocalProfiler("tiny", tiny, cfg)
    log = SeriesLog(profiler.torch, profiler.device)
    row = profiler.loading_row(tmp_path / "model", log)
    assert row["mean_loading_time /s"] > 0
    err = capfd.readouterr().err
    assert "it/s" not in err and "Loading weights" not in err, err
    assert transformers.utils.logging.is_progress_bar_enabled()
