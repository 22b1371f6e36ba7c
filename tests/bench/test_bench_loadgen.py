"""The load generator against a fake server with known delays (tests/bench/conftest.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sincere.bench import BenchOptions, run_bench
from sincere.core.request import RequestArrays

pytestmark = pytest.mark.timing  # wall-clock delays of local servers (tests/conftest.py)

FakeServer = Any  # tests/bench/conftest.py

TTFT_S = 0.05  # the fake server's delays (tests/bench/conftest.py)
ITL_S = 0.01
SLACK_S = 0.03  # a shared 2-core machine: timers and scheduling add a few ms


def _requests(arrivals: list[float], outputs: list[int], model: str = "m") -> RequestArrays:
    n = len(arrivals)
    return RequestArrays.build(arrivals, [16] * n, outputs, models=(model,))


def test_streamed_records_match_known_ttft_and_itl(fake_server: FakeServer) -> None:
    """Streamed TTFT, ITL, TPOT and token counts come out as the server's delays."""
    outputs = [5, 8, 3, 6, 4, 7]
    reqs = _requests([0.02 * i for i in range(6)], outputs)
    result = run_bench(fake_server.url, reqs, BenchOptions(timeout_s=5))
    table = result.requests.to_pydict()
    assert table["output_tokens"] == outputs
    assert not any(table["rejected"])
    ttft = np.array(table["ttft_s"])
    assert np.all(ttft >= TTFT_S - 1e-3) and np.all(ttft < TTFT_S + SLACK_S)
    gaps = result.itl.column("gap_s").to_numpy()
    assert len(gaps) == sum(n - 1 for n in outputs)
    assert abs(float(np.median(gaps)) - ITL_S) < 0.004
    e2e = np.array(table["e2e_s"])
    expected = TTFT_S + (np.array(outputs) - 1) * ITL_S
    assert np.all(np.abs(e2e - expected) < SLACK_S + 0.01 * np.array(outputs))
    tpot = np.array(table["tpot_s"])
    assert abs(float(np.median(tpot)) - ITL_S) < 0.004


def test_itl_rows_are_consecutive_gaps_of_each_request(fake_server: FakeServer) -> None:
    """itl.parquet holds gap indices 0..n-2 per request and the summary counts them."""
    outputs = [4, 6]
    result = run_bench(fake_server.url, _requests([0.0, 0.01], outputs))
    itl = result.itl.to_pydict()
    for rid, n in enumerate(outputs):
        idx = [g for r, g in zip(itl["request_id"], itl["gap_index"], strict=True) if r == rid]
        assert idx == list(range(n - 1))
    assert result.summary["itl_s"]["p50"] == pytest.approx(ITL_S, abs=0.004)


def test_open_loop_schedule_is_honoured_despite_slow_answers(fake_server: FakeServer) -> None:
    """Requests leave at their arrival offsets even while earlier calls are still running."""
    arrivals = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5]
    before = len(fake_server.received_at)
    result = run_bench(fake_server.url, _requests(arrivals, [30] * len(arrivals)))
    seen = np.array(fake_server.received_at[before:])
    offsets = seen - seen[0]
    assert np.all(np.abs(offsets - np.array(arrivals)) < 0.015)
    lateness = result.requests.column("lateness_s").to_numpy()
    assert np.all(lateness >= 0) and np.all(lateness < 0.015)
    assert result.summary["client"]["kept_up"] is True


def test_timeouts_and_deadline_are_rejected_with_reasons(fake_server: FakeServer) -> None:
    """Per-call timeouts, the global deadline and never-sent requests all stay recorded."""
    reqs = RequestArrays.build(
        [0.0, 0.0, 0.05, 0.1, 5.0, 6.0],
        [8] * 6,
        [3] * 6,
        models=("m", "slow"),
        model=[0, 1, 0, 1, 0, 0],
    )
    options = BenchOptions(timeout_s=0.3, time_limit_s=0.5)
    result = run_bench(fake_server.url, reqs, options)
    reasons = result.requests.column("reject_reason").to_pylist()
    assert reasons == [None, "timeout", None, "timeout", "cancelled", "cancelled"]
    summary = result.summary
    assert summary["num_completed"] + summary["num_rejected"] == len(reqs)
    assert summary["client"]["reject_reasons"] == {"cancelled": 2, "timeout": 2}


def test_global_deadline_cuts_calls_in_flight(fake_server: FakeServer) -> None:
    """A call still streaming at the deadline is rejected as timeout, not lost."""
    reqs = _requests([0.0, 0.0], [2, 200])
    result = run_bench(fake_server.url, reqs, BenchOptions(time_limit_s=0.4))
    table = result.requests.to_pydict()
    assert table["reject_reason"] == [None, "timeout"]
    assert math.isnan(table["e2e_s"][1]) and table["output_tokens"][1] > 0
    assert result.summary["duration_s"] < 1.0


def test_http_errors_become_rejections(fake_server: FakeServer) -> None:
    """An HTTP 500 is a rejected request with reason http_500."""
    reqs = _requests([0.0, 0.01], [2, 2], model="error")
    result = run_bench(fake_server.url, reqs)
    assert result.requests.column("reject_reason").to_pylist() == ["http_500", "http_500"]
    assert result.summary["num_completed"] == 0


def test_unreachable_server_is_a_connection_error() -> None:
    """A closed port gives connection_error for every request, no exception."""
    result = run_bench("http://127.0.0.1:9", _requests([0.0, 0.0], [2, 2]))
    assert result.requests.column("reject_reason").to_pylist() == ["connection_error"] * 2


def test_non_streaming_has_no_ttft_but_e2e_and_usage(fake_server: FakeServer) -> None:
    """Without streaming, E2E and usage tokens are measured and TTFT is NaN."""
    reqs = _requests([0.0, 0.02], [4, 9])
    result = run_bench(fake_server.url, reqs, BenchOptions(stream=False))
    table = result.requests.to_pydict()
    assert table["output_tokens"] == [4, 9]
    assert all(math.isnan(x) for x in table["ttft_s"])
    for e2e, n in zip(table["e2e_s"], [4, 9], strict=True):
        assert TTFT_S + (n - 1) * ITL_S - 1e-3 <= e2e < TTFT_S + (n - 1) * ITL_S + SLACK_S
    assert result.itl.num_rows == 0


def test_chat_api_and_model_override(fake_server: FakeServer) -> None:
    """--api chat streams deltas; --model replaces every request's model name."""
    before = len(fake_server.bodies)
    reqs = _requests([0.0], [5], model="ignored")
    options = BenchOptions(api="chat", model="served")
    result = run_bench(fake_server.url + "/v1", reqs, options)
    assert result.requests.column("output_tokens").to_pylist() == [5]
    body = fake_server.bodies[before]
    assert body["model"] == "served" and "messages" in body and body["max_tokens"] == 5


def test_concurrency_limit_queues_client_side(fake_server: FakeServer) -> None:
    """With max_concurrency=1 the second call waits for the first, and is sent later."""
    reqs = _requests([0.0, 0.0], [10, 10])
    result = run_bench(fake_server.url, reqs, BenchOptions(max_concurrency=1))
    sent = result.requests.column("sent_at").to_numpy()
    first_done = result.requests.column("finished_at").to_numpy()[0]
    assert sent[1] >= first_done - 1e-3
    assert result.summary["num_completed"] == 2


def test_coalesced_streams_are_counted(fake_server: FakeServer) -> None:
    """A server that sends two tokens per chunk is flagged; one that does not, is not."""
    outputs = [6, 4, 5]
    coalesced = run_bench(fake_server.url, _requests([0.0, 0.01, 0.02], outputs, "coalesce"))
    assert coalesced.summary["client"]["num_coalesced_streams"] == 3
    assert coalesced.requests.column("output_tokens").to_pylist() == outputs  # from usage
    plain = run_bench(fake_server.url, _requests([0.0, 0.01], [6, 4]))
    assert plain.summary["client"]["num_coalesced_streams"] == 0
