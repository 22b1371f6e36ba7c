"""The shipped catalog's facts: required entries, sources, physical sanity, MaverIQ table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sincere.catalog import (
    PRECISION_BYTES,
    Catalog,
    load_catalog,
    parse_maveriq_accuracy_key,
    split_accuracy_key,
)

REQUIRED_ACCELERATORS = [
    "H100-SXM", "H100-PCIe", "H200", "A100-40GB", "A100-80GB", "A6000",
    "L4", "L40S", "A10G", "MI250", "MI300X", "cpu",
]  # fmt: skip
REQUIRED_MODELS = [
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3.1-8b", "llama-3-70b",
    "llama-3.1-70b", "gemma-7b", "granite-7b", "granite-13b", "falcon-7b", "falcon-40b",
    "gpt-j-6b", "mistral-7b", "qwen2.5-7b", "qwen2.5-72b", "tiny-llama", "tinyllama-1.1b",
    "qwen2.5-3b", "qwen2.5-14b", "qwen2.5-32b", "qwen3-4b", "qwen3-14b", "llama-3.2-3b",
    "granite-3.1-8b", "mistral-small-24b", "phi-4",
]  # fmt: skip
FIGURES = [
    "memory_gb", "hbm_bandwidth_gbps", "bf16_tflops", "fp8_tflops", "int8_tops",
    "interconnect_gbps", "host_link_gbps", "price_per_hour_usd", "power_w", "cc_supported",
]  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(use_env=False)


@pytest.mark.parametrize("name", REQUIRED_ACCELERATORS)
def test_required_accelerator_has_positive_figures_and_sources(catalog: Catalog, name: str) -> None:
    """Each required accelerator exists with positive figures and a source for every one."""
    acc = catalog.accelerator(name)
    for fname in FIGURES:
        value = getattr(acc, fname)
        if isinstance(value, float):
            assert value > 0, fname
        assert acc.sources.get(fname, "").strip(), f"{name}.{fname} has no source"


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_required_model_is_consistent_with_its_architecture(catalog: Catalog, name: str) -> None:
    """Each required model has a source, sane shape and params within 3 % of its layout."""
    model = catalog.model(name)
    assert model.source and model.accuracy_source
    assert model.num_heads % model.num_kv_heads == 0
    assert set(model.precisions) <= set(PRECISION_BYTES)
    assert model.estimated_params_b() == pytest.approx(model.num_params_b, rel=0.03)
    assert model.relative_accuracy_of("fp16") == 100.0
    assert model.relative_accuracy_of("bf16") == 100.0


def test_hopper_generation_is_faster_and_bigger(catalog: Catalog) -> None:
    """H200 has more memory and bandwidth than H100-SXM, which beats A100-80GB."""
    h200, h100, a100 = (catalog.accelerator(n) for n in ("H200", "H100-SXM", "A100-80GB"))
    assert h200.memory_gb > h100.memory_gb
    assert h200.hbm_bandwidth_gbps > h100.hbm_bandwidth_gbps
    assert h100.hbm_bandwidth_gbps > a100.hbm_bandwidth_gbps
    assert h100.bf16_tflops > a100.bf16_tflops


BLACKWELL_ULTRA = {"B300", "GB300"}
"""Blackwell Ultra cut INT8 tensor throughput below its BF16 rate (its datasheet)."""


def test_low_precision_is_at_least_as_fast_as_bf16(catalog: Catalog) -> None:
    """Where fp8 / int8 exist, their dense peak is at least the bf16 peak (Blackwell Ultra's
    int8 excepted: far below it)."""
    for acc in catalog.accelerators():
        for peak in (acc.fp8_tflops, acc.int8_tops):
            if peak is not None and not (peak is acc.int8_tops and acc.name in BLACKWELL_ULTRA):
                assert peak >= acc.bf16_tflops, acc.name
        assert acc.peak_tflops("fp8") >= acc.peak_tflops("bf16")
    for name in BLACKWELL_ULTRA:
        ultra = catalog.accelerator(name)
        assert ultra.int8_tops is not None and ultra.int8_tops < ultra.bf16_tflops / 10


@pytest.mark.parametrize("name", ["B300", "GB200", "GB300"])
def test_blackwell_systems_have_every_figure_sourced(catalog: Catalog, name: str) -> None:
    """The Blackwell systems of the InferenceX points: positive figures, a source for each,
    more memory than the B200 on Blackwell Ultra."""
    acc = catalog.accelerator(name)
    for fname in FIGURES:
        value = getattr(acc, fname)
        if isinstance(value, float):
            assert value > 0, fname
        assert acc.sources.get(fname, "").strip(), f"{name}.{fname} has no source"
    assert acc.interconnect_gbps == 1800  # NVLink 5, both directions
    if name in BLACKWELL_ULTRA:
        assert acc.memory_gb > catalog.accelerator("B200").memory_gb


def test_only_hopper_gpus_and_the_cpu_claim_confidential_computing(catalog: Catalog) -> None:
    """CC mode is flagged on Hopper and Blackwell (and the host CPU's TEE), not on Ampere or Ada."""
    flagged = {a.name for a in catalog.accelerators() if a.cc_supported}
    assert flagged == {
        "H100-SXM", "H100-PCIe", "H200", "B200", "B300", "GB200", "GB300", "RTX-PRO-6000", "cpu",
    }  # fmt: skip


def test_llama2_70b_fp16_weights_do_not_fit_one_80gb_gpu(catalog: Catalog) -> None:
    """Llama-2-70B's fp16 weights exceed 80 GB; int4 brings them under."""
    model = catalog.model("llama-2-70b")
    assert model.weight_bytes("fp16") > 80e9
    assert model.weight_bytes("int4") < 40e9


def test_llama3_8b_kv_bytes_per_token(catalog: Catalog) -> None:
    """Llama-3-8B stores 2 x 32 layers x 8 KV heads x 128 dims x 2 B = 131072 B per token."""
    model = catalog.model("llama-3-8b")
    assert model.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 131072
    assert model.kv_bytes_per_token("int8") == 65536


def test_gemma_head_dim_differs_from_hidden_over_heads(catalog: Catalog) -> None:
    """Gemma-7B's heads are 256 wide although hidden_size / num_heads is 192."""
    gemma = catalog.model("gemma-7b")
    assert gemma.hidden_size // gemma.num_heads == 192
    assert gemma.head_size == 256


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("llama3-8b", "llama-3-8b"),
        ("LLAMA3-8B", "llama-3-8b"),
        ("gptj-6b", "gpt-j-6b"),
        ("gtpj-6b", "gpt-j-6b"),
        ("meta-llama/Llama-2-70b-hf", "llama-2-70b"),
        ("tiny-llama-1b", "tinyllama-1.1b"),
        (" Granite-7B ", "granite-7b"),
    ],
)
def test_model_aliases_resolve(catalog: Catalog, alias: str, name: str) -> None:
    """Other spellings (data/sincere's, data/maveriq's, HF ids, any case) find the model."""
    assert catalog.model(alias).name == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [("h100", "H100-SXM"), ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("rtx-a6000", "A6000")],
)
def test_accelerator_aliases_resolve(catalog: Catalog, alias: str, name: str) -> None:
    """Short names and nvidia-smi's names find the accelerator."""
    assert catalog.accelerator(alias).name == name


def test_sincere_and_maveriq_model_names_resolve(catalog: Catalog, shared_data: Path) -> None:
    """Every model named in data/sincere and data/maveriq CSVs is in the catalog."""
    names: set[str] = set()
    for csv in (shared_data / "sincere").glob("model_loading_times_*.csv"):
        names |= {line.split(",")[0] for line in csv.read_text().splitlines()[1:] if line}
    fp = (shared_data / "maveriq" / "fingerprint_data_collection.csv").read_text()
    names |= {line.split(",")[0] for line in fp.splitlines()[1:] if line}
    assert names >= {"granite-7b", "gptj-6b", "llama-2-70b"}
    missing = [n for n in sorted(names) if not catalog.has_model(n)]
    assert not missing


def test_maveriq_accuracy_table_matches_the_json(catalog: Catalog, shared_data: Path) -> None:
    """Every figure of MaverIQ's relative MMLU table is shipped, under sincere's keys."""
    table = json.loads((shared_data / "maveriq" / "mmlu_relative_accuracy.json").read_text())
    shipped: dict[tuple[str, str], float] = {}
    for key, pct in table.items():
        model_name, acc_key = parse_maveriq_accuracy_key(key)
        model = catalog.model(model_name)
        assert model.relative_accuracy.get(acc_key) == pytest.approx(pct), key
        shipped[model.name, acc_key] = pct
    covered = {name for name, _ in shipped}
    for name in covered:  # nothing extra besides the bf16 = fp16 reference
        extra = set(catalog.model(name).relative_accuracy) - {k for n, k in shipped if n == name}
        assert extra == {"bf16"}, name
    assert catalog.model("llama-2-70b").relative_accuracy_of("int8", "int8") == 98.8


def test_parse_maveriq_key_forms() -> None:
    """MaverIQ keys map weight precision and the int8-KV flag to sincere's key."""
    assert parse_maveriq_accuracy_key("llama-2-7b_int4_gptq_False_None") == (
        "llama-2-7b",
        "int4-gptq",
    )
    assert parse_maveriq_accuracy_key("llama-2-7b_float16_True_None") == (
        "llama-2-7b",
        "fp16+kv-int8",
    )
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        parse_maveriq_accuracy_key("x_int3_False_None")
    with pytest.raises(ValueError, match="expected"):
        parse_maveriq_accuracy_key("x_int8_maybe_None")
    assert split_accuracy_key("int8+kv-int8") == ("int8", "int8")


def test_specs_are_hashable_and_serialisable(catalog: Catalog) -> None:
    """Catalog records can key dicts and round-trip through dataclasses.asdict."""
    model = catalog.model("llama-3-8b")
    assert {model: 1}[model] == 1
    assert dataclasses.asdict(model)["num_kv_heads"] == 8


def test_interconnect_is_quoted_both_ways_host_link_one_way(catalog: Catalog) -> None:
    """H100-SXM: NVLink 900 GB/s total is 450 each way; PCIe Gen5 x16 is 64 one way."""
    h100 = catalog.accelerator("H100-SXM")
    assert h100.interconnect_gbps_per_direction == 450
    assert h100.host_link_gbps == 64
