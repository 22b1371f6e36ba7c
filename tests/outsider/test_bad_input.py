"""Bad input to every verb: a non-zero exit, one line naming what was wrong, no traceback.

Each case is what a new user might type: a missing file, a file of the wrong kind, a
value out of range, a name with a typo. The verb must stop before doing any work, exit
non-zero, and say on stderr, in a line starting ``error:`` (sincere's own errors) or
``Error:`` (argument errors the command-line parser catches), what was wrong, naming the
bad value. A traceback is always a defect.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

Sincere = Callable[..., object]

BAD_YAML = "workload: [unclosed\n"
NOT_A_CONFIG = "- just\n- a list\n"
SIM_UNKNOWN_KEY = """
workload:
  num_requests: 10
  arrival: {kind: poisson, rate: 1}
  lengths: {source: azure-conv-2023}
  models: {llama-3-8b: 1.0}
instances: [{model: llama-3-8b, accelerator: A100-80GB, tpp: 2}]
"""
SIM_TP3 = SIM_UNKNOWN_KEY.replace("tpp: 2", "tp: 3")
SPEC_BAD_AXIS = """
base: W1
axes:
  s: {path: instances.0.engine.scheduler, values: [fcfs, fcfz]}
"""

PROFILE = str(
    Path(__file__).resolve().parents[2] / "examples/profiles/vllm-cpu-tiny-llama/profile.csv"
)

# (case id, arguments, files to write first {name: text}, text the reason must contain)
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("simulate-missing", ["simulate", "nope.yaml", "-o", "out"], {}, "nope.yaml"),
    ("simulate-bad-yaml", ["simulate", "bad.yaml", "-o", "out"], {"bad.yaml": BAD_YAML}, "YAML"),
    ("simulate-list", ["simulate", "l.yaml", "-o", "out"], {"l.yaml": NOT_A_CONFIG}, "mapping"),
    ("simulate-key", ["simulate", "k.yaml", "-o", "o"], {"k.yaml": SIM_UNKNOWN_KEY}, "tpp"),
    ("simulate-tp3", ["simulate", "t.yaml", "-o", "o"], {"t.yaml": SIM_TP3}, "tp=3"),
    ("simulate-seed", ["simulate", "w1.yaml", "-o", "o", "--seed", "x"], {"w1.yaml": ""}, "--seed"),
    ("experiment-name", ["experiment", "sincere-stdy", "--out", "o"], {}, "sincere-stdy"),
    ("experiment-no-out", ["experiment", "sincere-study"], {}, "--out"),
    (
        "experiment-axis",
        ["experiment", "spec.yaml", "--out", "o"],
        {"spec.yaml": SPEC_BAD_AXIS},
        "fcfz",
    ),
    ("report-not-experiment", ["report", "."], {}, "experiment"),
    ("capacity-no-slo", ["capacity", "w1.yaml"], {"w1.yaml": ""}, "SLO targets"),
    ("capacity-policy", ["capacity", "niyama-study", "--policies", "fcfz"], {}, "fcfz"),
    ("plan-missing", ["plan", "no-such-dir"], {}, "no-such-dir"),
    ("plan-incomplete", ["plan", "p"], {"p/server-data.json": "{}"}, "accelerator-data.json"),
    ("plan-bad-json", ["plan", "p"], {"p/accelerator-data.json": "{"}, "invalid JSON"),
    ("estimate-model", ["estimate", "llama-9-9b"], {}, "llama-9-9b"),
    ("estimate-dtype", ["estimate", "llama-2-7b", "--dtype", "fp3"], {}, "fp3"),
    ("deploy-gpus", ["deploy", "llama-2-7b", "--output-len", "10", "--gpus", "8xZ9"], {}, "Z9"),
    ("emulate-config", ["emulate", "--config", "nope.yaml"], {}, "nope.yaml"),
    ("emulate-model", ["emulate", "--model", "llama-9-9b", "--port", "0"], {}, "llama-9-9b"),
    ("serve-missing", ["serve", "nope.yaml"], {}, "nope.yaml"),
    ("serve-bad", ["serve", "g.yaml"], {"g.yaml": "backends: 3\n"}, "backends"),
    (
        "bench-scheme",
        ["bench", "localhost:1", "--rate", "1", "--num-requests", "1", "-o", "o"],
        {},
        "http",
    ),
    (
        "bench-closed",
        ["bench", "http://127.0.0.1:9", "--rate", "1", "--num-requests", "1", "-o", "o"],
        {},
        "127.0.0.1:9",
    ),
    (
        "bench-workload",
        ["bench", "http://127.0.0.1:9", "-w", "nope.csv", "-o", "o"],
        {},
        "nope.csv",
    ),
    ("profile-http", ["profile", "http", "ftp://x", "--out", "p.csv"], {}, "ftp://x"),
    ("profile-local", ["profile", "local", "llama-9-9b"], {}, "llama-9-9b"),
    ("fit-missing", ["fit", "nope.csv"], {}, "nope.csv"),
    ("fit-profile", ["fit", "p.csv"], {"p.csv": "a,b\n1,2\n"}, "not a sincere profile"),
    ("fit-kind", ["fit", PROFILE, "--model", "linear"], {}, "linear"),
    ("trace-missing", ["trace", "stats", "nope.csv"], {}, "nope.csv"),
    ("trace-format", ["trace", "stats", "t.csv", "--format", "azur"], {"t.csv": "a\n1\n"}, "azur"),
    ("trace-header", ["trace", "stats", "t.csv"], {"t.csv": "a,b\n1,2\n"}, "t.csv"),
    ("trace-both", ["trace", "stats", "t.csv", "--sample"], {"t.csv": "a\n"}, "--sample"),
    (
        "trace-to",
        ["trace", "convert", "v.csv", "o.txt"],
        {"v.csv": "num_prefill_tokens,num_decode_tokens\n5,5\n"},
        "o.txt",
    ),
    ("catalog-file", ["catalog", "models", "--file", "nope.yaml"], {}, "nope.yaml"),
    ("catalog-bad", ["catalog", "models", "--file", "c.yaml"], {"c.yaml": "models: 3\n"}, "c.yaml"),
]


def _write_inputs(folder: Path, files: dict[str, str]) -> None:
    """The case's input files; an empty text copies the named example instead."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = text or (examples / name).read_text(encoding="utf-8")
        path.write_text(body.replace("base: W1", f"base: {examples / 'w1.yaml'}"), encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "files", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_exits_non_zero_with_one_line_and_no_traceback(
    args: list[str], files: dict[str, str], reason: str, tmp_path: Path, sincere: Sincere
) -> None:
    """The verb refuses, says why in one line naming the bad value, and shows no traceback."""
    _write_inputs(tmp_path, files)
    done = sincere(args, cwd=tmp_path, timeout_s=60)
    said = done.stdout + done.stderr  # type: ignore[attr-defined]
    assert done.returncode != 0, said  # type: ignore[attr-defined]
    assert "Traceback" not in said, said
    reasons = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("error:", "Error:"))  # type: ignore[attr-defined]
    ]
    assert len(reasons) == 1, said
    assert reason in " ".join(done.stderr.split()), said  # type: ignore[attr-defined]
