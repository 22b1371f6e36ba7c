"""A blank line inside a CSV input is refused with its line number; trailing ones are fine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.core.csv_lines import interior_blank_line
from sincere.core.errors import DataError
from sincere.estimate.fingerprint import read_measurements
from sincere.profile.csvio import read_profile_csv
from sincere.workload.traces import read_trace

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n1.0,20,6\n{blank}2.0,30,7\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a,b\n1,2\n\n3,4\n", 3),
        ("a,b\r\n1,2\r\n\r\n3,4\r\n", 3),
        ("\na,b\n1,2\n", 1),
        ("a,b\n1,2\n\n\n", None),  # blank lines after the last row
        ('a,b\n"x\n\ny",2\n3,4\n', None),  # a quoted field's own empty line
        ("a,b\n1,2\n", None),
    ],
)
def test_interior_blank_line_is_found(text: str, line: int | None) -> None:
    """The first empty line with data after it, by its 1-based number; None when none."""
    assert interior_blank_line(text) == line


def test_a_trace_with_a_blank_line_names_it(tmp_path: Path) -> None:
    """An Azure trace with a blank line 4 stops there; the same rows without it read as 3."""
    path = tmp_path / "azure.csv"
    path.write_text(AZURE.format(blank="\n"))
    with pytest.raises(DataError, match=r"azure\.csv:4: blank line inside the data"):
        read_trace(path, "azure")
    path.write_text(AZURE.format(blank="") + "\n\n")
    assert len(read_trace(path, "azure").arrival_at) == 3


def test_profiles_and_fingerprints_refuse_it_too(tmp_path: Path) -> None:
    """A profile CSV and a MaverIQ CSV with a blank line in the middle name that line."""
    path = tmp_path / "iterations.csv"
    path.write_text("model,phase,batch_size\ntiny-llama,decode,1\n\ntiny-llama,decode,2\n")
    with pytest.raises(DataError, match=r"iterations\.csv:3: blank line"):
        read_profile_csv(path)
    path = tmp_path / "fingerprints.csv"
    path.write_text("Model,TP\n\nllama-2-7b,1\n")
    with pytest.raises(DataError, match=r"fingerprints\.csv:2: blank line"):
        read_measurements(path)
