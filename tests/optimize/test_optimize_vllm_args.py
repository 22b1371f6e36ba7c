"""A deployment's speculation and CPU KV tier as vLLM's server arguments
(sincere.optimize.vllm_args), in the manifests of ``plan --k8s`` too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.engine.kv_offload import KvOffloadConfig
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.data import load_problem
from sincere.optimize.manifests import (
    ManifestOptions,
    Pool,
    manifests,
    options_from,
    pools,
    validate_manifests,
)
from sincere.optimize.plan import solve
from sincere.optimize.vllm_args import kv_offloading_args, speculative_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
POOL = Pool("llama-h100", "llama", "llama-3.1-8b", "H100-SXM", "H100-SXM", 1, 2, 2, 4, 64)
EAGLE = SpeculationConfig(method="eagle", num_draft_tokens=3, acceptance=0.7, max_batch=32)
BASE_ARGS = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--tensor-parallel-size", "1",
             "--max-num-seqs", "64", "--port", "8000"]  # fmt: skip
IDS = {"llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct"}


@pytest.mark.parametrize(
    ("spec", "given", "want"),
    [
        (dict(method="ngram", num_draft_tokens=4, acceptance=0.5), {},
         {"method": "ngram", "num_speculative_tokens": 4}),
        (dict(method="mtp"), {}, {"method": "mtp", "num_speculative_tokens": 1}),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7, max_batch=32),
         {"speculative_model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"},
         {"method": "eagle", "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
          "num_speculative_tokens": 3,
          "num_speculative_tokens_per_batch_size": [[1, 32, 3], [33, 33, 0]]}),
        (dict(method="eagle", num_draft_tokens=2, acceptance=0.7),
         {"speculative_model": "org/eagle3-head", "speculative_method": "eagle3"},
         {"method": "eagle3", "model": "org/eagle3-head", "num_speculative_tokens": 2}),
        (dict(method="draft-model", draft_model="llama-3.2-1b", num_draft_tokens=5,
              acceptance=0.6), {"model_ids": {"llama-3.2-1b": "meta-llama/Llama-3.2-1B"}},
         {"method": "draft_model", "model": "meta-llama/Llama-3.2-1B",
          "num_speculative_tokens": 5}),
    ],
)  # fmt: skip
def test_each_method_is_written_in_vllms_keys(
    spec: dict[str, Any], given: dict[str, Any], want: dict[str, Any]
) -> None:
    """Method, k, the drafting repository and the batch ceiling, vLLM's spelling; acceptance
    is not a vLLM setting and is not written."""
    got = speculative_config(
        SpeculationConfig(**spec), given.get("model_ids", {}),
        given.get("speculative_model"), given.get("speculative_method"),
    )  # fmt: skip
    assert got == want


@pytest.mark.parametrize(
    ("spec", "model", "method", "words"),
    [
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7), None, None,
         "EAGLE deployment needs its head's repository"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7), "h", "mtp",
         "vLLM's method for sincere's 'eagle'"),
        (dict(method="ngram", num_draft_tokens=3, acceptance=0.7), "x", None,
         "drafts without a separate model"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7, verify_tokens=8), "h",
         None, "tree draft"),
    ],
)  # fmt: skip
def test_what_vllm_cannot_be_told_is_refused(
    spec: dict[str, Any], model: str | None, method: str | None, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        speculative_config(SpeculationConfig(**spec), {}, model, method)


def test_a_cpu_tier_is_vllms_offloading_size_and_backend() -> None:
    """GiB for the whole instance (vLLM's size sums the TP ranks, as cpu_gib); a disk tier
    and an unknown backend are refused."""
    offload = KvOffloadConfig(cpu_gib=64)
    assert kv_offloading_args(offload) == [
        "--kv-offloading-size", "64", "--kv-offloading-backend", "native"]  # fmt: skip
    assert kv_offloading_args(KvOffloadConfig(cpu_gib=12.5), "lmcache")[1::2] == [
        "12.5", "lmcache"]  # fmt: skip
    with pytest.raises(ConfigError, match="CPU tier only"):
        kv_offloading_args(KvOffloadConfig(cpu_gib=8, disk_gib=100, disk_gbps=5))
    with pytest.raises(ConfigError, match="unknown kv_offloading_backend"):
        options_from({"kv_offload": {"cpu_gib": 8}, "kv_offloading_backend": "redis"})
    with pytest.raises(ConfigError, match="cpu_gib"):
        options_from({"kv_offload": {"cpu_gib": -1}})


def test_a_speculating_offloading_deployment_carries_exactly_those_args() -> None:
    """The plain arguments, then --speculative-config's JSON, then the offloading pair; the
    Deployment still passes the strict published schema."""
    options = options_from({"model_ids": IDS, "kv_offload": {"cpu_gib": 64},
                            "speculative_model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"})  # fmt: skip
    pool = Pool(**{**POOL.__dict__, "speculation": EAGLE})
    docs = manifests(pool, options)
    args = docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    config = ('{"method":"eagle","model":"yuhuili/EAGLE-LLaMA3.1-Instruct-8B",'
              '"num_speculative_tokens":3,'
              '"num_speculative_tokens_per_batch_size":[[1,32,3],[33,33,0]]}')  # fmt: skip
    offload = ["--kv-offloading-size", "64", "--kv-offloading-backend", "native"]
    assert args == [*BASE_ARGS, "--speculative-config", config, *offload]
    assert [c.error for c in validate_manifests(docs)] == [None, None, None]


def test_without_either_the_args_and_files_are_as_before() -> None:
    """No speculation, no tier: the plain arguments only, and the unlimited example's
    manifests are byte-identical to those written before these settings existed."""
    assert manifests(POOL, ManifestOptions(model_ids=IDS))[0]["spec"]["template"]["spec"][
        "containers"][0]["args"] == BASE_ARGS  # fmt: skip
    problem = load_problem(EXAMPLES / "unlimited")
    options = ManifestOptions()
    text = "".join(
        yaml.safe_dump_all(manifests(p, options), sort_keys=False)
        for p in pools(problem, solve(problem), options)
    )
    assert hashlib.sha256(text.encode()).hexdigest() == UNLIMITED_SHA256


UNLIMITED_SHA256 = "e4ef74df232109ebe0a973bebeb787ec2415c3493764b138ff23d34d14f4a731"
"""sha256 of the unlimited example's manifests, written by the code before speculation and
offload were carried (git: the commit before this test)."""


def test_plan_file_k8s_writes_the_colocated_plan_speculating(tmp_path: Path) -> None:
    """`plan FILE --speculation ngram --k8s DIR`: one Deployment of the colocated plan's
    replicas and shape, speculating as planned, with the config's CPU tier."""
    plan_in = tmp_path / "plan.yaml"
    plan_in.write_text(
        yaml.safe_dump(
            {
                "model": "llama-3.1-8b",
                "load": {"rate_per_s": 2.0, "prompt_tokens": 3000, "output_tokens": 150},
                "slo": {"ttft_ms": 800, "tpot_ms": 25},
                "candidates": [{"accelerator": "H100-SXM"}],
            }
        )
    )
    config = tmp_path / "k8s.yaml"
    config.write_text(yaml.safe_dump({"model_ids": IDS, "kv_offload": {"cpu_gib": 32}}))
    out = tmp_path / "m"
    res = CliRunner().invoke(app, [
        "plan", str(plan_in), "--out", str(tmp_path / "p.json"), "--no-verify",
        "--speculation", "ngram", "--draft-tokens", "3", "--acceptance", "0.8",
        "--k8s", str(out), "--k8s-config", str(config)])  # fmt: skip
    assert res.exit_code == 0, res.output
    colocated = json.loads((tmp_path / "p.json").read_text())["colocated"]
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == colocated["count"]
    assert args[args.index("--speculative-config") + 1] == (
        '{"method":"ngram","num_speculative_tokens":3}'
    )
    assert args[-4:] == ["--kv-offloading-size", "32", "--kv-offloading-backend", "native"]
    assert "checked against Kubernetes 1.30.0 schema (strict)" in " ".join(res.output.split())


CHECK_IN_VLLM = """
import dataclasses, json, sys, typing
from vllm.config.speculative import SpeculativeConfig, SpeculativeMethod
from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

def flat(t):
    out = set()
    for a in typing.get_args(t):
        out |= flat(a) if typing.get_args(a) else {a}
    return out

fields = {f.name for f in dataclasses.fields(SpeculativeConfig)}
out = []
for cfg in json.loads(sys.argv[1]):
    schedule = cfg.get("num_speculative_tokens_per_batch_size")
    dense = None if schedule is None else build_dynamic_sd_schedule_lookup(
        schedule, 64, cfg["num_speculative_tokens"])[1:]
    out.append([sorted(set(cfg) - fields), cfg["method"] in flat(SpeculativeMethod), dense])
print(json.dumps(out))
"""


def test_the_installed_vllm_accepts_every_written_config() -> None:
    """Against the vLLM the emulator tracks (its CPU build): every key written is a field of
    its SpeculativeConfig (which forbids others), every method one it knows, and the
    max_batch schedule drafts k = 3 up to 32 requests and none from 33 to max_num_seqs 64."""
    import subprocess

    from tests.conftest import VLLM_PYTHON, require_vllm

    require_vllm()
    written = [
        speculative_config(SpeculationConfig(method="ngram", num_draft_tokens=4,
                                             acceptance=0.5), {}),
        speculative_config(SpeculationConfig(method="mtp", max_batch=8), {}),
        speculative_config(EAGLE, {}, "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"),
        speculative_config(EAGLE, {}, "org/head", "eagle3"),
        speculative_config(SpeculationConfig(method="draft-model", draft_model="llama-3.2-1b",
                                             num_draft_tokens=5, acceptance=0.6), {}),
    ]  # fmt: skip
    run = subprocess.run([str(VLLM_PYTHON), "-c", CHECK_IN_VLLM, json.dumps(written)],
                         capture_output=True, text=True, timeout=240, check=True)  # fmt: skip
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert [(unknown, known) for unknown, known, _ in results] == [([], True)] * 5
    assert results[1][2] == [1] * 8 + [0] * 56
    assert results[2][2] == [3] * 32 + [0] * 32
