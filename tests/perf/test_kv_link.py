"""The KV link model shared by the simulator and the emulated decode engines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.catalog import get_accelerator, get_model
from sincere.perf.base import Deployment
from sincere.perf.kv_link import (
    RDMA_DEFAULT_GBPS,
    KvLink,
    KvLinkConfig,
    kv_bytes,
    link_figures,
    sender_figures,
)


def test_transfers_queue_one_after_another() -> None:
    """A second transfer ready while the first is on the wire waits for it (FIFO)."""
    link = KvLink(bandwidth_gbps=1.0, latency_s=0.5)
    assert link.send(0.0, 2e9) == pytest.approx(2.5)  # 2 s on the wire + latency
    assert link.send(1.0, 1e9) == pytest.approx(3.5)  # starts at 2.0, not 1.0
    assert link.send(10.0, 0.0) == pytest.approx(10.5)  # an idle link: latency alone
    assert link.num_transfers == 3 and link.busy_s == pytest.approx(3.0)


def test_figures_by_kind_and_overrides() -> None:
    """NVLink: half the quoted figure per GPU times the GPUs; RDMA: one NIC; overrides win."""
    assert link_figures(KvLinkConfig(), 900.0, 2)[0] == pytest.approx(900.0)
    assert link_figures(KvLinkConfig(kind="rdma"), 900.0, 8)[0] == RDMA_DEFAULT_GBPS
    cfg = KvLinkConfig(kind="rdma", bandwidth_gbps=3.0, latency_s=0.25)
    assert link_figures(cfg, 900.0, 1) == (3.0, 0.25)


def test_sender_figures_and_bytes_read_the_deployment() -> None:
    """A deployment's link and KV bytes come from its accelerator, GPUs and KV precision."""
    model = get_model("llama-3-8b")
    acc = get_accelerator("h100-sxm")
    dep = Deployment(model, acc, tp=2)
    assert sender_figures(KvLinkConfig(), dep)[0] == pytest.approx(acc.interconnect_gbps)
    assert kv_bytes(dep, 100) == pytest.approx(100 * model.kv_bytes_per_token("fp16"))


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1e10)), min_size=1, max_size=20))
def test_arrivals_never_precede_readiness_and_keep_order(sends: list[tuple[float, float]]) -> None:
    """Every transfer lands after it was ready plus its wire time; later sends land later."""
    link = KvLink(bandwidth_gbps=10.0, latency_s=0.001)
    last = 0.0
    for ready, num_bytes in sends:
        done = link.send(ready, num_bytes)
        assert done >= ready + num_bytes / 1e10 + 0.001 - 1e-9
        assert done >= last - 1e-9
        last = done
