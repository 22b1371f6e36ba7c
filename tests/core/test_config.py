"""Config errors read as the user's file: no union tags in paths, a did-you-mean for
unknown keys."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.sim.config import load_config

BASE = {
    "workload": {
        "num_requests": 10,
        "arrival": {"kind": "poisson", "rate": 1.0},
        "lengths": {"source": "azure-conv-2023"},
        "models": {"llama-3-8b": 1.0},
    },
}


def _config(engine: dict[str, object]) -> dict[str, object]:
    instance = {"name": "a", "model": "llama-3-8b", "accelerator": "A100-80GB", "engine": engine}
    return {**BASE, "instances": [instance]}


@pytest.mark.parametrize("kind", [None, "continuous"])
def test_an_unknown_engine_key_has_the_users_path_and_a_suggestion(kind: str | None) -> None:
    """`engine.max_num_seq` is reported at that path (no `continuous` segment the file does
    not have), suggesting `max_num_seqs` and listing the keys the engine takes."""
    engine: dict[str, object] = {"max_num_seq": 4} | ({"kind": kind} if kind else {})
    with pytest.raises(ConfigError) as caught:
        load_config(_config(engine))
    text = str(caught.value)
    assert "instances[0].engine.max_num_seq: Extra inputs are not permitted" in text
    assert "(did you mean 'max_num_seqs'?)" in text
    assert "engine.continuous" not in text
    assert "allowed: block_size" in text


def test_a_request_level_engine_key_is_reported_without_its_tag() -> None:
    """The request-level member of the engine union: its path and suggestion too."""
    engine = {"kind": "request-level", "max_batch_sise": 4}
    with pytest.raises(ConfigError) as caught:
        load_config({**_config(engine), "instances": [
            {"name": "a", "models": ["llama-3-8b"], "accelerator": "H100-SXM", "engine": engine}
        ]})  # fmt: skip
    text = str(caught.value)
    assert "instances[0].engine.max_batch_sise: Extra inputs" in text
    assert "did you mean 'max_batch_size'?" in text
    assert "request-level.max_batch_sise" not in text


def test_a_misspelt_choice_suggests_the_closest_and_lists_them() -> None:
    """`role: decod` (a Literal field): the closest role suggested, every role listed, and the
    error's title names the config in words, not its class."""
    instance = {"name": "a", "model": "llama-3-8b", "role": "decod"}
    with pytest.raises(ConfigError) as caught:
        load_config({**BASE, "instances": [instance]})
    text = str(caught.value)
    assert "instances[0].role: not one of the allowed values (did you mean 'decode'?)" in text
    assert "allowed: prefill, decode, both" in text
    assert text.startswith("invalid simulation config")
