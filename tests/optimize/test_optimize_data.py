"""Reading Inferno's JSON files: both model variants, loose keys, errors that locate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sincere.core.errors import DataError
from sincere.optimize.data import load_problem
from sincere.optimize.queueing import DecodePrefillParams, PerfParams

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    """A writable copy of the unlimited example."""
    dst = tmp_path / "case"
    shutil.copytree(EXAMPLES / "unlimited", dst)
    return dst


def _edit(path: Path, fn: object) -> None:
    doc = json.loads(path.read_text())
    fn(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))


def test_examples_load_with_both_variants() -> None:
    """The example directory parses; model data holds both parameter variants."""
    p = load_problem(EXAMPLES / "limited")
    kinds = {type(m.params) for m in p.models.values()}
    assert kinds == {DecodePrefillParams, PerfParams}
    assert p.accelerators["2xH100"].multiplicity == 2
    assert p.classes["Premium"].targets["granite_13b"].itl_ms == 80
    assert not p.optimizer.unlimited and p.capacity["G2"] > 0


def test_keys_match_loosely(case: Path) -> None:
    """``slo-itl``, ``sloItl`` and ``SLO_ITL`` are the same key."""

    def respell(doc: dict) -> None:  # type: ignore[type-arg]
        t = doc["serviceClasses"][0]["modelTargets"][0]
        t["SLO_ITL"] = t.pop("slo-itl")
        t["sloTtft"] = t.pop("slo-ttft")

    _edit(case / "serviceclass-data.json", respell)
    p = load_problem(case)
    assert p.classes["Premium"].targets["granite_13b"].itl_ms == 80


@pytest.mark.parametrize(
    ("file", "change", "match"),
    [
        (
            "model-data.json",
            lambda d: d["models"][1]["decodeParms"].pop("alpha"),
            r"model-data.json column 'alpha'.*models\[1\]",
        ),
        (
            "model-data.json",
            lambda d: d["models"][0].update(maxBatchSize=-3),
            r"column 'maxBatchSize'.*value -3",
        ),
        ("model-data.json", lambda d: d["models"][0].update(acc="TPU"), r"unknown accelerator"),
        (
            "model-data.json",
            lambda d: (
                d["models"][1]["decodeParms"].update(beta=0),
                d["models"][1]["prefillParms"].update(delta=0),
            ),
            r"column 'decodeParms.beta'.*beta and delta are both 0",
        ),
        (
            "model-data.json",
            lambda d: d["models"][7]["perfParms"].update(beta=0, gamma=0),
            r"column 'perfParms.beta'.*beta and gamma are both 0",
        ),
        (
            "server-data.json",
            lambda d: d["servers"][2].update({"class": "Gold"}),
            r"servers\[2\].*unknown service class.*Gold",
        ),
        (
            "server-data.json",
            lambda d: d["servers"][0]["currentAlloc"]["load"].update(arrivalRate="lots"),
            r"column 'arrivalRate'.*'lots'",
        ),
        (
            "accelerator-data.json",
            lambda d: d["accelerators"].append(dict(d["accelerators"][0])),
            r"duplicate entry",
        ),
        (
            "serviceclass-data.json",
            lambda d: d["serviceClasses"][0]["modelTargets"].pop(0),
            r"no modelTargets entry",
        ),
    ],
)
def test_bad_data_names_file_entry_and_field(
    case: Path, file: str, change: object, match: str
) -> None:
    """Each defect raises DataError naming the file, the entry and the field."""
    _edit(case / file, change)
    with pytest.raises(DataError, match=match):
        load_problem(case)


def test_invalid_json_names_line(case: Path) -> None:
    """Malformed JSON is reported with its line."""
    (case / "server-data.json").write_text('{"servers": [\n  {"name": }\n]}')
    with pytest.raises(DataError, match=r"server-data.json:2: invalid JSON"):
        load_problem(case)


def test_limited_without_capacity_file(case: Path) -> None:
    """Limited accelerators without capacity-data is an error naming that file."""
    _edit(case / "optimizer-data.json", lambda d: d["optimizer"].update(unlimited=False))
    with pytest.raises(DataError, match=r"capacity-data\.json"):
        load_problem(case)
