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


def _drain(link: KvLink) -> dict[int, float]:
    """Run ``link`` until idle: each transfer's time of last byte sent."""
    ends: dict[int, float] = {}
    while link.next_at is not None:
        at = link.next_at
        for i in link.finish(at):
            ends[i] = at
    return ends


def test_transfers_in_flight_share_the_bandwidth() -> None:
    """Two transfers on the wire move at half the bandwidth each (worked by hand)."""
    link = KvLink(bandwidth_gbps=1.0, latency_s=0.5)
    assert link.start(0, 0.0, 2e9) == pytest.approx(2.0)  # alone: 2 s on the wire
    # at 1.0 the first has 1e9 left; both now move at 0.5 GB/s and end together at 3.0
    assert link.start(1, 1.0, 1e9) == pytest.approx(3.0)
    assert sorted(link.finish(3.0)) == [0, 1]
    assert link.next_at is None and link.num_transfers == 2
    assert link.busy_s == pytest.approx(3.0)


def test_a_cancelled_transfer_gives_its_share_back() -> None:
    """The receiver leaving takes its transfer off; the other speeds up at once."""
    link = KvLink(bandwidth_gbps=1.0, latency_s=0.0)
    link.start(0, 0.0, 2e9)
    assert link.start(1, 0.0, 2e9) == pytest.approx(4.0)
    assert link.cancel(1, 1.0) == pytest.approx(2.5)  # 1.5e9 left at the full 1 GB/s
    assert _drain(link) == {0: pytest.approx(2.5)}


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
def test_transfers_end_after_their_wire_time_and_the_link_never_idles(
    sends: list[tuple[float, float]],
) -> None:
    """Each transfer ends no sooner than alone on the link; the last ends when a FIFO would."""
    bandwidth = 10.0
    link = KvLink(bandwidth_gbps=bandwidth, latency_s=0.001)
    ends: dict[int, float] = {}
    order = sorted(range(len(sends)), key=lambda i: sends[i][0])
    for i in order:
        start, num_bytes = sends[i]
        while link.next_at is not None and link.next_at <= start:
            at = link.next_at
            ends.update(dict.fromkeys(link.finish(at), at))
        link.start(i, start, num_bytes)
    ends.update(_drain(link))
    assert sorted(ends) == list(range(len(sends)))
    free_at = 0.0  # the same transfers one after another: processor sharing is work-conserving
    for i in order:
        start, num_bytes = sends[i]
        assert ends[i] >= start + num_bytes / (bandwidth * 1e9) - 1e-6
        free_at = max(free_at, start) + num_bytes / (bandwidth * 1e9)
    assert max(ends.values()) == pytest.approx(free_at, abs=1e-6)
