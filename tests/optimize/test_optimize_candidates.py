"""The candidate table's batch rules: Inferno's own, and the KV-memory one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.optimize.candidates import MAX_BATCH, effective_batch
from sincere.optimize.data import OptimizerSpec, load_problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def test_inferno_rule_scales_by_output_tokens_and_takes_the_server_cap_as_is() -> None:
    """floor(maxBatchSize*atTokens/avgOutTokens); a server's maxBatchSize wins even when
    larger than the model data's batch; at least 1, at most MAX_BATCH."""
    assert effective_batch(38, 512, 128, 1024, 0, "inferno") == 19
    assert effective_batch(9, 512, 128, 1024, 0, "inferno") == 4  # 4.5 rounds down
    assert effective_batch(32, 512, 512, 128, 0, "inferno") == 128  # the prompt is ignored
    assert effective_batch(32, 512, 128, 1024, 60, "inferno") == 60  # the cap as it is
    assert effective_batch(32, 0, 128, 1024, 0, "inferno") == 32  # no atTokens: unscaled
    assert effective_batch(1, 512, 128, 100_000, 0, "inferno") == 1
    assert effective_batch(400, 512, 128, 64, 0, "inferno") == MAX_BATCH


def test_kv_rule_scales_by_the_whole_request_and_caps_by_the_server() -> None:
    """floor(maxBatchSize*atTokens/(in+out)), at most the server's maxBatchSize."""
    assert effective_batch(38, 512, 128, 1024, 0, "kv") == 16
    assert effective_batch(32, 512, 512, 128, 0, "kv") == 25
    assert effective_batch(32, 512, 128, 1024, 10, "kv") == 10
    assert effective_batch(32, 512, 128, 1024, 60, "kv") == 14  # the cap only lowers it


def test_batch_rule_is_read_from_optimizer_data_and_checked(tmp_path: Path) -> None:
    """``batchRule`` (any spelling) selects the rule; inferno is the default; a wrong name
    is a DataError naming the file and the allowed rules."""
    case = tmp_path / "case"
    shutil.copytree(EXAMPLES / "unlimited", case)
    assert load_problem(case).optimizer.batch_rule == "inferno"
    path = case / "optimizer-data.json"
    doc = json.loads(path.read_text())
    doc["optimizer"]["batch_rule"] = "kv"
    path.write_text(json.dumps(doc))
    assert load_problem(case).optimizer.batch_rule == "kv"
    doc["optimizer"]["batch_rule"] = "memory"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"optimizer-data.json.*allowed: inferno, kv"):
        load_problem(case)
    with pytest.raises(ConfigError, match="unknown batch rule"):
        OptimizerSpec(batch_rule="memory")


def test_prefix_hit_rate_sizes_prefill_on_uncached_tokens(tmp_path: Path) -> None:
    """A server's load with prefixHitRate 0.75 plans replicas for a quarter of the prompt's
    prefill work: no candidate sustains a lower rate, and a wrong rate is refused."""
    from sincere.optimize.candidates import build_candidates

    case = tmp_path / "case"
    shutil.copytree(EXAMPLES / "unlimited", case)
    plain = build_candidates(load_problem(case))
    path = case / "server-data.json"
    doc = json.loads(path.read_text())
    for server in doc["servers"]:
        server["currentAlloc"]["load"]["avgInTokens"] = 4096
    path.write_text(json.dumps(doc))
    long_prompts = build_candidates(load_problem(case))
    for server in doc["servers"]:
        server["currentAlloc"]["load"]["prefixHitRate"] = 0.75
    path.write_text(json.dumps(doc))
    problem = load_problem(case)
    assert problem.servers[0].current.load.uncached_in_tokens == 1024
    cached = build_candidates(problem)
    assert len(cached.rate_per_min) == len(long_prompts.rate_per_min) == len(plain.rate_per_min)
    assert (cached.rate_per_min >= long_prompts.rate_per_min).all()
    assert (cached.rate_per_min > long_prompts.rate_per_min).any()
    doc["servers"][0]["currentAlloc"]["load"]["prefixHitRate"] = 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="prefix_hit_rate"):
        load_problem(case)
