"""Local model configs and tokenizers built from the catalog, without downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sincere.catalog import get_model
from sincere.core.errors import ConfigError, DataError
from sincere.profile.arch import (
    WORDS,
    hf_config_dict,
    read_config_json,
    with_layers,
    word_level_vocab,
    write_tokenizer,
)


def test_llama_config_carries_the_catalog_figures() -> None:
    """config.json keys map one to one from the ModelArch."""
    arch = get_model("tiny-llama")
    cfg = hf_config_dict(arch)
    assert cfg["num_hidden_layers"] == arch.num_layers == 2
    assert cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 32
    assert cfg["architectures"] == ["LlamaForCausalLM"]


def test_fingerprint_variant_keeps_the_width() -> None:
    """A 1-layer variant has one layer, the same width and fewer parameters."""
    arch = get_model("llama-2-7b")
    one = with_layers(arch, 1)
    assert one.num_layers == 1 and one.hidden_size == arch.hidden_size
    assert one.num_params_b < arch.num_params_b / 10
    with pytest.raises(ConfigError, match="layer"):
        with_layers(arch, 0)


def test_non_llama_layout_is_refused() -> None:
    """An architecture without a gated MLP cannot be built as Llama."""
    with pytest.raises(ConfigError, match="gated-MLP"):
        hf_config_dict(get_model("falcon-7b"))


def test_tokenizer_vocab_is_exactly_vocab_size(tmp_path: Path) -> None:
    """Every id the model can sample has a token; the prompt word is one token."""
    vocab = word_level_vocab(1000)
    assert sorted(vocab.values()) == list(range(1000))
    assert "hello" in vocab and WORDS[0] == "hello"
    write_tokenizer(tmp_path, 1000, 128)
    tok = pytest.importorskip("tokenizers").Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.encode("hello hello world").ids == [
        1,
        vocab["hello"],
        vocab["hello"],
        vocab["world"],
    ]
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["bos_token"] == "<s>"


def test_read_config_json_checks_the_file(tmp_path: Path) -> None:
    """A directory's config.json is read; a non-transformers file is a DataError."""
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict(get_model("tiny-llama"))))
    assert read_config_json(tmp_path)["hidden_size"] == 128
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="num_hidden_layers"):
        read_config_json(bad)
