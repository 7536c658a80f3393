"""TempTabQA-C infobox text -> a SQLite database an agent can query.

An infobox (the ``Context`` column of TempTabQA-C) reads::

    Nouran Gohar                                  <- name (first line)

    Personal Information
    Birth Date                                    <- key line, then its value line (ends in a tab)
    1997-9-30\t

    Country Representing: EGY                     <- starts the medal section (may repeat)
    World Championships                           <- tournament header (after a blank or country line)
    Singles \tMedalGold | 2024 | Cairo, MedalSilver | 2022 | Cairo
    Team\tMedalGold | 2016 | Issy                  <- event ("format") line: event, tab, medal entries

The personal block may also come after the medals or be missing. Medal entries are
``Medal<Colour> | <year> | <location>`` joined by ``", "``; a location may itself hold commas, so
entries are split only where a comma is followed by ``Medal<Colour>``. A few lines separate the event
from its medals with spaces instead of a tab; an event line may carry no medals at all.

Two schemas are built (``SCHEMAS``):

* ``"tables"``: the benchmark's five tables (``Dataset_Creation/Database_Generation/
  SQL_TableGeneration.sql``) with SQLite types, so the benchmark's gold SQL runs unchanged in meaning.
  Tournaments are merged by name per athlete and formats by name per tournament, also when an
  infobox lists the same tournament under two ``Country Representing`` blocks.
* ``"flat"``: one ``Medals`` table, one row per medal, holding the same values.

Databases are cached on disk per distinct (context, schema, ``BUILDER_VERSION``) under
``cache_dir()/db`` and written atomically (temporary file, then ``os.replace``), so concurrent
processes never see a half-built file; an in-process dict skips even the ``stat``. Their
observation text comes from the one schema describer, :func:`sqlenv.schema.describe` (``verbatim``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from sqlenv.cache import cache_dir
from sqlenv.connections import BUDGET, retry_host_fault

__all__ = [
    "BUILDER_VERSION", "MEDAL_TYPES", "SCHEMAS", "Infobox", "Medal", "build_database", "context_key",
    "database_for_context", "parse_infobox",
]

SCHEMAS = ("tables", "flat")
MEDAL_TYPES = ("MedalGold", "MedalSilver", "MedalBronze")
# Bump when parsing or table layout changes: it is part of every cache key.
BUILDER_VERSION = "1"

_MEDAL = re.compile(r"Medal(?:Gold|Silver|Bronze)")
# Entries are split at a comma only when the next entry starts; "Kuala Lumpur, Malaysia" stays whole.
_ENTRY_SPLIT = re.compile(r"\s*,\s*(?=Medal(?:Gold|Silver|Bronze))")
_DATE = re.compile(r"(\d{4})(?:\s*-\s*(\d{1,2}))?(?:\s*-\s*(\d{1,2}))?")
_LEADING_YEAR = re.compile(r"(\d{4})\b")


@dataclass
class Medal:
    """One medal: ``medal`` is ``'MedalGold'``, ``'MedalSilver'`` or ``'MedalBronze'`` as in the text."""

    tournament: str
    format: str
    medal: str
    year: int | None
    location: str


@dataclass
class Infobox:
    """The facts of one infobox. ``formats`` holds ``(tournament, format)`` pairs in order of appearance."""

    name: str
    birth_year: int | None = None
    birth_month: int | None = None
    birth_day: int | None = None
    medals: list[Medal] = field(default_factory=list)
    tournaments: list[str] = field(default_factory=list)
    formats: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

def _parse_entry(entry: str) -> tuple[str, int | None, str]:
    """``'MedalGold | 2021 | Vantaa'`` -> ``('MedalGold', 2021, 'Vantaa')``; a missing year is None,
    a missing location ``''``; ``'MedalGold | Vantaa'`` and ``'MedalGold 2021 Vantaa'`` are read too."""
    entry = entry.strip().rstrip(",")
    medal = _MEDAL.match(entry).group(0)  # the caller split the text at medal boundaries
    parts = [p.strip() for p in entry[len(medal):].split("|")]
    if parts and not parts[0]:
        parts = parts[1:]  # the usual case: nothing between the medal and its first "|"
    year = None
    if parts:
        found = _LEADING_YEAR.match(parts[0])
        if found:
            year = int(found.group(1))
            parts[0] = parts[0][found.end():].strip()
            if not parts[0]:
                parts = parts[1:]
        elif len(parts) > 1:
            parts = parts[1:]  # an empty or unreadable year field: "MedalGold |  | Vantaa"
    location = " | ".join(p for p in parts if p)
    return medal, year, location


def _split_event_line(line: str) -> tuple[str, list[tuple[str, int | None, str]]]:
    """An event line -> (event name, [(medal, year, location), ...])."""
    first = _MEDAL.search(line)
    if first is None:
        return line.strip(), []
    event = line[:first.start()].strip()
    entries = [e for e in _ENTRY_SPLIT.split(line[first.start():].strip()) if e.strip()]
    return event, [_parse_entry(e) for e in entries]


def _parse_birth_date(value: str) -> tuple[int | None, int | None, int | None]:
    found = _DATE.search(value)
    if not found:
        return None, None, None
    year, month, day = (int(g) if g else None for g in found.groups())
    if month is not None and not 1 <= month <= 12:
        month = day = None
    if day is not None and not 1 <= day <= 31:
        day = None
    return year, month, day


def parse_infobox(text: str) -> Infobox:
    """Parse one TempTabQA-C ``Context`` string into an ``Infobox`` (never raises on odd text)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    box = Infobox(name=lines[0].strip() if lines else "")
    tournaments: dict[str, None] = {}
    formats: dict[tuple[str, str], None] = {}
    section = "start"          # start | personal | medals
    key: str | None = None     # personal block: the key waiting for its value
    expect_header = False      # medals block: the next plain line names a tournament
    tournament = ""

    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            key = None
            expect_header = section == "medals"
            continue
        if line == "Personal Information":
            section, key = "personal", None
            continue
        if line.startswith("Country Representing"):
            section, expect_header = "medals", True
            continue
        if _MEDAL.search(line):
            section, expect_header = "medals", False
            event, entries = _split_event_line(raw)
            tournaments.setdefault(tournament)
            formats.setdefault((tournament, event))
            box.medals.extend(Medal(tournament, event, m, y, loc) for m, y, loc in entries)
            continue
        if section == "personal":
            if key is None:
                key = line
            else:
                if key == "Birth Date" and box.birth_year is None:
                    box.birth_year, box.birth_month, box.birth_day = _parse_birth_date(line)
                key = None
        elif section == "medals":
            if expect_header or "\t" not in raw:
                tournament, expect_header = line, False
                tournaments.setdefault(tournament)
            else:  # "60 m\t": an event listed without medals
                formats.setdefault((tournament, line))
    box.tournaments = list(tournaments)
    box.formats = list(formats)
    return box


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

# Dataset_Creation/Database_Generation/SQL_TableGeneration.sql with SQLite types
# (INT AUTO_INCREMENT PRIMARY KEY -> INTEGER PRIMARY KEY, VARCHAR(n) -> TEXT).
TABLES_DDL = """\
CREATE TABLE Athlete (
    athlete_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE Tournament (
    tournament_id INTEGER PRIMARY KEY,
    athlete_id INTEGER,
    name TEXT NOT NULL,
    FOREIGN KEY (athlete_id) REFERENCES Athlete(athlete_id)
);
CREATE TABLE Format (
    format_id INTEGER PRIMARY KEY,
    tournament_id INTEGER,
    name TEXT NOT NULL,
    FOREIGN KEY (tournament_id) REFERENCES Tournament(tournament_id)
);
CREATE TABLE Medal (
    medal_id INTEGER PRIMARY KEY,
    format_id INTEGER,
    type TEXT NOT NULL,
    year INTEGER,
    location TEXT NOT NULL,
    FOREIGN KEY (format_id) REFERENCES Format(format_id)
);
CREATE TABLE PersonalInformation (
    info_id INTEGER PRIMARY KEY,
    athlete_id INTEGER,
    birth_year INTEGER,
    birth_month INTEGER,
    birth_day INTEGER,
    FOREIGN KEY (athlete_id) REFERENCES Athlete(athlete_id)
);
"""

FLAT_DDL = """\
CREATE TABLE Medals (
    athlete TEXT NOT NULL,
    tournament TEXT NOT NULL,
    format TEXT NOT NULL,
    medal TEXT NOT NULL,
    year INTEGER,
    location TEXT NOT NULL,
    birth_year INTEGER,
    birth_month INTEGER,
    birth_day INTEGER
);
"""


def _statements(ddl: str) -> list[str]:
    # Our own DDL, so a plain split is safe (sqlite-utils' executescript tokenises slowly).
    return [f"{s.strip()};" for s in ddl.split(";\n") if s.strip()]


_TABLES_STATEMENTS = _statements(TABLES_DDL)
_FLAT_STATEMENTS = _statements(FLAT_DDL)


def _insert_tables(db: Database, box: Infobox) -> None:
    for statement in _TABLES_STATEMENTS:
        db.execute(statement)
    db["Athlete"].insert({"athlete_id": 1, "name": box.name})
    db["PersonalInformation"].insert({"info_id": 1, "athlete_id": 1, "birth_year": box.birth_year,
                                      "birth_month": box.birth_month, "birth_day": box.birth_day})
    tournament_ids = {name: i for i, name in enumerate(box.tournaments, start=1)}
    for name in (m.tournament for m in box.medals):  # an Infobox built by hand may omit some
        tournament_ids.setdefault(name, len(tournament_ids) + 1)
    format_ids = {pair: i for i, pair in enumerate(box.formats, start=1)}
    for m in box.medals:
        format_ids.setdefault((m.tournament, m.format), len(format_ids) + 1)
    for t, _ in format_ids:
        tournament_ids.setdefault(t, len(tournament_ids) + 1)
    db["Tournament"].insert_all(
        ({"tournament_id": i, "athlete_id": 1, "name": name} for name, i in tournament_ids.items()),
        batch_size=1000)
    db["Format"].insert_all(
        ({"format_id": i, "tournament_id": tournament_ids[t], "name": f} for (t, f), i in format_ids.items()),
        batch_size=1000)
    db["Medal"].insert_all(
        ({"medal_id": i, "format_id": format_ids[(m.tournament, m.format)], "type": m.medal,
          "year": m.year, "location": m.location} for i, m in enumerate(box.medals, start=1)),
        batch_size=1000)


def _insert_flat(db: Database, box: Infobox) -> None:
    for statement in _FLAT_STATEMENTS:
        db.execute(statement)
    db["Medals"].insert_all(
        ({"athlete": box.name, "tournament": m.tournament, "format": m.format, "medal": m.medal,
          "year": m.year, "location": m.location, "birth_year": box.birth_year,
          "birth_month": box.birth_month, "birth_day": box.birth_day} for m in box.medals),
        batch_size=1000)


def build_database(infobox_or_text: Infobox | str, path: str | os.PathLike, schema: str = "tables") -> Path:
    """Write the infobox's facts as a SQLite database at ``path`` (atomically replacing any file there)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; use one of {SCHEMAS}")
    box = parse_infobox(infobox_or_text) if isinstance(infobox_or_text, str) else infobox_or_text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            db = Database(conn, execute_plugins=False)
            conn.execute("BEGIN")
            (_insert_tables if schema == "tables" else _insert_flat)(db, box)
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def context_key(context: str) -> str:
    """A short stable hash of a context: the ``db_key`` of examples asked against it."""
    return hashlib.sha256(context.encode("utf-8")).hexdigest()[:16]


_BUILT: dict[tuple[str, str, str], Path] = {}
_BUILT_LOCK = threading.Lock()


def database_for_context(context: str, schema: str = "tables") -> Path:
    """The cached SQLite file for ``context`` in ``schema``, built on first use."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; use one of {SCHEMAS}")
    root = str(cache_dir())  # part of the key: tests and users may point $SQLENV_CACHE_DIR elsewhere
    key = (root, schema, context)
    path = _BUILT.get(key)
    if path is not None and path.exists():
        return path
    digest = hashlib.sha256(f"{context}\0{schema}\0{BUILDER_VERSION}".encode("utf-8")).hexdigest()
    path = Path(root) / "db" / f"{digest}.sqlite"
    if not path.exists():
        _build_within_budget(context, path, schema)
    with _BUILT_LOCK:
        _BUILT[key] = path
    return path


def _build_within_budget(context: str, path: Path, schema: str) -> None:
    """build_database with room made in the process's connection budget; a host fault (no
    descriptors, no memory, a full disk) is retried once after closing idle connections, then raises
    HostError."""
    BUDGET.make_room()
    retry_host_fault(path, "cannot build database", lambda: build_database(context, path, schema),
                     probe=False)
