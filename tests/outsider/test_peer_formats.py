"""Files in the layouts other tools publish go straight into the command line.

Small files are written here in each peer's column layout (the layouts are facts; the
numbers are made up); the published files themselves are used when ``../shared/data`` is
present. Each is read by ``sincere trace stats --json`` and, for request traces, driven
through ``sincere simulate`` as the workload's lengths (and arrivals, where it has times).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

Sincere = Callable[..., Any]

SAMPLES: dict[str, tuple[str, str, int]] = {
    # name: (file name, content, requests it holds)
    "azure-2023": (
        "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.2224670,879,55\n",
        3,
    ),
    "azure-2024": (
        "azure24.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:01.500000+00:00,100,20\n2024-05-10T00:00:03Z,300,40\n",
        2,
    ),
    "burstgpt": (
        "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,505,1592,Conversation log\n",
        2,
    ),
    "mooncake": (
        "moon.jsonl",
        '{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1]}\n'
        '{"timestamp": 250, "input_length": 512, "output_length": 8, "hash_ids": [2]}\n',
        2,
    ),
    "sharegpt": (
        "sg.json",
        json.dumps(
            [
                {
                    "id": "a",
                    "conversations": [
                        {"from": "human", "value": "How do queues grow near saturation?"},
                        {"from": "gpt", "value": "Waiting time rises sharply " * 10},
                    ],
                }
            ]
        ),
        1,
    ),
    "sincere-prompts": (
        "prompts.jsonl",
        '{"prompt": "Summarise the report.", "model_alias": "llama3-8b"}\n'
        '{"prompt": "Translate to French: hello.", "model_alias": "gemma-7b"}\n',
        2,
    ),
    "vidur": (
        "splitwise_conv.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,374,44\n4.31,396,109\n4.54,879,55\n",
        3,
    ),
    "vidur-lengths": (
        "arxiv.csv",
        "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
        "3772,54,3826,69.85\n2015,156,2171,12.91\n",
        2,
    ),
}
TIMED = {"azure-2023", "azure-2024", "burstgpt", "mooncake", "vidur"}


def _simulation(trace: Path, timed: bool) -> dict[str, Any]:
    """A small simulation whose lengths (and arrivals, when timed) come from ``trace``."""
    replay = {"kind": "trace", "path": str(trace), "loop": True}
    arrival = replay if timed else {"kind": "poisson", "rate": 2}
    return {
        "workload": {
            "num_requests": 20,
            "arrival": arrival,
            "lengths": {"source": str(trace)},
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_peer_trace_reads_and_drives_a_simulation(
    name: str, tmp_path: Path, sincere: Sincere
) -> None:
    """trace stats reads the file by its header; simulate uses it as a workload."""
    file_name, text, count = SAMPLES[name]
    trace = tmp_path / file_name
    trace.write_text(text, encoding="utf-8")
    stats = sincere(["trace", "stats", str(trace), "--json"], cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["num_requests"] == count
    config = tmp_path / "sim.yaml"
    config.write_text(yaml.safe_dump(_simulation(trace, name in TIMED)), encoding="utf-8")
    run = sincere(["simulate", str(config), "--out", str(tmp_path / "out"), "-q"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_completed"] == summary["num_requests"] > 0


def test_published_azure_trace_and_sincere_prompts(
    shared_data: Path, tmp_path: Path, sincere: Sincere
) -> None:
    """The published Azure 2023 trace and SINCERE's prompts read whole from the command line."""
    azure = sincere(
        ["trace", "stats", str(shared_data / "traces/AzureLLMInferenceTrace_code.csv"), "--json"]
    )
    assert azure.returncode == 0 and json.loads(azure.stdout)["num_requests"] == 8819
    prompts = sincere(["trace", "stats", str(shared_data / "sincere/prompts.jsonl"), "--json"])
    assert prompts.returncode == 0 and json.loads(prompts.stdout)["num_requests"] == 2172
    vidur = tmp_path / "azure-code.csv"
    done = sincere(
        ["trace", "convert", str(shared_data / "traces/AzureLLMInferenceTrace_code.csv"),
         str(vidur), "--to", "vidur"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert vidur.read_text().splitlines()[0] == "arrived_at,num_prefill_tokens,num_decode_tokens"


def test_maveriq_fingerprints_estimate_a_model(shared_data: Path, sincere: Sincere) -> None:
    """MaverIQ's published fingerprint CSV feeds `sincere estimate` as it is."""
    fingerprints = shared_data / "maveriq" / "fingerprint_data_collection.csv"
    done = sincere(
        ["estimate", "llama-2-13b", "--tp", "2", "--fingerprints", str(fingerprints), "--json"]
    )
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    assert estimate["source"] != "roofline" and estimate["latency_s"] > 0


@pytest.mark.parametrize("example", ["unlimited", "limited-load-change"])
def test_inferno_json_folders_plan(example: str, tmp_path: Path, sincere: Sincere) -> None:
    """Inferno's JSON files (examples/plan) plan, and write Inferno's solution layout."""
    folder = Path(__file__).resolve().parents[2] / "examples" / "plan" / example
    args = ["plan", str(folder), "--out", str(tmp_path / "solution.json")]
    if (folder / "trace.csv").exists() and "load-change" in example:
        args += ["--load-trace", str(folder / "trace.csv")]
    done = sincere(args)
    assert done.returncode == 0, done.stderr
    solution = json.loads((tmp_path / "solution.json").read_text())
    assert solution and all("numReplicas" in s for s in solution.values())
