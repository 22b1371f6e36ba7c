"""From a parsed OpenAI request to the policy's :class:`~sincere.core.request.Request`.

Priority and tier are server policy: a client gets the configured default tier (with API
keys on, its key's tier and priority ceiling), and may only ask for a tier or a priority
that is *not more important* (403 otherwise). A
client's ``sincere.deadline_s`` only tightens the tier's end-to-end target, and
``max_tokens`` must lie within ``limits.max_tokens`` (400). The prompt's token count and
``max_tokens`` (else ``limits.default_max_tokens``) size the request for the policies;
its budget comes from ``sincere.budget_usd``. A request generating several sequences
(``n`` > 1, a batch of prompts) counts the tokens of all of them. Request ids count up per
gateway process.

Content (``prefix`` settings): the prompt's text, or its token ids, become block ids of
``block_tokens`` tokens (:func:`sincere.serve.content.prompt_block_ids`, the one mapping of
:mod:`sincere.core.prefix`), at most as many as the counted prompt tokens fill; the session
is the configured header, else the OpenAI ``user`` field (:func:`session_of`). Sealed
bodies have no readable prompt and get neither block ids nor a ``user`` session.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from sincere.core.request import Request, Tier
from sincere.serve.content import prompt_block_ids
from sincere.serve.gateway.config import PrefixConfig
from sincere.serve.protocol import CompletionRequest, ProtocolError

MAX_SESSION_CHARS = 256
"""Longest session name kept (a longer header or ``user`` is cut to it)."""


def session_of(
    headers: Mapping[str, str], creq: CompletionRequest, prefix: PrefixConfig
) -> str | None:
    """The request's session: the configured header, else the body's ``user`` (if allowed)."""
    if not prefix.enabled:
        return None
    value = headers.get(prefix.session_header)
    if not value and prefix.session_from_user:
        user = creq.body.get("user") if isinstance(creq.body, dict) else None
        value = user if isinstance(user, str) else None
    return value[:MAX_SESSION_CHARS] if value else None


def with_cap(creq: CompletionRequest, cap: int) -> CompletionRequest:
    """``creq`` asking for at most ``cap`` tokens when it named no cap (else unchanged).

    Used when a key's budget or token window is at stake: what was reserved then bounds
    what is generated. The client's bytes get ``"max_tokens"`` appended before their
    closing brace (no re-encoding), so the relay still sends them as they are; a body
    with ``max_tokens: null`` is re-encoded instead.
    """
    if creq.max_tokens is not None:
        return creq
    body = creq.body
    clean = "max_tokens" not in body and "max_completion_tokens" not in body  # not even null
    raw = creq.raw.rstrip()
    patched = raw[:-1] + b',"max_tokens":%d}' % cap if clean and body and raw[-1:] == b"}" else b""
    capped = {k: v for k, v in body.items() if k != "max_completion_tokens"}
    capped["max_tokens"] = cap
    return dataclasses.replace(creq, max_tokens=cap, body=capped, raw=patched)


class RequestFactory:
    """Builds policy requests under the gateway's tiers and limits."""

    def __init__(
        self,
        tiers: dict[str, Tier],
        default_tier: str,
        max_tokens: int,
        default_max_tokens: int,
        prefix: PrefixConfig | None = None,
    ) -> None:
        self.tiers = tiers  # by name
        self.prefix = prefix or PrefixConfig()  # how prompts become block ids
        self.default_tier = tiers[default_tier]  # what a client gets when it names none
        self.max_tokens = max_tokens  # largest max_tokens a client may ask for
        self.default_max_tokens = default_max_tokens  # assumed when a client sets none
        self._seq = 0

    def build(
        self,
        creq: CompletionRequest,
        now: float,
        *,
        base_tier: str | None = None,
        priority_ceiling: int | None = None,
        tenant: str | None = None,
        session: str | None = None,
    ) -> Request:
        """The request ``creq`` arriving at ``now``; a forbidden tier, priority or cap raises.

        ``base_tier``, ``priority_ceiling``, ``tenant``: what the client's API key says
        (its tier replaces the default tier; its ceiling raises a too-important priority);
        ``session``: the conversation it belongs to (:func:`session_of`).
        """
        fields = creq.sincere
        tier = self.tier_of(fields.tier, base_tier)
        priority = tier.priority if fields.priority is None else fields.priority
        if priority < tier.priority:
            raise ProtocolError(
                403,
                f"sincere.priority: got {priority}; allowed: an integer >= {tier.priority} "
                f"(tier {tier.name!r}; a client may only lower its own priority)",
                param="sincere.priority",
                code="priority_not_allowed",
                type="permission_error",
            )
        if priority_ceiling is not None:
            priority = max(priority, priority_ceiling)
        if fields.deadline_s is not None:
            ttlt = min(tier.ttlt_s or math.inf, fields.deadline_s)
            tier = Tier(tier.name, tier.ttft_s, ttlt, tier.tbt_s, tier.priority)
        if creq.max_tokens is not None and creq.max_tokens > self.max_tokens:
            raise ProtocolError(
                400,
                f"max_tokens: got {creq.max_tokens}; allowed: an integer in [1, {self.max_tokens}]"
                " (limits.max_tokens)",
                param="max_tokens",
                code="invalid_value",
            )
        self._seq += 1
        prefix = self.prefix
        block_ids = (
            prompt_block_ids(creq.prompt, creq.body, creq.prompt_tokens, prefix.block_tokens)
            if prefix.enabled
            else ()
        )
        return Request(
            id=self._seq,
            arrival_at=now,
            model=creq.model,
            prompt_tokens=max(1, creq.prompt_tokens),  # every prompt of a batch
            # every sequence: n choices of each prompt (they decode side by side, each
            # within max_tokens)
            output_tokens=(creq.max_tokens or self.default_max_tokens) * creq.num_sequences,
            max_tokens=creq.max_tokens,
            prompt=creq.prompt,
            tier=tier,
            priority=priority,
            budget_usd=fields.budget_usd,
            tenant=tenant,
            block_ids=block_ids,
            block_tokens=prefix.block_tokens if block_ids else 0,
            session=session,
        )

    def tier_of(self, name: str | None, base_name: str | None = None) -> Tier:
        """The tier a client asked for; never one more important than its base tier.

        ``base_name``: the client's own tier (its key's); None: the gateway's default tier.
        """
        base = self.default_tier if base_name is None else self.tiers.get(base_name)
        if base is None:
            raise ProtocolError(
                403,
                f"this API key's tier {base_name!r} is not served here; "
                f"served: {', '.join(sorted(self.tiers))} (ask the operator to fix the key)",
                code="tier_not_served",
                type="permission_error",
            )
        tier = self.tiers.get(name or base.name)
        if tier is None:
            raise ProtocolError(
                400,
                f"sincere.tier: got {name!r}; allowed: {', '.join(sorted(self.tiers))}",
                param="sincere.tier",
            )
        if tier.priority < base.priority:
            allowed = sorted(n for n, t in self.tiers.items() if t.priority >= base.priority)
            raise ProtocolError(
                403,
                f"sincere.tier: got {name!r}, more important than this client's tier "
                f"{base.name!r}; allowed: {', '.join(allowed)}",
                param="sincere.tier",
                code="tier_not_allowed",
                type="permission_error",
            )
        return tier
