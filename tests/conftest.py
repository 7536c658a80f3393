import os
import random
import sqlite3
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The suite never contacts the Hugging Face hub, nor do the scripts it starts (they inherit this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = REPO.parent / "shared" / "data" / "temptabqa-c"


def temptabqa_dir() -> Path | None:
    """TempTabQA-C's folder: $SQLENV_DATA_DIR, else ../shared/data/temptabqa-c beside the repo."""
    path = Path(os.environ.get("SQLENV_DATA_DIR") or SHARED_DATA)
    return path if (path / "Dev_set").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = temptabqa_dir()
    if path is None:
        pytest.skip("TempTabQA-C files not found (set SQLENV_DATA_DIR)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Build databases into a per-run cache, never into the user's ~/.cache."""
    os.environ.setdefault("SQLENV_CACHE_DIR", str(tmp_path_factory.mktemp("sqlenv-cache")))



def build_medal_db(path: Path, rows: int = 3000, index: bool = False) -> Path:
    """A Medal table (plus Athlete) with `rows` deterministic medals; `index` adds one on Medal(year).

    The executor tests use it so that they need no other sqlenv module.
    """
    rng = random.Random(0)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE Athlete(athlete_id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE Medal(medal_id INTEGER PRIMARY KEY, format_id INTEGER, type TEXT, year INTEGER, location TEXT);
        INSERT INTO Athlete VALUES (1, 'Jane Doe');
    """)
    if index:
        conn.execute("CREATE INDEX medal_year ON Medal(year)")
    conn.executemany(
        "INSERT INTO Medal VALUES (?, ?, ?, ?, ?)",
        [
            (
                i,
                i % 50,
                ("MedalGold", "MedalSilver", "MedalBronze")[i % 3],
                1950 + i % 70,
                rng.choice(["Paris", "Tokyo", "Rome", "Oslo"]),
            )
            for i in range(rows)
        ],
    )
    conn.commit()
    conn.close()
    return path


def write_city_dataset(folder: Path, cities, questions) -> dict:
    """A JSONL dataset over one ``city(name, country, population)`` table; returns gym.make's kwargs for it."""
    import json

    conn = sqlite3.connect(folder / "cities.sqlite")
    conn.execute("CREATE TABLE city (name TEXT, country TEXT, population INTEGER)")
    conn.executemany("INSERT INTO city VALUES (?, ?, ?)", cities)
    conn.commit()
    conn.close()
    (folder / "train.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
                                        encoding="utf-8")
    return {"dataset": "jsonl", "split": "train", "data_dir": str(folder), "db": "cities.sqlite"}


def help_options(help_text: str) -> dict[str, str]:
    """Each option's line of ``--help`` with its continuation lines: ``{"--flag": "--flag METAVAR help"}``."""
    options: dict[str, str] = {}
    key = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            key = line.split()[0].rstrip(",")
            options[key] = line.strip()
        elif key and line.startswith("    "):
            options[key] += " " + line.strip()
    return options


def load_script(path: Path | str, name: str | None = None):
    """The module of a script that is not in a package (``benchmarks/*.py``, ``examples/*.py``), executed
    afresh and registered in ``sys.modules`` under ``name`` (a dataclass in it looks its module up there)."""
    import importlib.util
    import sys

    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or f"sqlenv_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
