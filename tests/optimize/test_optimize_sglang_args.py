"""A deployment's speculation as SGLang's launch arguments (sincere.optimize.sglang_args)."""

from __future__ import annotations

from typing import Any

import pytest

from sincere.core.errors import ConfigError
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.sglang_args import sglang_speculative_args

HEAD = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"


@pytest.mark.parametrize(
    ("spec", "given", "want"),
    [
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7), {"draft_model_path": HEAD},
         f"--speculative-algorithm EAGLE3 --speculative-draft-model-path {HEAD} "
         "--speculative-num-steps 3 --speculative-eagle-topk 1 --speculative-num-draft-tokens 4"),
        (dict(method="eagle", num_draft_tokens=5, acceptance=0.7, verify_tokens=8),
         {"draft_model_path": "org/eagle2", "algorithm": "EAGLE", "eagle_topk": 4},
         "--speculative-algorithm EAGLE --speculative-draft-model-path org/eagle2 "
         "--speculative-num-steps 5 --speculative-eagle-topk 4 --speculative-num-draft-tokens 8"),
        (dict(method="mtp"), {},
         "--speculative-algorithm NEXTN --speculative-num-steps 1 --speculative-eagle-topk 1 "
         "--speculative-num-draft-tokens 2"),
        (dict(method="draft-model", draft_model="llama-3.2-1b", num_draft_tokens=4,
              acceptance=0.6), {"model_ids": {"llama-3.2-1b": "meta-llama/Llama-3.2-1B"}},
         "--speculative-algorithm STANDALONE --speculative-draft-model-path "
         "meta-llama/Llama-3.2-1B --speculative-num-steps 4 --speculative-eagle-topk 1 "
         "--speculative-num-draft-tokens 5"),
        (dict(method="ngram", num_draft_tokens=6, acceptance=0.4), {},
         "--speculative-algorithm NGRAM --speculative-num-draft-tokens 7"),
    ],
)  # fmt: skip
def test_each_method_is_sglangs_arguments(
    spec: dict[str, Any], given: dict[str, Any], want: str
) -> None:
    """Algorithm, draft path, depth k, branching and verified positions, SGLang's spelling
    (a chain verifies k + 1; a tree its verify_tokens at the given topk)."""
    model_ids = given.pop("model_ids", {})
    assert sglang_speculative_args(SpeculationConfig(**spec), model_ids, **given) == want.split()


@pytest.mark.parametrize(
    ("spec", "given", "words"),
    [
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7), {},
         "EAGLE deployment needs its head's repository"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7),
         {"draft_model_path": "h", "algorithm": "NEXTN"}, "SGLang's speculative algorithm"),
        (dict(method="mtp"), {"draft_model_path": "x"}, "drafts without a separate model"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7, max_batch=16),
         {"draft_model_path": "h"}, "no batch size above which"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7, verify_tokens=8),
         {"draft_model_path": "h"}, "needs SGLang's branching"),
        (dict(method="eagle", num_draft_tokens=3, acceptance=0.7),
         {"draft_model_path": "h", "eagle_topk": 4}, "eagle_topk above 1 drafts a tree"),
    ],
)  # fmt: skip
def test_what_sglang_cannot_be_told_is_refused(
    spec: dict[str, Any], given: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        sglang_speculative_args(SpeculationConfig(**spec), {}, **given)
