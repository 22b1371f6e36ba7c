"""The compiled hot modules (sincere.native): loaded only when current, same results.

The equivalence tests run ``sincere simulate`` twice per config, compiled and with
``SINCERE_NATIVE=0``, and require identical request tables and summaries. They need a
build (``sincere native build``; scripts/test.sh makes one): without it they are skipped,
unless ``SINCERE_REQUIRE_NATIVE=1`` (set by scripts/test.sh) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import sincere.engine.continuous
from sincere import native

ROOT = Path(__file__).resolve().parents[1]
SINCERE = Path(sys.executable).with_name("sincere")


def _require_active() -> None:
    state = native.status()
    if state.state == "active":
        return
    if os.environ.get("SINCERE_REQUIRE_NATIVE") == "1":
        pytest.fail(f"SINCERE_REQUIRE_NATIVE=1 but {state.line()}")
    pytest.skip(state.line())


def _write_manifest(where: Path, **changes: Any) -> None:
    """A manifest like build() writes, for the current sources, with ``changes``."""
    where.mkdir(parents=True, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    files = {m: f"{m}{suffix}" for m in (*native.COMPILED, f"{native.GROUP}__mypyc")}
    for file in files.values():
        (where / file).write_bytes(b"")
    manifest = {"ext_suffix": suffix, "files": files, "sources": native.source_digests()}
    manifest.update(changes)
    (where / native.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_a_current_manifest_is_used(tmp_path: Path) -> None:
    """Every compiled module maps to its file when all sources match the manifest."""
    _write_manifest(tmp_path)
    status, files = native.check(tmp_path)
    assert status.state == "active", status.line()
    assert set(files) == {*native.COMPILED, f"{native.GROUP}__mypyc"}


def test_a_changed_source_makes_the_build_stale(tmp_path: Path) -> None:
    """One differing digest (here the engine's) and nothing compiled is loaded."""
    sources = native.source_digests()
    sources["sincere.engine.continuous"] = "0" * 64
    _write_manifest(tmp_path, sources=sources)
    status, files = native.check(tmp_path)
    assert status.state == "stale"
    assert "sincere.engine.continuous changed" in status.reason
    assert files == {}


def test_another_interpreter_build_is_stale(tmp_path: Path) -> None:
    """Extensions built for another ABI are not loaded."""
    _write_manifest(tmp_path, ext_suffix=".cpython-39-x86_64-linux-gnu.so")
    status, files = native.check(tmp_path)
    assert (status.state, files) == ("stale", {})
    assert "cpython-39" in status.reason


def test_missing_and_broken_builds_say_why(tmp_path: Path) -> None:
    """No manifest, an unreadable one, or a missing file: a reason, never an exception."""
    assert native.check(tmp_path / "nothing")[0].state == "not built"
    (tmp_path / native.MANIFEST).write_text("{not json", encoding="utf-8")
    assert native.check(tmp_path)[0].reason.startswith("unreadable manifest")
    _write_manifest(tmp_path / "b")
    (tmp_path / "b" / f"{native.GROUP}__mypyc{sysconfig.get_config_var('EXT_SUFFIX')}").unlink()
    assert "missing" in native.check(tmp_path / "b")[0].reason


def test_disabled_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SINCERE_NATIVE=0`` wins over a current build."""
    _write_manifest(tmp_path)
    monkeypatch.setenv("SINCERE_NATIVE", "0")
    assert native.check(tmp_path)[0].state == "disabled"


def test_dependencies_follow_imports_and_parents() -> None:
    """The hashed sources include what the engine imports and the packages above it."""
    deps = native.dependencies(["sincere.engine.continuous"])
    for module in ("sincere", "sincere.engine", "sincere.engine.kv", "sincere.perf.base"):
        assert module in deps
    assert "sincere.serve.gateway.server" not in deps
    assert all(native.source_path(m).exists() for m in deps)


def test_the_compiled_engine_is_the_one_imported() -> None:
    """With a current build, the engine module comes from the build folder."""
    _require_active()
    file = sincere.engine.continuous.__file__ or ""
    assert file.endswith(sysconfig.get_config_var("EXT_SUFFIX"))
    assert Path(file).parent == native.status().directory


def _config(name: str, requests: int) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    workload = dict(cfg["workload"])
    workload.pop("duration_s", None)
    workload["num_requests"] = requests
    cfg["workload"] = workload
    return cfg


def _kv_starved() -> dict[str, Any]:
    """FCFS on a quarter of an A100's memory: ~270 preemptions in 3,000 requests."""
    cfg = _config("vllm.yaml", 3000)
    cfg["seed"] = 3
    cfg["workload"]["arrival"] = {"kind": "poisson", "rate": 12.0}
    cfg["workload"]["lengths"] = {"kind": "trace", "source": "azure-conv-2023"}
    cfg["instances"][0].update(accelerator="A100-80GB")
    cfg["instances"][0]["engine"].update(gpu_memory_utilization=0.25, max_num_batched_tokens=4096)
    return cfg


def _sessions(tier: bool) -> dict[str, Any]:
    """Session turns over shared system prompts behind prefix-aware on six instances, its
    index small enough to evict (``tier``: with a lower tier's window, key by key)."""
    params: dict[str, Any] = {"max_tokens_per_instance": 40_000}
    if tier:
        params.update(tier_tokens_per_instance=40_000, tier_hit_weight=0.5, max_load_gap=2.0)
    sessions = {"min_turns": 1, "max_turns": 6, "think_s": 10.0, "system_prompt_tokens": 1000,
                "num_system_prompts": 20, "popularity_s": 1.1, "block_tokens": 16}  # fmt: skip
    return {
        "seed": 4,
        "workload": {
            "num_requests": 3000,
            "arrival": {"kind": "poisson", "rate": 6.0},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 20, "high": 400},
                "output": {"kind": "uniform", "low": 20, "high": 300},
            },
            "sessions": sessions,
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [
            {
                "model": "llama-3-8b",
                "accelerator": "H100-SXM",
                "count": 6,
                "engine": {"kind": "continuous", "enable_prefix_caching": True},
            }
        ],
        "router": {"name": "prefix-aware", "params": params},
    }


CONFIGS = {
    "w1-sarathi": lambda: _config("w1.yaml", 4000),
    "kv-starved-fcfs": _kv_starved,
    "niyama": lambda: _config("niyama.yaml", 2000),
    "hetero-router": lambda: _config("hetero.yaml", 2000),
    "sincere-request-level": lambda: _config("sincere.yaml", 1500),
    "sessions-prefix-aware": lambda: _sessions(tier=False),
    "sessions-prefix-aware-tier": lambda: _sessions(tier=True),
}


def _simulate(cfg: dict[str, Any], out: Path, native_on: bool) -> tuple[Any, dict[str, Any]]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = dict(os.environ, SINCERE_NATIVE="1" if native_on else "0")
    subprocess.run(
        [str(SINCERE), "simulate", str(path), "--out", str(out), "--quiet"],
        check=True,
        env=env,
        timeout=300,
    )
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return pq.read_table(out / "requests.parquet"), summary


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compiled_and_interpreted_runs_are_identical(name: str, tmp_path: Path) -> None:
    """Same config and seed: the same request table and summary, bit for bit."""
    _require_active()
    cfg = CONFIGS[name]()
    compiled_table, compiled_summary = _simulate(cfg, tmp_path / "compiled", True)
    plain_table, plain_summary = _simulate(cfg, tmp_path / "plain", False)
    assert compiled_table.num_rows == len(plain_table) > 0
    assert compiled_table.schema.equals(plain_table.schema)
    for column in compiled_table.column_names:  # NaN (never served) equals NaN here
        compiled, plain = (
            t.column(column).to_numpy(zero_copy_only=False) for t in (compiled_table, plain_table)
        )
        same = compiled.dtype.kind == "f" and np.array_equal(compiled, plain, equal_nan=True)
        assert same or compiled.tolist() == plain.tolist(), column
    assert compiled_summary == plain_summary
    if name == "kv-starved-fcfs":  # the case exists to exercise preemption
        assert compiled_summary["num_preemptions"] > 100


def test_an_unwritable_build_folder_is_a_clear_error(tmp_path: Path) -> None:
    """A build folder that cannot be made fails at once, naming it and the way out."""
    pytest.importorskip("mypyc.build")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"cannot write the build to .*SINCERE_NATIVE_DIR"):
        native.build(blocker / "sub" / "sincere-native")


def test_compiling_runs_in_a_child_whose_failure_is_reported(tmp_path: Path) -> None:
    """The compile happens in a child process (this one never loads mypyc, whose state
    took about a minute to free at exit); a failing compile raises with the child's words."""
    pytest.importorskip("mypyc")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sincere import native\n"
        "try:\n"
        "    native._compile_in_child(Path(sys.argv[1]), [sys.argv[1] + '/missing.py'], False)\n"
        "except RuntimeError as exc:\n"
        "    print('RAISED', exc)\n"
        "print('MYPYC LOADED', any(m.split('.')[0] in ('mypy', 'mypyc') for m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert "RAISED compiling failed" in done.stdout
    assert "missing.py" in done.stdout  # what the child said is passed on
    assert "MYPYC LOADED False" in done.stdout
