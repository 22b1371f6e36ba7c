"""Operator profiles in Vidur's layout: reading, model checks, interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.perf.operators import (
    AttentionShape,
    accelerator_folder,
    read_operator_profiles,
    running_median,
)


def test_reads_every_kind_of_file(synthetic_profiles: Path) -> None:
    """Linear tables per TP, the attention shape, the all-reduce topology and CPU steps."""
    (synthetic_profiles / "send_recv_dgx.csv").write_text("size\n1\n")
    profiles = read_operator_profiles(synthetic_profiles)
    assert profiles.models == ["llama-3-8b"]
    assert sorted(profiles.linear) == [("llama-3-8b", 1), ("llama-3-8b", 2)]
    assert [t.shape for t in profiles.attention] == [AttentionShape(32, 8, 128)]
    assert profiles.topology().topology == "dgx"
    assert profiles.steps_table("llama-3-8b", 2) is profiles.engine_steps[0]
    assert profiles.unused == ("send_recv_dgx.csv",)


def test_linear_lookup_rounds_to_eight_and_keeps_the_steps(synthetic_profiles: Path) -> None:
    """129 tokens are looked up at 136 (the grid point), above 128's step; past the grid
    the time grows in proportion to the tokens."""
    table = read_operator_profiles(synthetic_profiles).linear_table("llama-3-8b", 1)
    assert table.layer_ms(129) == table.layer_ms(136) > 1.2 * table.layer_ms(128)
    last = float(table.tokens[-1])
    assert table.layer_ms(2 * last) == pytest.approx(2 * table.layer_ms(last))
    assert table.layer_ms(0) == 0.0


def test_long_prefill_chunks_are_timed_as_successive_chunks(synthetic_profiles: Path) -> None:
    """A chunk longer than any profiled one costs its pieces, each after the previous."""
    attn = read_operator_profiles(synthetic_profiles).attention[0]
    assert attn.max_chunk == 2048
    whole = attn.prefill_ms(4096, 100)
    assert whole == pytest.approx(attn.prefill_ms(2048, 100) + attn.prefill_ms(2048, 2148))


def test_missing_tables_and_topologies_are_named(synthetic_profiles: Path) -> None:
    """Asking for a TP or topology that was not profiled lists what was."""
    profiles = read_operator_profiles(synthetic_profiles)
    with pytest.raises(ConfigError, match=r"llama-3-8b tp4.*llama-3-8b tp1, llama-3-8b tp2"):
        profiles.linear_table("llama-3-8b", 4)
    with pytest.raises(ConfigError, match=r"unknown all-reduce topology.*dgx"):
        profiles.topology("nvswitch")
    with pytest.raises(ConfigError, match=r"single-node all-reduce.*allowed: 2, 4, 8"):
        profiles.topology().time_ms(1024, 16)


def test_architecture_columns_must_match_the_catalog(synthetic_profiles: Path) -> None:
    """An mlp file whose width disagrees with its catalog model is refused (line, column)."""
    path = synthetic_profiles / "mlp_llama-3-8b.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",4096,14336,", ",4096,11008,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mlp_llama-3-8b.csv:2 column 'n_expanded_embd'.*14336"):
        read_operator_profiles(synthetic_profiles)


def test_bad_cells_and_missing_columns_are_located(synthetic_profiles: Path) -> None:
    """A non-number names file, line and column; a missing column names the column."""
    path = synthetic_profiles / "engine_steps_llama-3-8b_tp1.csv"
    path.write_text(path.read_text().replace("\n16,", "\nsixteen,"))
    with pytest.raises(DataError, match=r"tp1.csv:3 column 'batch_size'.*sixteen"):
        read_operator_profiles(synthetic_profiles)
    path.write_text("batch_size\n8\n")
    with pytest.raises(DataError, match=r"schedule_median.: missing column"):
        read_operator_profiles(synthetic_profiles)


def test_accelerator_folder_is_found_by_catalog_alias(synthetic_profiles: Path) -> None:
    """The parent folder plus a catalog name finds the accelerator's folder (any case)."""
    root = synthetic_profiles.parent
    assert accelerator_folder(root, "H100-SXM") == synthetic_profiles
    assert accelerator_folder(synthetic_profiles, "anything") == synthetic_profiles
    with pytest.raises(ConfigError, match=r"no profile folder.*allowed: h100"):
        accelerator_folder(root, "A40")


def test_running_median_damps_single_outliers() -> None:
    """One spike among five neighbours disappears; windows shrink at the ends."""
    import numpy as np

    values = np.array([1.0, 1.0, 9.0, 1.0, 1.0, 2.0, 2.0])
    assert list(running_median(values, 5)) == [1.0, 1.0, 1.0, 1.0, 2.0, 1.5, 2.0]


def test_published_a100_profiles(shared_data: Path) -> None:
    """The A100 folder: four models at TP 1-8, the 70B TP2 attention shape, two topologies."""
    profiles = read_operator_profiles(shared_data / "gpu-profiles" / "a100")
    assert profiles.models == ["codellama-34b", "llama-2-70b", "llama-2-7b", "llama-3-8b"]
    assert {tp for _, tp in profiles.linear} == {1, 2, 4, 8}
    assert [t.shape for t in profiles.attention] == [AttentionShape(32, 4, 128)]
    assert sorted(profiles.all_reduce) == ["dgx", "pairwise_nvlink"]
    # Llama-3-8B at 512 tokens: the nine operators sum to about 1.1 ms per layer.
    assert profiles.linear_table("llama-3-8b", 1).layer_ms(512) == pytest.approx(1.08, rel=0.02)
