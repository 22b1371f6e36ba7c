"""The engines' front end in simulated runs: client times on open and closed loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.sim.api import simulate
from sincere.sim.config import load_config

INTAKE, OUTPUT = 0.05, 0.01


def _config(arrival: dict[str, Any], frontend: dict[str, Any] | None, n: int = 6) -> Any:
    engine: dict[str, Any] = {"preset": "vllm-v1", "max_num_seqs": 8}
    bare = {"request_s": 0.0, "prompt_token_s": 0.0, "intake_servers": 0}  # none by default
    engine["execution"] = {"frontend": {**bare, **(frontend or {})}}
    return load_config({
        "seed": 3,
        "workload": {
            "num_requests": n,
            "arrival": arrival,
            "lengths": {"prompt": {"kind": "fixed", "tokens": 300},
                        "output": {"kind": "fixed", "tokens": 40}},
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"name": "a", "model": "llama-3-8b", "accelerator": "H100-SXM",
                       "engine": engine}],
    })  # fmt: skip


def _times(result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    req, rec = result.requests_in, result.records
    return req.arrival_at.copy(), rec.first_token_at.copy(), rec.finished_at.copy()


def test_open_loop_client_times_are_engine_times_plus_the_front_end() -> None:
    arrival = {"kind": "poisson", "rate": 0.5}  # far apart: no request waits for another
    bare = _times(simulate(_config(arrival, None)))
    front = _times(simulate(_config(arrival, {"request_s": INTAKE, "output_s": OUTPUT})))
    np.testing.assert_allclose(front[0], bare[0])  # sends are the workload's
    np.testing.assert_allclose(front[1] - front[0], bare[1] - bare[0] + INTAKE + OUTPUT)
    np.testing.assert_allclose(front[2] - front[1], bare[2] - bare[1])  # TPOT unchanged


def test_the_front_end_takes_requests_in_order() -> None:
    # a long prompt sent just before a short one: the short one waits its turn at intake
    config = _config({"kind": "poisson", "rate": 0.5},
                     {"request_s": 0.0, "prompt_token_s": 1e-3})  # fmt: skip
    result = simulate(config)
    arrival = result.requests_in.arrival_at
    assert np.all(np.diff(arrival) >= 0)
    ttft = result.records.first_token_at - arrival
    assert np.all(ttft > 0.3)  # 300 prompt tokens at 1 ms each before the engine


def test_closed_loop_clients_send_after_the_output_delay_and_their_intake() -> None:
    arrival = {"kind": "closed", "concurrency": 1, "think_time_s": 0.2}
    req, first, done = _times(simulate(_config(arrival, {"request_s": INTAKE,
                                                         "output_s": OUTPUT})))  # fmt: skip
    # one client: each request is sent when the last one's final token reached the client,
    # plus the think time; its TTFT includes the intake and the output delay
    np.testing.assert_allclose(req[1:], done[:-1] + 0.2)
    assert req[0] == 0.0
    bare_req, bare_first, _ = _times(simulate(_config(arrival, None)))
    np.testing.assert_allclose(first[0] - req[0], bare_first[0] - bare_req[0] + INTAKE + OUTPUT)


def test_instances_with_different_front_ends_are_refused() -> None:
    config = _config({"kind": "poisson", "rate": 1.0}, {"request_s": INTAKE}).model_dump()
    other = dict(config["instances"][0], name="b")
    other["engine"] = dict(other["engine"], execution={"frontend": {"request_s": 0.0}})
    config["instances"].append(other)
    with pytest.raises(ConfigError, match="share their engines' front end"):
        simulate(load_config(config))


def test_an_unknown_preset_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="vllm-v1"):
        load_config({
            "workload": {"num_requests": 1, "models": {"llama-3-8b": 1.0}},
            "instances": [{"model": "llama-3-8b", "engine": {"preset": "vllm"}}],
        })  # fmt: skip


@pytest.mark.parametrize("tokens", [3, 40, 100])
def test_a_first_chunk_of_k_tokens_reaches_the_client_with_the_kth(tokens: int) -> None:
    """SGLang's stream interval (``first_chunk_tokens: k``): the client's first token is the
    engine's k-th (its mean gap between tokens apart, the run's times otherwise unchanged);
    40 fixed output tokens, so k >= 40 gives the last; the benchmark's TPOT shrinks to the
    gaps after it."""
    arrival = {"kind": "poisson", "rate": 0.5}
    bare = _times(simulate(_config(arrival, None)))
    chunk = _times(simulate(_config(arrival, {"request_s": 0.0, "first_chunk_tokens": tokens})))
    np.testing.assert_allclose(chunk[0], bare[0])
    np.testing.assert_allclose(chunk[2], bare[2])  # the end is the end
    share = (min(tokens, 40) - 1) / 39
    np.testing.assert_allclose(chunk[1], bare[1] + share * (bare[2] - bare[1]))
    assert np.all(chunk[1] > bare[1])


def test_first_chunk_at_by_hand() -> None:
    from sincere.core.records import RecordArrays
    from sincere.sim.frontend import first_chunk_at

    rec = RecordArrays.empty(4, ["e"])
    rec.first_token_at[:] = [1.0, 1.0, 1.0, 1.0]
    rec.finished_at[:] = [2.0, 2.0, 1.0, np.nan]  # the last never finished
    rec.output_tokens[:] = [11, 2, 1, 5]
    np.testing.assert_allclose(first_chunk_at(rec, 3), [1.2, 2.0, 1.0, 1.0])


@pytest.mark.parametrize("bad", [0, -2, True, 2.5, "30"])
def test_a_bad_first_chunk_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="first_chunk_tokens must be a whole number") as err:
        simulate(_config({"kind": "poisson", "rate": 1.0}, {"first_chunk_tokens": bad}))
    assert str(bad) in str(err.value)


def test_one_api_process_takes_a_closed_loops_first_wave_in_turn() -> None:
    """Four clients send at 0; one API process works their 50 ms intakes one after another,
    so the k-th reaches the engine at 50 (k + 1) ms; with every intake at once (0 processes)
    all four at 50 ms. The clients' sends stay at 0 (the run's arrival times)."""
    arrival = {"kind": "closed", "concurrency": 4}
    serial = simulate(_config(arrival, {"request_s": INTAKE, "intake_servers": 1}, n=4))
    parallel = simulate(_config(arrival, {"request_s": INTAKE}, n=4))
    np.testing.assert_array_equal(serial.requests_in.arrival_at, np.zeros(4))
    np.testing.assert_array_equal(parallel.requests_in.arrival_at, np.zeros(4))
    # the k-th in line cannot start before (k + 1) intakes; all at once, all after one
    serial_first = np.sort(serial.records.first_token_at)
    assert np.all(serial_first >= INTAKE * np.arange(1, 5))
    assert np.sort(parallel.records.first_token_at)[-1] < 4 * INTAKE


def test_a_closed_loops_later_requests_queue_behind_each_other_at_intake() -> None:
    """Two clients, one process, intakes of 2 s (far longer than the engine's work on a
    request): the process is the bottleneck, so requests reach the engine, and get their
    first token, about one intake apart, never two at once."""
    arrival = {"kind": "closed", "concurrency": 2}
    result = simulate(_config(arrival, {"request_s": 2.0, "intake_servers": 1}, n=6))
    first = np.sort(result.records.first_token_at)
    assert np.all(np.diff(first) >= 2.0 - 0.5)
    bare = simulate(_config(arrival, {"request_s": 2.0}, n=6))  # both intakes at once
    assert np.diff(np.sort(bare.records.first_token_at))[0] < 0.5


def test_engine_arrivals_through_api_processes_match_a_line_worked_by_hand() -> None:
    """Open loop: the one-process scan and the general queue give every request the engine
    arrival of a first-in-first-out line worked by hand, process by process."""
    from sincere.core.request import Request, RequestArrays
    from sincere.perf.execution import FrontEnd
    from sincere.sim.frontend import engine_arrivals

    rng = np.random.default_rng(5)
    n = 200
    sent = np.sort(rng.uniform(0.0, 2.0, n)).tolist()
    tokens = rng.integers(10, 4000, n).tolist()
    requests = RequestArrays.from_requests([
        Request(id=k, arrival_at=s, model="m", prompt_tokens=t, output_tokens=8)
        for k, (s, t) in enumerate(zip(sent, tokens, strict=True))
    ])  # fmt: skip
    for servers in (1, 2, 3):
        front = FrontEnd(request_s=0.004, prompt_token_s=5e-6, intake_servers=servers)
        free = [0.0] * servers
        done = []
        for s, t in zip(sent, tokens, strict=True):
            k = int(np.argmin(free))
            free[k] = max(s, free[k]) + 0.004 + 5e-6 * t
            done.append(free[k])
        got = engine_arrivals(requests, front).arrival_at
        np.testing.assert_allclose(got, np.maximum.accumulate(done), rtol=0, atol=1e-9)
        assert np.all(got - np.asarray(sent) >= 0.004)  # never quicker than its own intake


def test_intake_queue_by_hand() -> None:
    from sincere.perf.execution import FrontEnd, IntakeQueue

    two = IntakeQueue(FrontEnd(request_s=1.0, intake_servers=2))
    assert [two.done_at(0.0, 0) for _ in range(3)] == [1.0, 1.0, 2.0]
    assert two.done_at(5.0, 0) == 6.0  # both free again: no wait
    none = IntakeQueue(FrontEnd(request_s=1.0))
    assert [none.done_at(0.0, 0) for _ in range(3)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [-1, True, 1.5, "1"])
def test_a_bad_intake_servers_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="intake_servers must be a whole number") as err:
        simulate(_config({"kind": "poisson", "rate": 1.0}, {"intake_servers": bad}))
    assert str(bad) in str(err.value)


def test_a_fleets_api_processes_are_one_pool_of_every_instances() -> None:
    """Each instance's server brings its own processes: the run's pool is their sum (two
    groups of 2 and 1 replicas with 2 processes each: 6), and every intake at once stays so."""
    from sincere.sim.frontend import front_end_of

    config = _config({"kind": "poisson", "rate": 1.0}, {"intake_servers": 2}).model_dump()
    config["instances"][0]["count"] = 2
    config["instances"].append(dict(config["instances"][0], name="b", count=1))
    assert front_end_of(load_config(config)).intake_servers == 6
    config["instances"][0]["engine"]["execution"]["frontend"]["intake_servers"] = 0
    config["instances"][1]["engine"]["execution"]["frontend"]["intake_servers"] = 0
    assert front_end_of(load_config(config)).intake_servers == 0


def test_two_instances_take_a_first_wave_two_at_a_time() -> None:
    """Four clients over two replicas, one process each: the pool of two works the first
    wave two at a time, so the k-th first token comes after (k // 2 + 1) intakes."""
    config = _config({"kind": "closed", "concurrency": 4},
                     {"request_s": INTAKE, "intake_servers": 1}, n=4).model_dump()  # fmt: skip
    config["instances"][0]["count"] = 2
    config["router"] = {"name": "round-robin"}
    first = np.sort(simulate(load_config(config)).records.first_token_at)
    assert np.all(first >= INTAKE * (np.arange(4) // 2 + 1))
    assert first[1] < 2 * INTAKE  # the second in line went beside the first, not after it
