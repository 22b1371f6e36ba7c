"""The P/D policy: the decider and the per-phase front doors, clock-free."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core import ConfigError, Request
from sincere.policy.front_door import Hold
from sincere.policy.pd import (
    ROLES,
    Decider,
    Local,
    PDRoute,
    build_pd_front_door,
    colocated_role,
    missing_phase,
)
from sincere.policy.pd_config import DeciderConfig, PDRoutingConfig
from sincere.policy.router_base import InstanceView
from sincere.sim.config import load_config


def view(name: str, **kw: Any) -> InstanceView:
    """A view of instance ``name`` serving model ``m``."""
    return InstanceView(name, "m", "H100", **kw)


def req(i: int, prompt: int, blocks: tuple[int, ...] = ()) -> Request:
    """A request of ``prompt`` tokens whose content is ``blocks`` (16 tokens each)."""
    return Request(i, 0.0, "m", prompt, 10, block_ids=blocks, block_tokens=16 if blocks else 0)


@given(uncached=st.integers(0, 100_000), threshold=st.integers(0, 100_000))
def test_deciders_follow_their_rule(uncached: int, threshold: int) -> None:
    """always says yes, never says no, threshold says yes exactly at or above it."""
    assert Decider("always").disaggregate(uncached)
    assert not Decider("never").disaggregate(uncached)
    assert Decider("threshold", threshold).disaggregate(uncached) == (uncached >= threshold)


def test_the_threshold_decides_with_the_chosen_decode_instances_cache() -> None:
    """llm-d's rule: a prompt cached only on a prefill instance is split again (the decode
    instance would recompute it); one cached on the chosen decode instance stays there."""
    cfg = PDRoutingConfig(decider=DeciderConfig(name="threshold", min_uncached_tokens=32))
    door = build_pd_front_door(cfg, 0)
    pre, dec = [view("p0"), view("p1")], [view("d0")]
    first = door.decide(req(0, 64, (1, 2, 3, 4)), pre, dec, 0.0)
    assert isinstance(first, PDRoute) and first.uncached_prompt_tokens == 64
    again = door.decide(req(1, 64, (1, 2, 3, 4)), pre, dec, 0.1)
    assert isinstance(again, PDRoute) and again.uncached_prompt_tokens == 64
    short = door.decide(req(2, 16, (7,)), pre, dec, 0.2)  # under 32: whole on d0
    assert isinstance(short, Local) and short.route.instance == "d0"
    assert door.uncached_tokens(req(3, 40, (7, 8)), "d0") == 24
    longer = door.decide(req(3, 40, (7, 8)), pre, dec, 0.3)
    assert isinstance(longer, Local) and longer.uncached_prompt_tokens == 24
    busy = [view("d0", num_outstanding=5), view("d1")]  # the decode router picks d1
    elsewhere = door.decide(req(4, 40, (7, 8)), pre, busy, 0.4)
    assert isinstance(elsewhere, PDRoute) and elsewhere.decode.instance == "d1"
    assert elsewhere.uncached_prompt_tokens == 40


def test_prefix_aware_prefill_routing_follows_the_prompt() -> None:
    """The default prefill router sends a repeated prefix to the instance that has it."""
    door = build_pd_front_door(PDRoutingConfig(), 0)
    dec = [view("d0")]
    first = door.decide(req(0, 64, (1, 2, 3, 4)), [view("p0"), view("p1")], dec, 0.0)
    assert isinstance(first, PDRoute)
    loaded = [view(v, num_outstanding=1 if v == first.prefill.instance else 0)
              for v in ("p0", "p1")]  # fmt: skip
    again = door.decide(req(1, 64, (1, 2, 3, 4)), loaded, dec, 0.1)
    assert isinstance(again, PDRoute)
    assert again.prefill.instance == first.prefill.instance


def test_no_healthy_decode_instance_holds() -> None:
    """Every decode instance down: the decode front door's Hold comes back to the driver;
    an empty candidate list for a phase means colocated (None)."""
    door = build_pd_front_door(PDRoutingConfig(), 0)
    answer = door.decide(req(0, 64), [view("p0")], [view("d0", healthy=False)], 0.0)
    assert isinstance(answer, Hold)
    assert door.decide(req(1, 64), [view("p0")], [], 0.0) is None


def test_no_healthy_prefill_instance_serves_colocated() -> None:
    """Every prefill instance down: colocated (None), not held; a full but healthy prefill
    pool still holds (backpressure), and one healthy instance is enough to split."""
    door = build_pd_front_door(PDRoutingConfig(), 0)
    down = [view("p0", healthy=False), view("p1", healthy=False)]
    assert door.decide(req(0, 64), down, [view("d0")], 0.0) is None
    full = [view("p0", num_outstanding=1, max_in_flight=1)]
    assert isinstance(door.decide(req(1, 64), full, [view("d0")], 0.0), Hold)
    one_up = [view("p0", healthy=False), view("p1")]
    split = door.decide(req(2, 64), one_up, [view("d0")], 0.0)
    assert isinstance(split, PDRoute) and split.prefill.instance == "p1"


def test_an_unknown_decider_names_the_allowed_ones() -> None:
    """decider: 'sometimes' is refused at load, listing always, never and threshold."""
    cfg = {
        "workload": {"num_requests": 1, "arrival": {"kind": "poisson", "rate": 1.0},
                     "lengths": {"prompt": {"kind": "fixed", "tokens": 10},
                                 "output": {"kind": "fixed", "tokens": 2}}},
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "role": "prefill"},
                      {"model": "llama-3-8b", "accelerator": "A100-80GB", "role": "decode"}],
        "disaggregation": {"decider": {"name": "sometimes"}},
    }  # fmt: skip
    with pytest.raises(ConfigError, match="threshold"):
        load_config(cfg)


def test_an_unknown_phase_router_names_its_section() -> None:
    """A misspelt decode router is refused naming disaggregation.decode_router."""
    from sincere.policy.front_door_config import RouterConfig

    cfg = PDRoutingConfig(decode_router=RouterConfig(name="least-outstandin"))
    with pytest.raises(ConfigError, match=r"disaggregation\.decode_router"):
        build_pd_front_door(cfg, 0)


def _split_config(**disaggregation: object) -> dict[str, object]:
    """One prefill and one decode A100 with the given ``disaggregation:`` section."""
    return {
        "workload": {"num_requests": 1, "arrival": {"kind": "poisson", "rate": 1.0},
                     "lengths": {"prompt": {"kind": "fixed", "tokens": 10},
                                 "output": {"kind": "fixed", "tokens": 2}}},
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "role": "prefill"},
                      {"model": "llama-3-8b", "accelerator": "A100-80GB", "role": "decode"}],
        "disaggregation": disaggregation,
    }  # fmt: skip


def test_phase_router_names_and_params_are_checked_at_load() -> None:
    """A misspelt prefill router and a bad decode router parameter are both refused when
    the config loads, each at its config path, with the allowed values."""
    cfg = _split_config(
        prefill_router={"name": "prefix-awar"},
        decode_router={"name": "least-outstanding", "params": {"bogus": 1}},
    )
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    text = str(caught.value)
    assert "disaggregation.prefill_router.name" in text and "prefix-aware" in text
    assert "disaggregation.decode_router.params" in text and "bogus" in text


def test_valid_phase_routers_load() -> None:
    """Known phase routers with valid parameters load; a phase left out keeps its default."""
    cfg = load_config(_split_config(decode_router={"name": "round-robin"}))
    assert cfg.disaggregation is not None
    assert cfg.disaggregation.decode_router.name == "round-robin"
    assert cfg.disaggregation.prefill_router.name == "prefix-aware"


@given(st.sets(st.sampled_from(ROLES)))
def test_a_model_with_one_phase_role_misses_the_other(roles: set[str]) -> None:
    """missing_phase names the phase a model lacks exactly when it has the other one."""
    missing = missing_phase(roles)
    if ("prefill" in roles) == ("decode" in roles):
        assert missing is None
    else:
        assert missing in ("prefill", "decode") and missing not in roles


def test_the_colocated_way_prefers_both_instances_then_decode_ones() -> None:
    """Whole requests go to the model's both instances if it has any, else its decode ones."""
    assert colocated_role(["prefill", "both", "decode"]) == "both"
    assert colocated_role(iter(["prefill", "decode"])) == "decode"
    assert colocated_role([]) == "decode"
