"""Hugging Face configs and tokenizers built locally from sincere's catalog.

Profiling with random weights needs only the architecture (timing does not depend on
the weight values, DESIGN.md), so the model is built from a catalog
:class:`~sincere.catalog.specs.ModelArch` (or a local ``config.json``) instead of being
downloaded. :func:`hf_config_dict` maps an arch onto a Llama-layout ``config.json``
(``LlamaConfig`` keys); :func:`with_layers` gives the 1- and 2-layer fingerprint
variants MaverIQ profiles. :func:`word_level_tokenizer_json` writes a WordLevel
tokenizer whose vocabulary has exactly the arch's ``vocab_size`` entries (a few real
words, then ``tok<i>`` fillers), so any token id the model samples decodes. Nothing
here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sincere.catalog.specs import ModelArch
from sincere.core.errors import ConfigError, DataError

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
WORDS = ("hello", "world", "the", "a", "of", "and", "to", "in", "is", "model", "token", "test")
"""Real words at the start of the vocabulary (``hello`` is the profiler's prompt word)."""


def with_layers(arch: ModelArch, num_layers: int) -> ModelArch:
    """``arch`` cut to ``num_layers`` layers (a MaverIQ fingerprint), parameters scaled."""
    if num_layers < 1:
        raise ConfigError("a model needs >= 1 layer", value=num_layers)
    per_layer = (arch.estimated_params_b() - _embedding_params_b(arch)) / arch.num_layers
    params_b = _embedding_params_b(arch) + per_layer * num_layers
    return dataclasses.replace(
        arch, name=f"{arch.name}-{num_layers}l", num_layers=num_layers, num_params_b=params_b
    )


def _embedding_params_b(arch: ModelArch) -> float:
    return arch.vocab_size * arch.hidden_size * (1 if arch.tied_embeddings else 2) / 1e9


def hf_config_dict(arch: ModelArch, dtype: str = "bfloat16") -> dict[str, Any]:
    """A Llama-layout ``config.json`` for ``arch`` (GQA, SwiGLU MLP, RoPE, RMSNorm)."""
    if not arch.gated_mlp:
        raise ConfigError(
            "only gated-MLP (Llama-layout) architectures can be built",
            value=arch.name,
            allowed="catalog models with gated_mlp: true",
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_size,
        "max_position_embeddings": arch.max_context,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": arch.tied_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": dtype,
    }


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A local ``config.json`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read config.json: {exc}", path=path) from None
    if not isinstance(data, dict) or "num_hidden_layers" not in data:
        raise DataError("not a transformers config (no num_hidden_layers)", path=path)
    return data


def word_level_vocab(vocab_size: int) -> dict[str, int]:
    """Token -> id: special tokens, :data:`WORDS`, then ``tok<i>`` up to ``vocab_size``."""
    fixed = [*SPECIAL_TOKENS, *WORDS]
    if vocab_size < len(fixed):
        raise ConfigError("vocab_size too small for the tokenizer", value=vocab_size)
    names = fixed + [f"tok{i}" for i in range(len(fixed), vocab_size)]
    return {name: i for i, name in enumerate(names)}


def word_level_tokenizer_json(vocab_size: int) -> dict[str, Any]:
    """A ``tokenizer.json`` (tokenizers' serialisation): WordLevel on whitespace, BOS added."""
    specials = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": specials,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": word_level_vocab(vocab_size), "unk_token": "<unk>"},
    }


def tokenizer_config(max_context: int) -> dict[str, Any]:
    """``tokenizer_config.json`` for :func:`word_level_tokenizer_json`."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "model_max_length": max_context,
        "add_bos_token": True,
        "clean_up_tokenization_spaces": False,
    }


def write_tokenizer(directory: str | Path, vocab_size: int, max_context: int) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(word_level_tokenizer_json(vocab_size)))
    config = tokenizer_config(max_context)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
