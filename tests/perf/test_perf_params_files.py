"""Every step-model parameter file ``sincere fit`` writes (and the shipped ones) works in
every verb that takes a step model: simulate, emulate (config file and flags),
experiment, capacity and step; a bad file's problems name it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import ROOT, write_operator_profiles
from typer.testing import CliRunner

import sincere.cli.emulate
import sincere.cli.experiment
import sincere.cli.fit
import sincere.cli.simulate
import sincere.cli.step  # noqa: F401  (registers the commands)
import sincere.serve.emulator.server as emulator_server
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.serve.emulator.config import load_emulator_configs
from sincere.sim.config import load_config

runner = CliRunner()
SHIPPED = ROOT / "examples" / "profiles" / "vllm-cpu-tiny-llama"
PROFILE = SHIPPED / "profile.csv"
FITS = {"inferno": "inferno", "niyama": "niyama-binned", "table": "iteration-table"}
"""``sincere fit profile --model`` name -> the step-model kind it writes."""
FILES = [
    *(f"fit-{name}" for name in FITS),
    "fit-gpu-profiles",
    *(f"shipped-{p.stem}" for p in sorted(SHIPPED.glob("*.yaml"))),
]
VERBS = ["simulate", "emulate-config", "emulate-flags", "experiment", "capacity", "step"]
FIXED = {"kind": "fixed"}
DEPLOYMENT = {"model": "tiny-llama", "accelerator": "cpu", "precision": "bf16"}


def _invoke(args: Sequence[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{' '.join(map(str, args))}:\n{result.output}{result.exception}"
    return result.output


@pytest.fixture(scope="module")
def param_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Label -> (step-model kind, file): what `sincere fit` writes, and the shipped fits."""
    folder = tmp_path_factory.mktemp("fits")
    files: dict[str, tuple[str, Path]] = {}
    for name, kind in FITS.items():
        out = folder / f"fit-{name}.yaml"
        _invoke(["fit", "profile", PROFILE, "--model", name, "--accelerator", "cpu", "--out", out])
        files[f"fit-{name}"] = (kind, out)
    profiles = write_operator_profiles(folder / "profiles" / "h100")
    out = folder / "fit-roofline.yaml"
    _invoke(["fit", "gpu-profiles", profiles.parent, "--accelerator", "H100-SXM", "--out", out])
    files["fit-gpu-profiles"] = ("roofline", out)
    for path in sorted(SHIPPED.glob("*.yaml")):
        files[f"shipped-{path.stem}"] = (yaml.safe_load(path.read_text())["kind"], path)
    return files


def _instance(kind: str, path: Path) -> dict[str, Any]:
    return {"name": "a", **DEPLOYMENT, "step_model": {"kind": kind, "params_file": str(path)}}


def _simulation(kind: str, path: Path) -> dict[str, Any]:
    return {
        "seed": 0,
        "workload": {
            "num_requests": 8,
            "arrival": {"kind": "poisson", "rate": 2.0},
            "lengths": {"prompt": FIXED | {"tokens": 32}, "output": FIXED | {"tokens": 4}},
            "models": {"tiny-llama": 1.0},
            "tiers": [{"name": "interactive", "ttft_s": 1.0}],
        },
        "instances": [_instance(kind, path)],
    }


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _emulated(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace serving forever by starting the engines (built for real) and stopping them;
    returns the names started, one list per call."""
    started: list[list[str]] = []

    async def start_and_stop(configs: Sequence[Any], *, announce: Any = None) -> None:
        servers = await emulator_server.start_emulators(configs)
        started.append([s.name for s in servers])
        await emulator_server.stop_emulators(servers)

    monkeypatch.setattr(emulator_server, "serve_forever", start_and_stop)
    return started


def _run_verb(verb: str, kind: str, path: Path, tmp: Path, mp: pytest.MonkeyPatch) -> None:
    sim = _write(tmp / "sim.yaml", _simulation(kind, path))
    if verb == "simulate":
        _invoke(["simulate", sim, "--out", tmp / "out"])
        assert (tmp / "out" / "summary.json").is_file()
    elif verb in ("emulate-config", "emulate-flags"):
        started = _emulated(mp)
        if verb == "emulate-config":
            config = _write(tmp / "emu.yaml", [{**_instance(kind, path), "port": 0}])
            _invoke(["emulate", "--config", config])
        else:
            flags = ["--model", "tiny-llama", "--accelerator", "cpu", "--port", "0"]
            _invoke(["emulate", *flags, "--step-model", kind, "--params-file", path])
        assert len(started) == 1 and len(started[0]) == 1
    elif verb == "experiment":
        spec = {"name": "fits", "base": _simulation(kind, path), "axes": {}}
        flags = ["--out", tmp / "exp", "--serial", "--quiet", "--no-report"]
        _invoke(["experiment", _write(tmp / "spec.yaml", spec), *flags])
    elif verb == "capacity":
        args = ["--seeds", "0", "--workers", "1", "--rel-tol", "0.5", "--out", tmp / "cap"]
        _invoke(["capacity", sim, *args])
        assert json.loads((tmp / "cap" / "capacity.json").read_text())["results"]
    else:
        flags = ["--step-model", kind, "--params", path, "--decode", "2@64", "--json"]
        out = _invoke(["step", "tiny-llama", "--accelerator", "cpu", *flags])
        assert json.loads(out)["iteration_s"] > 0


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("label", FILES)
def test_every_fitted_file_works_in_every_verb(
    label: str,
    verb: str,
    param_files: dict[str, tuple[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A params_file of any kind (fitted or shipped) builds and runs in each verb."""
    kind, path = param_files[label]
    _run_verb(verb, kind, path, tmp_path, monkeypatch)


def test_the_file_parameters_are_checked_and_the_file_is_named(tmp_path: Path) -> None:
    """A params_file missing a required parameter fails naming the parameter and the file."""
    bad = _write(tmp_path / "bad.yaml", {"kind": "inferno", "params": {"alpha_ms": 1.0}})
    with pytest.raises(ConfigError, match=r"needs parameter beta_ms.*bad\.yaml"):
        load_config(_simulation("inferno", bad))
    with pytest.raises(ConfigError, match=r"params_file is for another kind"):
        load_config(_simulation("niyama-binned", bad))
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"step_model\.params_file: .*cannot read params_file"):
        load_emulator_configs([_instance("inferno", missing)])


def test_inline_params_override_the_file_and_are_checked_with_it(tmp_path: Path) -> None:
    """Inline params complete a partial file; a bad inline value is reported at its path."""
    part = _write(tmp_path / "part.yaml", {"alpha_ms": 1.0, "beta_ms": 0.1, "gamma_ms": 2.0})
    data = _simulation("inferno", part)
    data["instances"][0]["step_model"]["params"] = {"delta_ms": 0.01}
    assert load_config(data).instances[0].step_model.params == {"delta_ms": 0.01}
    data["instances"][0]["step_model"]["params"] = {"delta_ms": -1.0}
    with pytest.raises(ConfigError, match=r"step_model\.params\.delta_ms: .*part\.yaml"):
        load_config(data)


def test_a_malformed_params_file_is_a_config_error(tmp_path: Path) -> None:
    """A params_file that is not YAML is refused as such, naming the file (not a traceback)."""
    from sincere.perf.factory import load_params_file

    bad = tmp_path / "broken.yaml"
    bad.write_text("mfu_efficiency: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML / JSON") as info:
        load_params_file(bad, "roofline")
    assert "broken.yaml" in str(info.value)
