"""The engines' front end in simulated runs: client times on open and closed loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.sim.api import simulate
from sincere.sim.config import load_config

INTAKE, OUTPUT = 0.05, 0.01


def _config(arrival: dict[str, Any], frontend: dict[str, float] | None, n: int = 6) -> Any:
    engine: dict[str, Any] = {"preset": "vllm-v1", "max_num_seqs": 8}
    engine["execution"] = {"frontend": frontend or {"request_s": 0.0}}
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
