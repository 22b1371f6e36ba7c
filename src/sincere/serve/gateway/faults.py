"""Telling a request's fault from an instance's, when an instance answers 5xx.

An engine answers some bad requests with a server error (vLLM has answered an unsupported
``response_format`` with 500). Retried on every instance and counted as instance failures,
one such request would open every breaker. So an upstream error status is judged:

* ``501 Not Implemented`` says the request asks what the engine does not do: the request's
  fault at once;
* the same 5xx status from a *second* instance for the same request (each healthy enough
  to answer) means the request is at fault, not both instances;
* anything else (a connection refused, a timeout, a first 5xx) stays an instance fault: the
  request is retried elsewhere and the breaker counts it.

A request's fault is answered with the engine's own status and error body (scrubbed like
any upstream error body), is not retried further, and takes back the breaker failures the
first answer counted: the instances that answered it are alive. It is counted as the
request's outcome ``client_error``, and the instance error as kind ``status`` (never
``connect``: the instance answered).
"""

from __future__ import annotations

from sincere.serve.backends.openai_api import UpstreamError

REQUEST_FAULT_STATUSES = frozenset({501})
"""Upstream statuses that blame the request at once."""


def error_kind(exc: UpstreamError) -> str:
    """The ``sincere_gateway_upstream_errors_total`` kind of a failed attempt: ``timeout``,
    ``status`` (the instance answered an error status) or ``connect`` (no answer)."""
    if exc.timed_out:
        return "timeout"
    return "status" if exc.upstream_status is not None or exc.status == 503 else "connect"


def is_request_fault(exc: UpstreamError, earlier: UpstreamError | None) -> bool:
    """Whether ``exc`` (this attempt's error) blames the request, given the error of the
    attempt before it on another instance (``earlier``; None: this was the first)."""
    status = exc.upstream_status
    if status is None or status == 429:  # no answer, or an instance that is too busy
        return False
    if status in REQUEST_FAULT_STATUSES:
        return True
    return earlier is not None and earlier.upstream_status == status
