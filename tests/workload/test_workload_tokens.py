"""Prompt tokens are counted with the model's own tokenizer when it is at hand (installed and
in the local Hugging Face cache, never downloaded), and the output says which count was used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.trace  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.serve.protocol import count_prompt_tokens
from sincere.workload.tabular import count_tokens, model_encoder, tokenizer_name

REPO = "meta-llama/Meta-Llama-3-8B"  # a catalog alias of llama-3-8b
TEXT = "one two three four five six seven eight"


@pytest.fixture
def cached_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A word-level tokenizer.json for REPO in a Hugging Face cache made under tmp_path."""
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("huggingface_hub")
    folder = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abc")
    snapshot = folder / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    words = tokenizers.models.WordLevel({"[UNK]": 0, "one": 1}, unk_token="[UNK]")
    tokenizer = tokenizers.Tokenizer(words)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(snapshot / "tokenizer.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model_encoder.cache_clear()
    yield tmp_path / "hub"
    model_encoder.cache_clear()


def test_the_models_cached_tokenizer_counts_and_is_named(cached_tokenizer: Path) -> None:
    """With llama-3-8b's tokenizer in the cache, its count (8 words) is used and named."""
    assert count_tokens([TEXT], "llama-3-8b").tolist() == [8]
    assert tokenizer_name("llama-3-8b") == f"{REPO} tokenizer"
    assert count_prompt_tokens(TEXT, "llama-3-8b") == 8
    assert tokenizer_name("mistral-7b") != f"{REPO} tokenizer"  # not in the cache


def test_without_the_tokenizer_the_fallback_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty cache: the count falls back and the name says which fallback."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    model_encoder.cache_clear()
    try:
        name = tokenizer_name("llama-3-8b")
        assert name.startswith(("tiktoken", "approximation"))
        if name.startswith("approximation"):
            assert count_tokens([TEXT], "llama-3-8b").tolist() == [10]  # 39 characters / 4
    finally:
        model_encoder.cache_clear()


def test_trace_stats_says_how_text_was_counted(cached_tokenizer: Path, tmp_path: Path) -> None:
    """`trace stats` of SINCERE prompts names the counter used for each model's text."""
    trace = tmp_path / "prompts.jsonl"
    trace.write_text(f'{{"prompt": "{TEXT}", "model_alias": "llama-3-8b"}}\n')
    result = CliRunner().invoke(app, ["trace", "stats", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    assert f'"llama-3-8b": "{REPO} tokenizer"' in result.output
    assert '"mean": 8.0' in result.output


@pytest.mark.parametrize("model", ["/", "a/b/c", "x/..", "org/na--me"])
def test_a_name_that_cannot_be_a_repository_has_no_tokenizer(model: str) -> None:
    """A client's ``model`` may be any text; one the Hub refuses as a repository name has
    no tokenizer at hand (the count falls back) instead of raising the Hub's check."""
    pytest.importorskip("huggingface_hub")
    model_encoder.cache_clear()
    try:
        assert model_encoder(model) is None
        assert count_prompt_tokens("one one one", model) >= 1
    finally:
        model_encoder.cache_clear()
