"""Requests and SLA tiers.

A :class:`Request` is one inference call as a policy sees it. Simulations carry
many of them as a :class:`RequestArrays` (one NumPy array per field), which is
what workloads generate and what the simulator's hot loop reads; ``to_requests``
and ``from_requests`` convert between the two.

``output_tokens`` is the number of tokens the request *will* generate (known to a
simulator or a trace); policies must not peek at it and use ``max_tokens`` or a
length predictor instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.prefix import ChainedKeys
from sincere.core.types import ModelName, RequestId, Seconds


@dataclass(frozen=True, slots=True)
class Tier:
    """An SLA tier or service class: the latency targets a request must meet.

    Covers Niyama's tiers (a TTFT deadline, or a TTLT deadline, plus a TBT target),
    Inferno's service classes (TTFT and ITL targets, a priority) and SINCERE's
    end-to-end SLA. A ``None`` target is not checked.
    """

    name: str
    ttft_s: Seconds | None = None  # time to first token target
    ttlt_s: Seconds | None = None  # time to last token (end-to-end) target
    tbt_s: Seconds | None = None  # time between tokens (ITL / TPOT) target
    priority: int = 0  # smaller is more important (Inferno: 1 = Premium)

    def __post_init__(self) -> None:
        for attr in ("ttft_s", "ttlt_s", "tbt_s"):
            value = getattr(self, attr)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(
                    f"tier {self.name!r}: {attr} must be a positive number of seconds",
                    value=value,
                    allowed="a finite number > 0, or null for no target",
                )

    def meets(self, ttft_s: float, e2e_s: float, tpot_s: float) -> bool:
        """Whether a finished request with these latencies met every target of the tier."""
        if self.ttft_s is not None and not ttft_s <= self.ttft_s:
            return False
        if self.ttlt_s is not None and not e2e_s <= self.ttlt_s:
            return False
        return not (self.tbt_s is not None and not tpot_s <= self.tbt_s)


DEFAULT_TIER = Tier("default")


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request."""

    id: RequestId
    arrival_at: Seconds
    model: ModelName
    prompt_tokens: int
    output_tokens: int  # tokens it will generate (ground truth; policies use max_tokens)
    max_tokens: int | None = None  # the client's cap on generated tokens
    prompt: str | None = None  # prompt text, when known (length predictors, gateway)
    tier: Tier = DEFAULT_TIER
    priority: int = 0  # smaller is more important
    budget_usd: float | None = None  # most the client will pay for this request
    tenant: str | None = None
    block_ids: tuple[int, ...] = ()  # prompt content per block (sincere.core.prefix); () unknown
    block_tokens: int = 0  # prompt tokens per entry of block_ids (0 when there are none)
    session: str | None = None  # conversation / agent session the request belongs to
    # chain_keys(block_ids) when its source already had them (RequestArrays.block_keys);
    # () to compute them. Derived from block_ids, so not part of equality.
    block_keys: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ConfigError(
                f"request {self.id}: prompt_tokens must be >= 1",
                value=self.prompt_tokens,
            )
        if self.output_tokens < 1:
            raise ConfigError(
                f"request {self.id}: output_tokens must be >= 1",
                value=self.output_tokens,
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(
                f"request {self.id}: max_tokens must be >= 1 or null", value=self.max_tokens
            )
        if self.block_ids:
            check_block_count(
                f"request {self.id}", len(self.block_ids), self.prompt_tokens, self.block_tokens
            )

    @property
    def ttft_deadline_at(self) -> Seconds | None:
        """Absolute time by which the first token is due, if the tier sets one."""
        if self.tier.ttft_s is None:
            return None
        return self.arrival_at + self.tier.ttft_s

    @property
    def ttlt_deadline_at(self) -> Seconds | None:
        """Absolute time by which the last token is due, if the tier sets one."""
        if self.tier.ttlt_s is None:
            return None
        return self.arrival_at + self.tier.ttlt_s


def check_block_count(where: str, num_blocks: int, prompt_tokens: int, block_tokens: int) -> None:
    """Refuse block ids that describe more blocks than the prompt has, or have no block size."""
    if block_tokens < 1:
        raise ConfigError(
            f"{where}: block_tokens must be >= 1 when block ids are given",
            value=block_tokens,
            allowed="the prompt tokens each block id covers, e.g. 512 for Mooncake's hash_ids",
        )
    most = -(-prompt_tokens // block_tokens)
    if num_blocks > most:
        raise ConfigError(
            f"{where}: {num_blocks} block ids of {block_tokens} tokens describe more than its "
            f"{prompt_tokens} prompt tokens",
            value=num_blocks,
            allowed=f"at most {most} blocks",
        )


IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class RequestArrays:
    """Many requests as parallel arrays, sorted by arrival time.

    ``model`` and ``tier`` hold indices into ``models`` and ``tiers``. ``budget_usd``
    is NaN where a request has no budget. ``prompts`` is empty or holds one entry
    (text or ``None``) per request. ``block_ids`` is empty or holds one array per request:
    its prompt's content ids per block of ``block_tokens`` tokens (empty array: unknown;
    see :mod:`sincere.core.prefix`). ``sessions`` is empty or holds one session name (or
    ``None``) per request.
    """

    arrival_at: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    max_tokens: IntArray
    model: IntArray
    tier: IntArray
    priority: IntArray
    budget_usd: FloatArray
    models: tuple[ModelName, ...]
    tiers: tuple[Tier, ...] = (DEFAULT_TIER,)
    prompts: tuple[str | None, ...] = field(default=())
    block_ids: tuple[IntArray, ...] = field(default=())
    block_tokens: int = 0
    sessions: tuple[str | None, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.arrival_at)
        self._check_content(n)
        for name in ("prompt_tokens", "output_tokens", "max_tokens", "model", "tier"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"RequestArrays.{name} has {len(getattr(self, name))} entries, expected {n}"
                )
        if self.prompts and len(self.prompts) != n:
            raise ConfigError(f"RequestArrays.prompts has {len(self.prompts)} entries, want {n}")
        if n and np.any(np.diff(self.arrival_at) < 0):
            raise ConfigError("RequestArrays.arrival_at must be sorted in time")
        if n and (int(self.prompt_tokens.min()) < 1 or int(self.output_tokens.min()) < 1):
            raise ConfigError("prompt_tokens and output_tokens must all be >= 1")
        if n and (self.model.min() < 0 or self.model.max() >= len(self.models)):
            raise ConfigError("RequestArrays.model indexes outside models", value=self.models)
        if n and (self.tier.min() < 0 or self.tier.max() >= len(self.tiers)):
            raise ConfigError("RequestArrays.tier indexes outside tiers")

    def _check_content(self, n: int) -> None:
        if self.sessions and len(self.sessions) != n:
            raise ConfigError(f"RequestArrays.sessions has {len(self.sessions)} entries, want {n}")
        if not self.block_ids:
            return
        if len(self.block_ids) != n:
            raise ConfigError(
                f"RequestArrays.block_ids has {len(self.block_ids)} entries, want {n}"
            )
        counts = np.fromiter((len(b) for b in self.block_ids), dtype=np.int64, count=n)
        if self.block_tokens < 1:
            raise ConfigError(
                "RequestArrays.block_tokens must be >= 1 when block_ids are given",
                value=self.block_tokens,
            )
        limit = -(-self.prompt_tokens // self.block_tokens)  # blocks the prompt has
        bad = np.flatnonzero(counts > limit)
        if len(bad):
            i = int(bad[0])
            check_block_count(
                f"request {i}", int(counts[i]), int(self.prompt_tokens[i]), self.block_tokens
            )

    def __len__(self) -> int:
        return len(self.arrival_at)

    def head(self, num: int) -> RequestArrays:
        """The first ``num`` requests (every per-request column cut, the rest kept)."""
        return RequestArrays(
            arrival_at=self.arrival_at[:num],
            prompt_tokens=self.prompt_tokens[:num],
            output_tokens=self.output_tokens[:num],
            max_tokens=self.max_tokens[:num],
            model=self.model[:num],
            tier=self.tier[:num],
            priority=self.priority[:num],
            budget_usd=self.budget_usd[:num],
            models=self.models,
            tiers=self.tiers,
            prompts=self.prompts[:num],
            block_ids=self.block_ids[:num],
            block_tokens=self.block_tokens,
            sessions=self.sessions[:num],
        )

    @classmethod
    def build(
        cls,
        arrival_at: Sequence[float] | FloatArray,
        prompt_tokens: Sequence[int] | IntArray,
        output_tokens: Sequence[int] | IntArray,
        *,
        models: Sequence[ModelName] = ("default",),
        model: Sequence[int] | IntArray | None = None,
        tiers: Sequence[Tier] = (DEFAULT_TIER,),
        tier: Sequence[int] | IntArray | None = None,
        max_tokens: Sequence[int] | IntArray | None = None,
        priority: Sequence[int] | IntArray | None = None,
        budget_usd: Sequence[float] | FloatArray | None = None,
        prompts: Sequence[str | None] = (),
        block_ids: Sequence[Sequence[int] | IntArray] = (),
        block_tokens: int = 0,
        sessions: Sequence[str | None] = (),
    ) -> RequestArrays:
        """Build from plain sequences; omitted columns get defaults (index 0, no cap)."""
        arr = np.asarray(arrival_at, dtype=np.float64)
        n = len(arr)
        out = np.asarray(output_tokens, dtype=np.int64)

        def ints(values: Sequence[int] | IntArray | None, default: int) -> IntArray:
            if values is None:
                return np.full(n, default, dtype=np.int64)
            return np.asarray(values, dtype=np.int64)

        return cls(
            arrival_at=arr,
            prompt_tokens=np.asarray(prompt_tokens, dtype=np.int64),
            output_tokens=out,
            max_tokens=out.copy() if max_tokens is None else np.asarray(max_tokens, np.int64),
            model=ints(model, 0),
            tier=ints(tier, 0),
            priority=ints(priority, 0),
            budget_usd=(
                np.full(n, np.nan) if budget_usd is None else np.asarray(budget_usd, np.float64)
            ),
            models=tuple(models),
            tiers=tuple(tiers),
            prompts=tuple(prompts),
            block_ids=tuple(np.asarray(b, dtype=np.int64) for b in block_ids),
            block_tokens=block_tokens,
            sessions=tuple(sessions),
        )

    def request(self, i: int) -> Request:
        """The ``i``-th request as an object (id = ``i``)."""
        budget = float(self.budget_usd[i])
        return Request(
            id=i,
            arrival_at=float(self.arrival_at[i]),
            model=self.models[int(self.model[i])],
            prompt_tokens=int(self.prompt_tokens[i]),
            output_tokens=int(self.output_tokens[i]),
            max_tokens=int(self.max_tokens[i]),
            prompt=self.prompts[i] if self.prompts else None,
            tier=self.tiers[int(self.tier[i])],
            priority=int(self.priority[i]),
            budget_usd=None if math.isnan(budget) else budget,
            block_ids=tuple(self.block_ids[i].tolist()) if self.block_ids else (),
            block_tokens=self.block_tokens if self.block_ids else 0,
            session=self.sessions[i] if self.sessions else None,
            block_keys=tuple(self.block_keys(i)) if self.block_ids else (),
        )

    def block_keys(self, i: int) -> list[int]:
        """:func:`~sincere.core.prefix.chain_keys` of request ``i``'s block ids, computed
        for many requests at once (:class:`~sincere.core.prefix.ChainedKeys`) and kept
        for the router and the engine, which both need them."""
        chains: ChainedKeys | None = self.__dict__.get("_chains")
        if chains is None:
            chains = ChainedKeys()
            object.__setattr__(self, "_chains", chains)
        return chains.of(self.block_ids, i)

    def to_requests(self) -> list[Request]:
        """All requests as objects, ids 0..n-1 in arrival order."""
        return [self.request(i) for i in range(len(self))]

    @classmethod
    def from_requests(cls, requests: Sequence[Request]) -> RequestArrays:
        """Pack request objects (sorted by arrival) into arrays; ids become positions."""
        reqs = sorted(requests, key=lambda r: (r.arrival_at, r.id))
        models = tuple(dict.fromkeys(r.model for r in reqs)) or ("default",)
        tiers = tuple(dict.fromkeys(r.tier for r in reqs)) or (DEFAULT_TIER,)
        model_ix = {m: i for i, m in enumerate(models)}
        tier_ix = {t: i for i, t in enumerate(tiers)}
        has_text = any(r.prompt is not None for r in reqs)
        with_blocks = [r for r in reqs if r.block_ids]
        block_tokens = with_blocks[0].block_tokens if with_blocks else 0
        if any(r.block_tokens != block_tokens for r in with_blocks):
            raise ConfigError(
                "requests with block ids must share one block size",
                value=sorted({r.block_tokens for r in with_blocks}),
            )
        return cls.build(
            [r.arrival_at for r in reqs],
            [r.prompt_tokens for r in reqs],
            [r.output_tokens for r in reqs],
            models=models,
            model=[model_ix[r.model] for r in reqs],
            tiers=tiers,
            tier=[tier_ix[r.tier] for r in reqs],
            max_tokens=[r.max_tokens or r.output_tokens for r in reqs],
            priority=[r.priority for r in reqs],
            budget_usd=[math.nan if r.budget_usd is None else r.budget_usd for r in reqs],
            prompts=[r.prompt for r in reqs] if has_text else (),
            block_ids=[r.block_ids for r in reqs] if with_blocks else (),
            block_tokens=block_tokens,
            sessions=[r.session for r in reqs] if any(r.session for r in reqs) else (),
        )
