"""One GPU's tensor-parallel shard of a Llama-layout decoder, run the way serving engines run it.

Written directly in PyTorch (not a transformers model) so that every kernel is the one an
engine launches: one fused QKV GEMM and one fused gate/up GEMM per layer, RMSNorm, rotary
embedding, attention through ``scaled_dot_product_attention`` (flash / memory-efficient
kernels on a GPU) against a preallocated KV cache the new keys and values are written
into, the residual adds, and the LM head on the last token of each sequence only. A
shard holds ``1/tp`` of the query heads, the KV heads (replicated beyond their count),
the FFN width and the vocabulary, as tensor parallelism splits them. :meth:`ShardModel.fuse`
compiles the work around attention with ``torch.compile`` (fused elementwise kernels, as
vLLM V1 runs its models); without it every norm, rotary step and activation is a kernel.

Weights are seeded random values: kernel times do not depend on them. ``torch`` is passed
in (the ``ml`` extra is imported by the caller, only when profiling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sincere.core.errors import ConfigError

Op = Callable[[], Any]


@dataclass(frozen=True, slots=True)
class ShardShape:
    """The dimensions of one GPU's shard of a model at tensor-parallel degree ``tp``."""

    num_layers: int  # decoder layers
    hidden: int  # hidden size (not split)
    heads: int  # query heads on this GPU
    kv_heads: int  # KV heads on this GPU
    head_dim: int  # dimension of one head
    inter: int  # FFN width on this GPU
    vocab: int  # vocabulary rows on this GPU
    tp: int  # tensor-parallel degree
    model_heads: int  # the whole model's query heads
    model_kv_heads: int  # the whole model's KV heads
    model_inter: int  # the whole model's FFN width
    model_vocab: int  # the whole model's vocabulary

    @classmethod
    def of(cls, config: Mapping[str, Any], tp: int) -> ShardShape:
        """The shard of a transformers ``config.json`` (Llama layout) on one of ``tp`` GPUs."""
        if tp < 1:
            raise ConfigError("tensor-parallel degree must be >= 1", value=tp)
        heads = int(config["num_attention_heads"])
        kv = int(config.get("num_key_value_heads") or heads)
        hidden = int(config["hidden_size"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        inter, vocab = int(config["intermediate_size"]), int(config["vocab_size"])
        return cls(
            num_layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            heads=max(1, heads // tp),
            kv_heads=max(1, math.ceil(kv / tp)),
            head_dim=head_dim,
            inter=max(1, inter // tp),
            vocab=max(1, vocab // tp),
            tp=tp,
            model_heads=heads,
            model_kv_heads=kv,
            model_inter=inter,
            model_vocab=vocab,
        )


@dataclass(frozen=True, slots=True)
class IterationShape:
    """One iteration: ``prefill_seqs`` chunks of ``chunk`` tokens after ``prefill_ctx``
    cached ones, and ``decode_seqs`` decodes at ``decode_ctx`` tokens of context."""

    prefill_seqs: int = 0
    chunk: int = 0
    prefill_ctx: int = 0
    decode_seqs: int = 0
    decode_ctx: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens the iteration computes."""
        return self.prefill_seqs * self.chunk + self.decode_seqs

    @property
    def num_seqs(self) -> int:
        """Sequences (one sampled token each)."""
        return self.prefill_seqs + self.decode_seqs


class ShardModel:
    """Random weights of ``num_layers`` layers of a :class:`ShardShape` and its kernels."""

    def __init__(
        self, torch: Any, shape: ShardShape, device: Any, dtype: Any, seed: int, num_layers: int
    ) -> None:
        self.torch, self.shape, self.device, self.dtype = torch, shape, device, dtype
        self.gen = torch.Generator(device=device).manual_seed(seed)  # drawn where they live
        s = shape
        qkv = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.layers = [
            {
                "ln1": self.ones(s.hidden),
                "qkv": self.rand(s.hidden, qkv),
                "o": self.rand(s.heads * s.head_dim, s.hidden),
                "ln2": self.ones(s.hidden),
                "gate_up": self.rand(s.hidden, 2 * s.inter),
                "down": self.rand(s.inter, s.hidden),
            }
            for _ in range(num_layers)
        ]
        self.embedding = self.rand(s.vocab, s.hidden)
        self.final_norm = self.ones(s.hidden)
        self.lm_head = self.rand(s.hidden, s.vocab)
        self.functional = torch.nn.functional
        self._pre: Callable[..., Any] = self._pre_attention
        self._post: Callable[..., Any] = self._post_attention

    # --- tensors -----------------------------------------------------------------------
    def rand(self, *size: int) -> Any:
        """Seeded random values of ``size`` on the device, scaled as initialisers do."""
        t = self.torch.empty(*size, device=self.device, dtype=self.dtype)
        return t.normal_(0.0, 0.02, generator=self.gen)

    def ones(self, *size: int) -> Any:
        """Ones (norm weights)."""
        return self.torch.ones(*size, device=self.device, dtype=self.dtype)

    def token_ids(self, num_tokens: int) -> Any:
        """Random token ids of this shard's vocabulary."""
        return self.torch.randint(
            0, self.shape.vocab, (num_tokens,), generator=self.gen, device=self.device
        )

    def kv_cache(self, seqs: int, length: int) -> tuple[Any, Any]:
        """Keys and values of ``seqs`` sequences of ``length`` tokens (one layer)."""
        s = self.shape
        size = (seqs, s.kv_heads, length, s.head_dim)
        return self.rand(*size), self.rand(*size)

    # --- kernels -----------------------------------------------------------------------
    def rms_norm(self, x: Any, weight: Any) -> Any:
        """RMSNorm over the hidden size (eps 1e-5)."""
        return self.functional.rms_norm(x, (x.shape[-1],), weight, 1e-5)

    def rope_tables(self, positions: Any) -> tuple[Any, Any]:
        """cos and sin of the rotary angles at ``positions`` (theta 10,000)."""
        torch, half = self.torch, self.shape.head_dim // 2
        freq = 1.0 / (10000.0 ** (torch.arange(half, device=self.device) / half))
        angles = positions.to(torch.float32)[:, None] * freq[None, :]
        return angles.cos().to(self.dtype)[:, None, :], angles.sin().to(self.dtype)[:, None, :]

    def rope(self, x: Any, cos: Any, sin: Any) -> Any:
        """Rotary embedding of ``x`` (tokens, heads, head_dim), rotate-half layout."""
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return self.torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    def attention(self, q: Any, k: Any, v: Any, cached: int) -> Any:
        """SDPA of queries (seqs, heads, chunk, d) over keys (seqs, kv heads, cached+chunk, d).

        Causal within the chunk, every cached key visible (the lower-right causal mask).
        """
        chunk = q.shape[2]
        sdpa = self.functional.scaled_dot_product_attention
        gqa = self.shape.heads != self.shape.kv_heads
        if chunk == 1:
            return sdpa(q, k, v, enable_gqa=gqa)
        if cached == 0:
            return sdpa(q, k, v, is_causal=True, enable_gqa=gqa)
        from torch.nn.attention.bias import causal_lower_right

        mask = causal_lower_right(chunk, cached + chunk)
        if gqa:  # the bias object does not take enable_gqa: repeat the KV heads
            rep = self.shape.heads // self.shape.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return sdpa(q, k, v, attn_mask=mask)

    # --- one iteration -----------------------------------------------------------------
    def iteration(self, it: IterationShape) -> Op:
        """A closure running ``it`` through every layer and the LM head (fixed shapes)."""
        torch = self.torch
        ids = self.token_ids(it.num_tokens)
        prefill_pos = torch.arange(it.prefill_ctx, it.prefill_ctx + it.chunk).repeat(
            it.prefill_seqs
        )
        decode_pos = torch.full((it.decode_seqs,), it.decode_ctx)
        cos, sin = self.rope_tables(torch.cat((prefill_pos, decode_pos)).to(self.device))
        pre_cache = [self.kv_cache(it.prefill_seqs, it.prefill_ctx + it.chunk) for _ in self.layers]
        dec_cache = [self.kv_cache(it.decode_seqs, it.decode_ctx + 1) for _ in self.layers]
        last = [(i + 1) * it.chunk - 1 for i in range(it.prefill_seqs)]
        last += list(range(it.prefill_seqs * it.chunk, it.num_tokens))
        sampled = torch.tensor(last, device=self.device)

        def run() -> Any:
            x = self.functional.embedding(ids, self.embedding)
            for weights, pre, dec in zip(self.layers, pre_cache, dec_cache, strict=True):
                x = self.layer(x, weights, it, (cos, sin), (pre, dec))
            x = self.rms_norm(x[sampled], self.final_norm)
            return x @ self.lm_head

        return run

    def fuse(self) -> None:
        """Run the layer's work around attention through ``torch.compile`` (dynamic in
        the token count), as vLLM V1 compiles its models: the norms, the residual adds, the
        rotary embedding and the gated activation become a few fused kernels beside the
        GEMMs instead of one PyTorch kernel per operation. Attention stays eager (vLLM
        splits its compiled graph there too). Compiles on the first run of a shape family.
        """
        compile_ = self.torch.compile
        self._pre = compile_(self._pre_attention, dynamic=True)
        self._post = compile_(self._post_attention, dynamic=True)

    def unfuse(self) -> None:
        """Back to one PyTorch kernel per operation (after a compile that failed)."""
        self._pre, self._post = self._pre_attention, self._post_attention

    def _pre_attention(self, x: Any, ln1: Any, qkv_w: Any, cos: Any, sin: Any) -> Any:
        """Norm, fused QKV GEMM and rotary embedding: ``(q, k, v)`` by token."""
        s = self.shape
        qkv = self.rms_norm(x, ln1) @ qkv_w
        q_w, kv_w = s.heads * s.head_dim, s.kv_heads * s.head_dim
        q = qkv[:, :q_w].view(-1, s.heads, s.head_dim)
        k = qkv[:, q_w : q_w + kv_w].view(-1, s.kv_heads, s.head_dim)
        v = qkv[:, q_w + kv_w :].view(-1, s.kv_heads, s.head_dim)
        return self.rope(q, cos, sin), self.rope(k, cos, sin), v

    def _post_attention(self, x: Any, attn: Any, w: Mapping[str, Any]) -> Any:
        """O projection, residual, norm, gate/up GEMM, gated activation, down, residual."""
        x = x + attn @ w["o"]
        gate, up = (self.rms_norm(x, w["ln2"]) @ w["gate_up"]).chunk(2, dim=-1)
        return x + (self.functional.silu(gate) * up) @ w["down"]

    def layer(
        self,
        x: Any,
        w: Mapping[str, Any],
        it: IterationShape,
        rope: tuple[Any, Any],
        caches: tuple[tuple[Any, Any], tuple[Any, Any]],
    ) -> Any:
        """One decoder layer over the iteration's tokens (prefill chunks, then decodes)."""
        s = self.shape
        q_w = s.heads * s.head_dim
        q, k, v = self._pre(x, w["ln1"], w["qkv"], *rope)
        outs = []
        n = it.prefill_seqs * it.chunk
        groups = (
            (0, n, it.prefill_seqs, it.chunk, it.prefill_ctx, caches[0]),
            (n, it.num_tokens, it.decode_seqs, 1, it.decode_ctx, caches[1]),
        )
        for start, end, seqs, chunk, cached, (k_cache, v_cache) in groups:
            if seqs == 0:
                continue
            shaped = [
                t[start:end].view(seqs, chunk, -1, s.head_dim).transpose(1, 2) for t in (q, k, v)
            ]
            k_cache[:, :, cached : cached + chunk].copy_(shaped[1])
            v_cache[:, :, cached : cached + chunk].copy_(shaped[2])
            out = self.attention(shaped[0], k_cache, v_cache, cached)
            outs.append(out.transpose(1, 2).reshape(seqs * chunk, q_w))
        attn = outs[0] if len(outs) == 1 else self.torch.cat(outs)
        return self._post(x, attn, w)

    # --- one operator at a time (the mlp_<model>.csv rows) -----------------------------
    def operators(self, num_tokens: int) -> dict[str, Op]:
        """Closures of the linear-work operators over ``num_tokens`` tokens, by Vidur's names."""
        s, w, f = self.shape, self.layers[0], self.functional
        ids = self.token_ids(num_tokens)
        x, y = self.rand(num_tokens, s.hidden), self.rand(num_tokens, s.hidden)
        attn_out = self.rand(num_tokens, s.heads * s.head_dim)
        act_in = self.rand(num_tokens, 2 * s.inter)
        act_out = self.rand(num_tokens, s.inter)
        q = self.rand(num_tokens, s.heads, s.head_dim)
        k = self.rand(num_tokens, s.kv_heads, s.head_dim)
        cos, sin = self.rope_tables(self.torch.arange(num_tokens, device=self.device))

        def act() -> Any:
            gate, up = act_in.chunk(2, dim=-1)
            return f.silu(gate) * up

        return {
            "emb": lambda: f.embedding(ids, self.embedding),
            "input_layernorm": lambda: self.rms_norm(x, w["ln1"]),
            "attn_pre_proj": lambda: x @ w["qkv"],
            "attn_rope": lambda: (self.rope(q, cos, sin), self.rope(k, cos, sin)),
            "attn_post_proj": lambda: attn_out @ w["o"],
            "post_attention_layernorm": lambda: self.rms_norm(x, w["ln2"]),
            "mlp_up_proj": lambda: x @ w["gate_up"],
            "mlp_act": act,
            "mlp_down_proj": lambda: act_out @ w["down"],
            "add": lambda: x + y,
        }

    def prefill_attention(self, chunk: int, cached: int) -> Op:
        """One sequence's prefill attention kernel: a ``chunk`` after ``cached`` tokens."""
        s = self.shape
        q = self.rand(1, s.heads, chunk, s.head_dim)
        k, v = self.kv_cache(1, cached + chunk)
        return lambda: self.attention(q, k, v, cached)

    def decode_attention(self, batch: int, context: int) -> Op:
        """Decode attention of ``batch`` sequences of ``context`` cached tokens each."""
        s = self.shape
        q = self.rand(batch, s.heads, 1, s.head_dim)
        k, v = self.kv_cache(batch, context + 1)
        return lambda: self.attention(q, k, v, context)
