"""Prefix caching changes nothing where no prompt shares content: pinned summary.json bytes.

The SHA-256 values are those of ``summary.json`` written by ``sincere simulate`` for each
shipped example before prefix caching existed. With caching off, and with it on (the
default) for these workloads (their requests carry no block ids), the bytes must not move.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.sim import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PINNED = {
    "w1": "b89ca563fb17e486fbf0ad479ad7aba9558f0e05a234765acb8e2e627879f00c",
    "hetero": "26d80dbcea552ad16fe4ff7d421863c347bc9ddf39c592b92ed8656406df1cd2",
    "hetero-explore": "fcaf57bbe2c718a00864932c2f7d40329af5e2a58be38d0e75fcdc0bbf29d0df",
    "niyama": "e0ad562c9d4192a2411c5b12d08dbd153172e4d66003758cb0d781b04e2f7697",
    "sincere": "3ab15ad72eff7ccb31e8cce25708beb0ccd67b24e9b7ff774291602186a0c09c",
    "vllm": "ac13de3079e87bd5dea9c7bd9323891571d41178d409a2731991363f22134c1d",
}


def _config(name: str, caching: bool | None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    if caching is not None:
        for inst in config["instances"]:
            engine = inst.setdefault("engine", {})
            if engine.get("kind", "continuous") == "continuous":
                engine["enable_prefix_caching"] = caching
    return config


def _summary_sha(config: dict[str, Any], out: Path) -> str:
    simulate(config).write(out)
    return hashlib.sha256((out / "summary.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("caching", [False, True])
def test_w1_summary_is_byte_identical_caching_off_and_on(tmp_path: Path, caching: bool) -> None:
    """W1's summary.json is the pinned one with enable_prefix_caching false and true."""
    assert _summary_sha(_config("w1", caching), tmp_path) == PINNED["w1"]


@pytest.mark.parametrize("name", sorted(set(PINNED) - {"w1"}))
def test_shipped_examples_summary_is_byte_identical(tmp_path: Path, name: str) -> None:
    """Every shipped simulate example (caching on by default) writes the pinned summary.json."""
    assert _summary_sha(_config(name, None), tmp_path) == PINNED[name]
