"""The request fields vLLM's OpenAI server accepts, read the same way by the shared parser."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sincere.serve.content import DEFAULT_IMAGE_TOKENS, image_tokens_rule, prompt_block_ids
from sincere.serve.lax import lax_bool, lax_int, lax_number
from sincere.serve.protocol import (
    CompletionRequest,
    ProtocolError,
    check_context,
    error_body,
    parse_request,
)


def parse(body: dict[str, Any], kind: str = "completion", **kw: Any) -> CompletionRequest:
    return parse_request(json.dumps({"model": "m", **body}), kind, **kw)  # type: ignore[arg-type]


def refused(body: dict[str, Any], kind: str = "completion", **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(body, kind, **kw)
    return info.value


@pytest.mark.parametrize(
    ("value", "want"),
    [(3, 3), ("42", 42), (" 7 ", 7), (2.0, 2), ("2.0", 2), (True, 1), ("-4", -4)],
)
def test_lax_int_reads_what_pydantic_lax_mode_reads(value: Any, want: int) -> None:
    """Integer fields take integers, booleans, integral floats and numeric strings."""
    assert lax_int(value) == want


@pytest.mark.parametrize("value", [2.5, "2.5", "abc", None, [1], float("inf"), 1 << 70, "9" * 50])
def test_lax_int_refuses_what_pydantic_refuses(value: Any) -> None:
    """A fraction, a word, a list, infinity or a too-large integer is not an integer."""
    assert lax_int(value) is None


def test_lax_number_and_bool() -> None:
    """Numbers take numeric strings and booleans; booleans take pydantic's words and 0/1."""
    assert lax_number("0.5") == 0.5 and lax_number(True) == 1.0 and lax_number("nan") is None
    assert lax_bool("true") is True and lax_bool(0) is False and lax_bool("maybe") is None


def test_lenient_scalars_are_served_as_vllm_serves_them() -> None:
    """seed "42", max_tokens 2.0, temperature "0.5", stream "true" are accepted (vLLM does)."""
    creq = parse(
        {"prompt": "hi", "seed": "42", "max_tokens": 2.0, "temperature": "0.5", "stream": "true"}
    )
    assert creq.max_tokens == 2 and creq.stream is True
    assert refused({"prompt": "hi", "max_tokens": 2.5}).param == "max_tokens"


def test_n_and_best_of_are_sequences_when_multi_is_on() -> None:
    """n = 3 asks for 3 sequences (best_of when larger); a single-sequence server refuses."""
    assert parse({"prompt": "hi", "n": 3}, multi=True).num_sequences == 3
    assert parse({"prompt": "hi", "n": 2, "best_of": 4}, multi=True).num_sequences == 4
    assert parse({"prompt": "hi", "n": "2"}, multi=True).num_choices == 2
    err = refused({"prompt": "hi", "n": 3})
    assert err.status == 400 and "one choice here" in err.message
    assert "[1, 16384]" in refused({"prompt": "hi", "n": 16385}, multi=True).message


def test_batched_prompts_count_every_prompt() -> None:
    """A list of strings or of token-id lists is a batch: every prompt counted."""
    text = parse({"prompt": ["one two", "three four five six"]}, multi=True)
    assert text.num_prompts == 2 and text.prompt == "one two"
    assert text.prompt_tokens > text.longest_prompt > 1
    ids = parse({"prompt": [[1, 2, 3], [4, 5, 6, 7, 8]], "n": 2}, multi=True)
    assert (ids.prompt_tokens, ids.longest_prompt, ids.num_sequences) == (8, 5, 4)
    assert ids.prompt is None
    assert refused({"prompt": ["a", "b"]}).message.startswith("prompt: got")
    assert refused({"prompt": ["a", 3]}, multi=True).param == "prompt[1]"


def test_a_single_prompt_in_a_list_stays_one_prompt() -> None:
    """["text"] and [[ids]] are one prompt, as before."""
    assert parse({"prompt": ["hi there"]}).num_prompts == 1
    assert parse({"prompt": [[5, 6]]}).prompt_tokens == 2


def test_over_context_is_a_400_naming_prompt_cap_and_context() -> None:
    """Prompt + max_tokens over the context: OpenAI's context_length_exceeded wording."""
    err = refused({"prompt": [1] * 900, "max_tokens": 200}, max_context=1024)
    assert err.status == 400 and err.code == "context_length_exceeded"
    assert "maximum context length is 1024 tokens" in err.message
    assert "you requested 1100 tokens (900 in the prompt, 200 in the completion)" in err.message
    assert "max_tokens at most 124 fits" in err.message
    assert "-" not in err.message.split("(")[-1]  # never a negative range
    alone = refused({"prompt": [1] * 2000}, max_context=1024)
    assert "no max_tokens fits" in alone.message and alone.code == "context_length_exceeded"
    chat = parse({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, "chat")
    with pytest.raises(ProtocolError, match="in the messages"):
        check_context(chat, 4096)


def test_image_parts_count_tokens_and_change_the_prefix() -> None:
    """Each image_url part counts its tokens; different images give different block ids."""

    def chat(url: str) -> CompletionRequest:
        part = {"type": "image_url", "image_url": {"url": url}}
        content = [part, {"type": "text", "text": "what is this?"}]
        return parse({"messages": [{"role": "user", "content": content}]}, "chat")

    text_only = parse({"messages": [{"role": "user", "content": "what is this?"}]}, "chat")
    a, b = chat("data:image/png;base64,AAAA"), chat("data:image/png;base64,BBBB")
    assert a.num_images == 1
    assert a.prompt_tokens >= text_only.prompt_tokens + DEFAULT_IMAGE_TOKENS
    blocks_a = prompt_block_ids(a.prompt, a.body, a.prompt_tokens, 4)
    blocks_b = prompt_block_ids(b.prompt, b.body, b.prompt_tokens, 4)
    assert blocks_a[0] != blocks_b[0]
    assert blocks_a == prompt_block_ids(a.prompt, a.body, a.prompt_tokens, 4)  # deterministic


def test_image_tokens_follow_the_rule_given_by_model() -> None:
    """The per-model image rule replaces the default count."""
    rule = image_tokens_rule({"m": 10}, default=99)
    part = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    body = {"messages": [{"role": "user", "content": [part, part]}]}
    with_rule = parse(body, "chat", image_tokens=rule)
    without = parse(body, "chat")
    assert without.prompt_tokens - with_rule.prompt_tokens == 2 * (DEFAULT_IMAGE_TOKENS - 10)
    bad = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    assert refused(bad, "chat").param == "messages[0].content.image_url"


def test_error_codes_are_never_null() -> None:
    """Every error body has a code (its type when none is more specific)."""
    assert error_body("x")["error"]["code"] == "invalid_request_error"
    assert refused({"prompt": "hi", "stop": 3}).body()["error"]["code"] is not None
