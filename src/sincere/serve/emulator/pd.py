"""An emulated engine's part in prefill/decode disaggregation: vLLM's KV-transfer fields.

vLLM's disaggregated serving (its P/D proxy and the NixlConnector) runs a request in
two HTTP calls, and so does an emulator with a ``role``:

* **Prefill**: the proxy sends the request with ``max_tokens: 1``, ``stream: false``
  and ``kv_transfer_params: {"do_remote_decode": true, ...}``. The prefill instance
  computes the prompt (its prefix cache applies), makes the first token and answers
  as usual, plus a top-level ``kv_transfer_params`` telling a decode instance where the
  KV is: ``do_remote_prefill: true``, ``do_remote_decode: false``,
  ``remote_engine_id``, ``remote_block_ids``, ``remote_host``, ``remote_port``,
  ``remote_request_id``, ``tp_size`` -- vLLM's names -- and, under ``sincere``, what
  the emulated transfer needs: ``kv_bytes`` (the prompt's KV at the prefill
  instance's KV precision) and the link out of it (``bandwidth_gbps``, ``latency_s``,
  from :mod:`sincere.perf.kv_link`, the simulator's link model).
* **Decode**: the proxy sends the client's request with those ``kv_transfer_params``.
  The decode instance "pulls" the KV (as NIXL does, on receipt): it waits the transfer
  time on a :class:`~sincere.perf.kv_link.KvLink` per remote engine (the transfers
  in flight from one prefill instance share its bandwidth, as in the simulator), then
  the KV is admitted into its batch when blocks are free (backpressure,
  :meth:`~sincere.engine.continuous.ContinuousEngine.add_prefilled`), and it decodes
  without computing the prompt again. Its answer carries every token (the first one,
  computed by the prefill, is handed out when the KV is admitted), and the headers
  ``x-sincere-kv-transfer-s`` (receipt to KV landed, link queueing included) and
  ``x-sincere-kv-wait-s`` (KV landed to admitted: backpressure).

A decode request whose parameters lack the ``sincere`` figures (a real vLLM prefill's)
is timed with the decode instance's own deployment and link. What is emulated: the
transfer's duration and the decode-side admission; no bytes move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sincere.perf.base import Deployment
from sincere.perf.kv_link import KvLinkConfig, kv_bytes, sender_figures
from sincere.serve.protocol import ProtocolError

PARAM = "kv_transfer_params"
KV_TRANSFER_HEADER = "x-sincere-kv-transfer-s"
KV_WAIT_HEADER = "x-sincere-kv-wait-s"


@dataclass(frozen=True, slots=True)
class RemoteKv:
    """What a decode request says about the KV it is to pull."""

    engine_id: str  # the prefill instance (one shared link per engine)
    kv_bytes: float | None  # None: the decode instance's own figure
    bandwidth_gbps: float | None
    latency_s: float | None


def phase_of(body: dict[str, Any], role: str) -> str | None:
    """``"prefill"``, ``"decode"`` or ``None`` (an ordinary request) from the body's
    ``kv_transfer_params``; a 400 when it is malformed or this role cannot take it."""
    params = body.get(PARAM)
    if params is None:
        return None
    if not isinstance(params, dict):
        raise _bad(PARAM, 'an object such as {"do_remote_decode": true}')
    decode_here = params.get("do_remote_prefill") is True
    prefill_here = params.get("do_remote_decode") is True
    if decode_here and prefill_here:
        raise _bad(PARAM, "do_remote_prefill or do_remote_decode true, not both")
    phase = "decode" if decode_here else "prefill" if prefill_here else None
    if phase is not None and role not in (phase, "both"):
        raise ProtocolError(
            400,
            f"{PARAM}: a {phase} request sent to an instance whose role is {role!r}; "
            f"allowed: roles {phase!r} or 'both'",
            param=PARAM,
            code="wrong_role",
        )
    return phase


def remote_kv(body: dict[str, Any]) -> RemoteKv:
    """The remote KV a decode request names (400 naming the field when malformed)."""
    params = body[PARAM]
    engine = params.get("remote_engine_id")
    if not isinstance(engine, str) or not engine:
        raise _bad(f"{PARAM}.remote_engine_id", "the prefill answer's remote_engine_id (text)")
    extra = params.get("sincere") or {}
    if not isinstance(extra, dict):
        raise _bad(f"{PARAM}.sincere", "an object with kv_bytes, bandwidth_gbps, latency_s")
    return RemoteKv(
        engine,
        _number(extra, "kv_bytes", 0.0, allow_zero=True),
        _number(extra, "bandwidth_gbps", 0.0, allow_zero=False),
        _number(extra, "latency_s", 0.0, allow_zero=True),
    )


def prefill_params(
    *,
    engine_id: str,
    host: str,
    port: int,
    request_id: str,
    prompt_tokens: int,
    block_tokens: int,
    deployment: Deployment,
    link: KvLinkConfig,
) -> dict[str, Any]:
    """The ``kv_transfer_params`` a prefill answer returns (see the module docstring)."""
    bandwidth, latency = sender_figures(link, deployment)
    num_blocks = -(-prompt_tokens // block_tokens)
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_engine_id": engine_id,
        "remote_block_ids": list(range(num_blocks)),  # emulated: no memory behind them
        "remote_host": host,
        "remote_port": port,
        "remote_request_id": request_id,
        "tp_size": deployment.tp,
        "sincere": {
            "kv_bytes": kv_bytes(deployment, prompt_tokens),
            "bandwidth_gbps": bandwidth,
            "latency_s": latency,
        },
    }


def _number(extra: dict[str, Any], name: str, low: float, *, allow_zero: bool) -> float | None:
    value = extra.get(name)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (value == low and not allow_zero):
        allowed = "a number >= 0" if allow_zero else "a number > 0"
        raise _bad(f"{PARAM}.sincere.{name}", allowed, value)
    return float(value)


def _bad(param: str, allowed: str, value: Any = None) -> ProtocolError:
    got = "" if value is None else f"got {value!r}; "
    return ProtocolError(400, f"{param}: {got}allowed: {allowed}", param=param)
