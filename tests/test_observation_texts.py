"""The observation texts of real TempTabQA-C and generated questions are byte-identical to those
recorded at 05e1a88 (tests/fixtures/observations/build.py), through one schema describer."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from sqlenv.datasets import load_dataset

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "observations"
RECORDED = json.loads((FIXTURE / "observations.json").read_text())["questions"]
# A source holds the questions whose database no earlier split had; the three largest run as slow.
SLOW = {("temptabqa-c", "train"), ("generated", "train"), ("generated", "test")}


def _by_source() -> dict[tuple[str, str], list[str]]:
    out = defaultdict(list)
    for key in RECORDED:
        name, split, qid = key.split("/", 2)
        out[(name, split)].append(qid)
    return dict(out)


SOURCES = _by_source()


def _digest(schema: str, sample_rows: str) -> str:
    """As build.py: 16 hex digits of the sha256 of both texts."""
    return hashlib.sha256(f"{schema}\0{sample_rows}".encode()).hexdigest()[:16]


def test_the_fixture_covers_every_split_and_hundreds_of_databases():
    assert len(RECORDED) > 1000
    assert {name for name, _ in SOURCES} == {"temptabqa-c", "generated"}
    assert SLOW < set(SOURCES) and len(SOURCES) > len(SLOW)


@pytest.mark.parametrize(
    "name, split",
    [pytest.param(*source, marks=pytest.mark.slow if source in SLOW else ()) for source in sorted(SOURCES)],
)
def test_observation_texts_are_unchanged(data_dir, name, split):
    ids = SOURCES[(name, split)]
    changed = []
    for schema in ("tables", "flat"):
        dataset = load_dataset(name, split, data_dir=data_dir, schema=schema)
        by_id = {example.id: example for example in dataset}
        for qid in ids:
            path = dataset.database(by_id[qid])
            for rows in (0, 3):
                got = _digest(*dataset.describe(path, rows))
                if got != RECORDED[f"{name}/{split}/{qid}"][f"{schema}/{rows}"]:
                    changed.append(f"{name}/{split}/{qid} schema={schema} sample_rows={rows}")
    assert not changed, f"{len(changed)} observation(s) changed, first: {changed[:5]}"
