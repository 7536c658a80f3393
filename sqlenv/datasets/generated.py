"""The built-in benchmark: seeded fictional athletes, temporal questions, gold answers and gold SQL.

Nothing is read from disk. For each split a seeded generator invents athletes (name, birth date,
country, sport, a medal career over fictional tournaments held in fictional cities) and writes each
athlete's infobox as text in exactly TempTabQA-C's ``Context`` format::

    Mira Calloway

    Personal Information
    Birth Date
    1995-1-23\t
    ...
    Country Representing: VAL
    Meridian Games
    Women's doubles\tMedalGold | 2021 | Port Calder, MedalSilver | 2017 | Velmora

so that the same parser (``sqlenv.infobox``) turns it into the five-table (or flat) SQLite database.
Questions cover the same kinds as TempTabQA-C in our own wording: counts by colour, tournament, year
and city; yes/no; first and latest years; the city, tournament or age of a first or latest medal;
medals within an age band or a period; distinct events; most successful year, event, city,
tournament or colour; and medal sequences within an event (colour changes, gold then lower,
bronze-silver-gold runs, improvements, the shortest span holding all three colours).

Every answer is computed in Python from the generated facts, never by running SQL; every question
also carries gold SQL for both schemas (``metadata["gold_sql_tables"]`` and
``metadata["gold_sql_flat"]``), and ``Example.gold_sql`` is the one for the dataset's schema.
Questions whose answer would be an unintended tie, or empty, are not asked.

Order: a list answer is matched in any order, except for the question types in
:data:`ORDERED_TYPES`, whose wording asks for one ("..., in year order."); their examples carry
``metadata["ordered"] = True`` and :meth:`GeneratedDataset.match` then requires the gold's
order (``sqlenv.matching.match_answer(..., ordered=True)``). Other lists (years, events) are
written sorted and their gold SQL has an ``ORDER BY``, but the question does not ask for an order,
so any order is right.

Determinism: all randomness comes from ``random.Random(...).random()`` seeded by a SHA-256 of
(seed, split, athlete index); Python guarantees that stream across versions and machines. Splits
draw their athletes from disjoint slices of one fixed name pool, so no athlete appears in two
splits.

    >>> from sqlenv.datasets import load_dataset
    >>> ds = load_dataset("generated", split="dev")
    >>> ex = ds[0]; path = ds.database(ex)     # SQLite file built from ex.context
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from sqlenv import infobox
from sqlenv.datasets.base import Dataset, DatasetError, Example, register_dataset
from sqlenv.matching import match_answer

SPLITS = ("train", "dev", "test")
SPLIT_SIZES = {"train": 2000, "dev": 200, "test": 500}
QUESTIONS_PER_ATHLETE = 6
FIRST_YEAR, LAST_YEAR = 1984, 2024
COLOURS = ("Gold", "Silver", "Bronze")
#: Question types whose question asks for the answer's items in a given order.
ORDERED_TYPES = frozenset({"medal_sequence"})
RANK = {"Gold": 3, "Silver": 2, "Bronze": 1}

# ----------------------------------------------------------------------------- word lists
# All invented. Some cities have spaces (and one an apostrophe, to exercise SQL quoting); none has
# a comma or a "|", which the infobox format uses as separators.

FIRST_NAMES = {
    "M": ("Aldric", "Bastian", "Corin", "Dario", "Emeric", "Faris", "Gideon", "Hale", "Ivo",
          "Jaron", "Kasimir", "Leif", "Matthis", "Nilo", "Oren", "Pascoe", "Quill", "Rafe",
          "Soren", "Tavish", "Ulric", "Vasco", "Wendel", "Xavi", "Yorick", "Zane", "Anselm",
          "Brann", "Cassian", "Dorian", "Evander", "Florin", "Gaspar", "Hollis", "Isandro",
          "Joren", "Kellan", "Lucan", "Marek", "Niall"),
    "F": ("Adela", "Brisa", "Calla", "Delphine", "Elowen", "Fenna", "Giada", "Hesper", "Ilse",
          "Juna", "Katrin", "Liora", "Mira", "Nerys", "Odile", "Perrin", "Quinta", "Rhosyn",
          "Saskia", "Tamsin", "Una", "Vesna", "Wren", "Xanthe", "Yselle", "Zora", "Amara",
          "Bettina", "Cerys", "Dagny", "Esme", "Flavia", "Greer", "Halina", "Ines", "Jolene",
          "Kaia", "Lumi", "Maren", "Noor"),
}
LAST_NAMES = (
    "Ashgrove", "Belcourt", "Calloway", "Dravik", "Ellery", "Fairholm", "Galvan", "Harrow",
    "Ibsen-Lund", "Jessup", "Kovalenko", "Lindqvist", "Marchetti", "Nakamura", "Okonkwo",
    "Petrakis", "Quennell", "Rasmussen", "Santangelo", "Tiernan", "Ulloa", "Varga", "Whitlock",
    "Xiong", "Yardley", "Zelenko", "Abernethy", "Brightwater", "Castellan", "Dunmore",
    "Esterhazy", "Falkner", "Grimaldi", "Hollander", "Ivanova", "Jankowski", "Kaspari", "Lorne",
    "Moravec", "Nordahl", "O'Dwyer", "Penhallow", "Quist", "Rourke", "Stavros", "Thorsen",
    "Umbers", "Valdivia", "Wexley", "Yamashiro", "Zubiri", "Achterberg", "Bramwell", "Corvino",
    "Delacroix", "Everly", "Fontaine", "Gustavsen", "Halloran", "Iturbe",
)
COUNTRIES = ("VAL", "ORN", "KES", "BRV", "TAL", "MER", "SOL", "NDR", "QAV", "LUS", "ECT",
             "PYR", "ZAN", "HOL", "GIR", "ARV")
CITIES = (
    "Port Calder", "Velmora", "New Ashby", "San Orello", "Kestrel Bay", "Dunmarrow",
    "Lake Irwen", "Tarsk", "Oldenvik", "Mirabel", "Castel Fiora", "Brennholt", "Saint Aubrel",
    "Halvorsund", "Quillon", "Rosk", "Eastmere", "Valdoria", "Ker Ysel", "Nova Tirra",
    "Ambergate", "Lunenhaven", "Sevrin", "Corvallo", "Marisport", "Thalberg", "Ishvar",
    "Puerto Alba", "Glenfarrow", "Zimara", "Ostrava Nova", "Bellmont", "Caradine", "Vessel Point",
    "L'Anselle", "Rivenholm", "Santa Lucerna", "Drummore", "Yelkent", "Mount Orrin",
)
# (name, years between editions); the first edition year is derived from the name's hash.
TOURNAMENTS = (
    ("World Championships", 2), ("Meridian Games", 4), ("Boreal Championships", 1),
    ("Aurelian Games", 4), ("Continental Cup", 2), ("Pan-Coastal Championships", 2),
    ("Highland Open Series", 1), ("Isthmus Games", 4), ("Northern Cup", 1),
    ("Tri-Nations Trophy", 2), ("World Championships (Indoor)", 2), ("Grand Circuit Finals", 1),
    ("Solstice Games", 4), ("Federation Masters", 1),
)
SPORTS = {
    "badminton": {"M": ("Men's singles", "Men's doubles", "Mixed doubles", "Men's team",
                        "Mixed team"),
                  "F": ("Women's singles", "Women's doubles", "Mixed doubles", "Women's team",
                        "Mixed team")},
    "swimming": {"M": ("100 m freestyle", "200 m freestyle", "100 m backstroke", "200 m butterfly",
                       "4x100 m medley relay", "50 m breaststroke"),
                 "F": ("100 m freestyle", "400 m freestyle", "200 m backstroke", "100 m butterfly",
                       "4x200 m freestyle relay", "200 m individual medley")},
    "athletics": {"M": ("100 m", "200 m", "400 m hurdles", "4x100 m relay", "Long jump",
                        "Triple jump"),
                  "F": ("100 m", "400 m", "100 m hurdles", "4x400 m relay", "High jump",
                        "Long jump")},
    "fencing": {"M": ("Individual épée", "Team épée", "Individual sabre", "Team sabre"),
                "F": ("Individual foil", "Team foil", "Individual épée", "Team épée")},
    "table tennis": {"M": ("Singles", "Doubles", "Mixed doubles", "Team"),
                     "F": ("Singles", "Doubles", "Mixed doubles", "Team")},
    "archery": {"M": ("Recurve individual", "Recurve team", "Compound individual", "Mixed team"),
                "F": ("Recurve individual", "Recurve team", "Compound individual", "Mixed team")},
}

# ----------------------------------------------------------------------------- randomness


class _Rng:
    """A seeded stream built only on ``random.Random.random()``, whose sequence Python guarantees
    across versions; every derived draw (ints, choices, samples) is computed here from it."""

    def __init__(self, *key: object):
        digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
        self._r = random.Random(int.from_bytes(digest[:8], "big"))

    def random(self) -> float:
        return self._r.random()

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + min(int(self.random() * (hi - lo + 1)), hi - lo)

    def choice(self, seq: Sequence):
        return seq[self.randint(0, len(seq) - 1)]

    def shuffled(self, seq: Sequence) -> list:
        items = list(seq)
        for i in range(len(items) - 1, 0, -1):
            j = self.randint(0, i)
            items[i], items[j] = items[j], items[i]
        return items

    def sample(self, seq: Sequence, k: int) -> list:
        return self.shuffled(seq)[:k]


def _stable_int(*key: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode("utf-8")).digest()[:8], "big")


# ----------------------------------------------------------------------------- athletes


@dataclass(frozen=True)
class Fact:
    """One medal: ``colour`` is Gold/Silver/Bronze (the infobox writes MedalGold etc.)."""

    tournament: str
    event: str
    colour: str
    year: int
    city: str


@dataclass
class Athlete:
    name: str
    sex: str
    birth_year: int
    birth_month: int
    birth_day: int
    country: str
    sport: str
    birth_place: str
    height_cm: int | None
    medals: list[Fact] = field(default_factory=list)
    tournament_order: list[str] = field(default_factory=list)

    def age(self, year: int) -> int:
        """Age as the benchmark computes it: medal year minus birth year."""
        return year - self.birth_year


def name_pool() -> list[tuple[str, str]]:
    """Every (sex, full name), shuffled once with a fixed seed; splits take disjoint slices."""
    names = [(sex, f"{first} {last}") for sex in ("F", "M") for first in FIRST_NAMES[sex]
             for last in LAST_NAMES]
    return _Rng("generated-name-pool").shuffled(names)


def _pool_slice(split: str) -> tuple[int, int]:
    n = len(FIRST_NAMES["F"]) * len(LAST_NAMES) * 2
    bounds = {"train": (0, int(n * 0.6)), "dev": (int(n * 0.6), int(n * 0.75)),
              "test": (int(n * 0.75), n)}
    return bounds[split]


def _edition_city(tournament: str, year: int) -> str:
    return CITIES[_stable_int("city", tournament, year) % len(CITIES)]


def _editions(tournament: str, period: int, first: int, last: int) -> list[int]:
    offset = _stable_int("offset", tournament) % period
    return [y for y in range(first, last + 1) if y % period == offset]


def make_athlete(rng: _Rng, sex: str, name: str) -> Athlete:
    """Invent one athlete with a plausible medal career (retries until it has enough medals)."""
    while True:
        sport = rng.choice(sorted(SPORTS))
        birth_year = rng.randint(1962, 2003)
        debut = birth_year + rng.randint(16, 22)
        end = min(debut + rng.randint(4, 16), LAST_YEAR)
        if end - debut < 3:
            continue
        athlete = Athlete(
            name=name, sex=sex, birth_year=birth_year, birth_month=rng.randint(1, 12),
            birth_day=rng.randint(1, 28), country=rng.choice(COUNTRIES), sport=sport,
            birth_place=rng.choice(CITIES),
            height_cm=rng.randint(158, 198) if rng.random() < 0.8 else None)
        events = rng.sample(SPORTS[sport][sex], rng.randint(2, 4))
        strength = 0.25 + 0.5 * rng.random()
        weights = [0.2 + rng.random() for _ in COLOURS]
        tournaments = rng.sample(TOURNAMENTS, rng.randint(2, 5))
        for tournament, period in tournaments:
            entered = rng.sample(events, rng.randint(1, min(3, len(events))))
            for year in _editions(tournament, period, debut, end):
                for event in entered:
                    if rng.random() < strength:
                        colour = _weighted(rng, COLOURS, weights)
                        athlete.medals.append(Fact(tournament, event, colour, year,
                                                   _edition_city(tournament, year)))
        years = {m.year for m in athlete.medals}
        if 4 <= len(athlete.medals) <= 40 and len(years) >= 3:
            won = {m.tournament for m in athlete.medals}
            athlete.tournament_order = [t for t, _ in tournaments if t in won]
            return athlete


def _weighted(rng: _Rng, items: Sequence, weights: Sequence[float]):
    x = rng.random() * sum(weights)
    for item, w in zip(items, weights):
        x -= w
        if x < 0:
            return item
    return items[-1]


def render_infobox(athlete: Athlete) -> str:
    """The athlete's infobox as text, in TempTabQA-C's Context format."""
    lines = [athlete.name, "", "Personal Information", "Birth Date",
             f"{athlete.birth_year}-{athlete.birth_month}-{athlete.birth_day}\t", "",
             "Birth Place", f"{athlete.birth_place}\t", "", "Height"]
    if athlete.height_cm is not None:
        lines += [f"{athlete.height_cm / 100:.2f} m\t"]
    lines += ["", "Weight", "", f"Country Representing: {athlete.country}"]
    for tournament in athlete.tournament_order:
        lines.append(tournament)
        medals = [m for m in athlete.medals if m.tournament == tournament]
        events = list(dict.fromkeys(m.event for m in medals))
        for event in events:
            won = sorted((m for m in medals if m.event == event),
                         key=lambda m: (-RANK[m.colour], m.year))
            cells = ", ".join(f"Medal{m.colour} | {m.year} | {m.city}" for m in won)
            # Like the source, a few event names are followed by a space before the tab.
            space = " " if _stable_int("space", athlete.name, tournament, event) % 7 == 0 else ""
            lines.append(f"{event}{space}\t{cells}")
        lines.append("")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- SQL dialects
# Gold SQL is written once per question kind against these names: the five-table join or the
# flat table. {M} is the medal source (with PersonalInformation joined when {born} is used).

_JOIN = ("Medal m\nJOIN Format f ON f.format_id = m.format_id\n"
         "JOIN Tournament t ON t.tournament_id = f.tournament_id\n"
         "JOIN Athlete a ON a.athlete_id = t.athlete_id")
DIALECTS = {
    "tables": {"M": _JOIN,
               "MP": _JOIN + "\nJOIN PersonalInformation p ON p.athlete_id = a.athlete_id",
               "ath": "a.name", "tour": "t.name", "event": "f.name", "type": "m.type",
               "year": "m.year", "city": "m.location", "born": "p.birth_year"},
    "flat": {"M": "Medals", "MP": "Medals", "ath": "athlete", "tour": "tournament",
             "event": "format", "type": "medal", "year": "year", "city": "location",
             "born": "birth_year"},
}


def sql_quote(value: str) -> str:
    """A SQLite string literal."""
    return "'" + value.replace("'", "''") + "'"


def _indent_sources(template: str, names: dict[str, str]) -> str:
    """Substitute the multi-line {M}/{MP} source, indenting its continuation lines to fit."""
    out = []
    for line in template.split("\n"):
        for key in ("MP", "M"):
            marker = "{" + key + "}"
            if marker in line:
                lead = line[:len(line) - len(line.lstrip())]
                nested = "(" in line[:line.index(marker)]
                indent = "\n" + lead + ("    " if nested else "")
                line = line.replace(marker, names[key].replace("\n", indent))
        out.append(line)
    return "\n".join(out)


def _sql(template: str, **params) -> dict[str, str]:
    """The template rendered for each schema; str params become quoted literals."""
    quoted = {k: sql_quote(v) if isinstance(v, str) else v for k, v in params.items()}
    return {schema: _indent_sources(template, names).format(**names, **quoted).strip()
            for schema, names in DIALECTS.items()}


# ----------------------------------------------------------------------------- questions


@dataclass
class Spec:
    """A generated question before it becomes an Example."""

    question: str
    answer: str
    sql: dict[str, str]
    params: dict = field(default_factory=dict)


Builder = Callable[[Athlete, _Rng], "Spec | None"]
QUESTION_TYPES: dict[str, tuple[str, Builder]] = {}


def question_type(name: str, difficulty: str):
    def register(fn: Builder) -> Builder:
        QUESTION_TYPES[name] = (difficulty, fn)
        return fn
    return register


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _unique_argmax(counter: Counter):
    """The key with the strictly highest count, or None on a tie."""
    top = counter.most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def _sequences(a: Athlete) -> dict[tuple[str, str], list[Fact]]:
    """Medals per (tournament, event), in year order (years are unique within one)."""
    seqs: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for m in sorted(a.medals, key=lambda m: m.year):
        seqs[(m.tournament, m.event)].append(m)
    return seqs


def _thin_zero(rng: _Rng, answer: int, keep: float = 0.35) -> bool:
    """True when a zero answer should be dropped (keeps zeros a minority)."""
    return answer == 0 and rng.random() > keep


def _pick_tournament_colour(a: Athlete, rng: _Rng, existing: float = 0.75) -> tuple[str, str]:
    if rng.random() < existing:
        m = rng.choice(a.medals)
        return m.tournament, m.colour
    return rng.choice(a.tournament_order), rng.choice(COLOURS)


def _years(a: Athlete) -> list[int]:
    return sorted({m.year for m in a.medals})


AGE_NOTE = "counting age as the medal year minus the birth year"
SEQ_NOTE = "Taking {name}'s medals in each event of each tournament in year order"

# --- easy: one filter, one aggregate


@question_type("count_colour_at_tournament", "easy")
def _q_count_colour_at_tournament(a: Athlete, rng: _Rng):
    t, c = _pick_tournament_colour(a, rng)
    n = sum(m.tournament == t and m.colour == c for m in a.medals)
    text = rng.choice([f"How many {c.lower()} medals has {a.name} won at the {t}?",
                       f"What is {a.name}'s number of {c.lower()} medals at the {t}?"])
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t} AND {type} = {medal}",
        player=a.name, t=t, medal="Medal" + c), {"tournament": t, "colour": c})


@question_type("count_at_tournament", "easy")
def _q_count_at_tournament(a: Athlete, rng: _Rng):
    t = rng.choice(a.tournament_order)
    n = sum(m.tournament == t for m in a.medals)
    text = rng.choice([f"How many medals in total has {a.name} won at the {t}?",
                       f"Count the medals {a.name} has collected at the {t}."])
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t}",
        player=a.name, t=t), {"tournament": t})


@question_type("count_colour_total", "easy")
def _q_count_colour_total(a: Athlete, rng: _Rng):
    c = rng.choice(COLOURS)
    n = sum(m.colour == c for m in a.medals)
    if _thin_zero(rng, n):
        return None
    text = f"How many {c.lower()} medals has {a.name} won across all tournaments?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {type} = {medal}",
        player=a.name, medal="Medal" + c), {"colour": c})


@question_type("count_total", "easy")
def _q_count_total(a: Athlete, rng: _Rng):
    text = rng.choice([f"How many medals has {a.name} won altogether?",
                       f"What is the total number of medals listed for {a.name}?"])
    return Spec(text, str(len(a.medals)), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


@question_type("count_in_year", "easy")
def _q_count_in_year(a: Athlete, rng: _Rng):
    years = _years(a)
    y = rng.choice(years) if rng.random() < 0.8 else rng.randint(years[0], years[-1])
    n = sum(m.year == y for m in a.medals)
    text = rng.choice([f"How many medals did {a.name} win in {y}?",
                       f"In {y}, how many medals did {a.name} take?"])
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {year} = {y}",
        player=a.name, y=y), {"year": y})


@question_type("count_colour_in_year", "easy")
def _q_count_colour_in_year(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    y, c = m.year, (m.colour if rng.random() < 0.7 else rng.choice(COLOURS))
    n = sum(x.year == y and x.colour == c for x in a.medals)
    text = f"How many {c.lower()} medals did {a.name} win in {y}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {type} = {medal} AND {year} = {y}",
        player=a.name, medal="Medal" + c, y=y), {"year": y, "colour": c})


@question_type("count_in_city", "easy")
def _q_count_in_city(a: Athlete, rng: _Rng):
    city = rng.choice(a.medals).city if rng.random() < 0.8 else rng.choice(CITIES)
    n = sum(m.city == city for m in a.medals)
    text = f"How many medals has {a.name} won in {city}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {city} = {c}",
        player=a.name, c=city), {"city": city})


@question_type("count_tournaments", "easy")
def _q_count_tournaments(a: Athlete, rng: _Rng):
    text = f"At how many different tournaments has {a.name} won at least one medal?"
    return Spec(text, str(len(a.tournament_order)), _sql(
        "SELECT COUNT(DISTINCT {tour})\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


@question_type("won_colour_at_tournament", "easy")
def _q_won_colour_at_tournament(a: Athlete, rng: _Rng):
    won = {(m.tournament, m.colour) for m in a.medals}
    missing = [(t, c) for t in a.tournament_order for c in COLOURS if (t, c) not in won]
    want_yes = rng.random() < 0.5 or not missing
    t, c = rng.choice(sorted(won)) if want_yes else rng.choice(missing)
    text = rng.choice([f"Has {a.name} ever won a {c.lower()} medal at the {t}?",
                       f"Did {a.name} win {c.lower()} at the {t} at least once?"])
    return Spec(text, "Yes" if want_yes else "No", _sql(
        "SELECT CASE WHEN COUNT(*) > 0 THEN 'Yes' ELSE 'No' END\nFROM {M}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {type} = {medal}",
        player=a.name, t=t, medal="Medal" + c), {"tournament": t, "colour": c})


@question_type("won_in_year", "easy")
def _q_won_in_year(a: Athlete, rng: _Rng):
    years = _years(a)
    gaps = [y for y in range(years[0] - 3, years[-1] + 4) if y not in years and y <= LAST_YEAR]
    want_yes = rng.random() < 0.5 or not gaps
    y = rng.choice(years) if want_yes else rng.choice(gaps)
    text = f"Did {a.name} win any medal in {y}?"
    return Spec(text, "Yes" if want_yes else "No", _sql(
        "SELECT CASE WHEN COUNT(*) > 0 THEN 'Yes' ELSE 'No' END\nFROM {M}\n"
        "WHERE {ath} = {player} AND {year} = {y}", player=a.name, y=y), {"year": y})


@question_type("first_medal_year", "easy")
def _q_first_medal_year(a: Athlete, rng: _Rng):
    text = rng.choice([f"In which year did {a.name} win a medal for the first time?",
                       f"When did {a.name} win their first medal (year)?"])
    return Spec(text, str(_years(a)[0]), _sql(
        "SELECT MIN({year})\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


@question_type("latest_medal_year", "easy")
def _q_latest_medal_year(a: Athlete, rng: _Rng):
    text = f"What is the year of {a.name}'s most recent medal?"
    return Spec(text, str(_years(a)[-1]), _sql(
        "SELECT MAX({year})\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


# --- medium: lists, subqueries, ages, ranges, comparisons


@question_type("years_at_tournament", "medium")
def _q_years_at_tournament(a: Athlete, rng: _Rng):
    t = rng.choice(a.tournament_order)
    years = sorted({m.year for m in a.medals if m.tournament == t})
    text = f"List the years in which {a.name} won medals at the {t}."
    return Spec(text, _join(years), _sql(
        "SELECT DISTINCT {year}\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t}\n"
        "ORDER BY {year}",
        player=a.name, t=t), {"tournament": t})


@question_type("events_list", "medium")
def _q_events_list(a: Athlete, rng: _Rng):
    events = sorted({m.event for m in a.medals})
    text = rng.choice([f"Which events has {a.name} won medals in?",
                       f"List every event in which {a.name} has a medal."])
    return Spec(text, _join(events), _sql(
        "SELECT DISTINCT {event}\nFROM {M}\nWHERE {ath} = {player}\nORDER BY {event}",
        player=a.name))


@question_type("count_events", "medium")
def _q_count_events(a: Athlete, rng: _Rng):
    text = f"In how many different events has {a.name} won a medal?"
    return Spec(text, str(len({m.event for m in a.medals})), _sql(
        "SELECT COUNT(DISTINCT {event})\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


@question_type("events_at_edition", "medium")
def _q_events_at_edition(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    events = sorted({x.event for x in a.medals
                     if x.tournament == m.tournament and x.year == m.year})
    text = f"In which events did {a.name} win medals at the {m.year} {m.tournament}?"
    return Spec(text, _join(events), _sql(
        "SELECT DISTINCT {event}\nFROM {M}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {year} = {y}\n"
        "ORDER BY {event}", player=a.name, t=m.tournament, y=m.year),
        {"tournament": m.tournament, "year": m.year})


@question_type("count_at_edition", "medium")
def _q_count_at_edition(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    n = sum(x.tournament == m.tournament and x.year == m.year for x in a.medals)
    text = f"How many medals did {a.name} take home from the {m.year} {m.tournament}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t} AND {year} = {y}",
        player=a.name, t=m.tournament, y=m.year), {"tournament": m.tournament, "year": m.year})


@question_type("count_event_at_tournament", "medium")
def _q_count_event_at_tournament(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    n = sum(x.tournament == m.tournament and x.event == m.event for x in a.medals)
    text = f"How many medals has {a.name} won in the {m.event} at the {m.tournament}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t} AND {event} = {e}",
        player=a.name, t=m.tournament, e=m.event), {"tournament": m.tournament, "event": m.event})


@question_type("first_year_colour_event", "medium")
def _q_first_year_colour_event(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    y = min(x.year for x in a.medals
            if (x.tournament, x.event, x.colour) == (m.tournament, m.event, m.colour))
    text = (f"In which year did {a.name} first win {m.colour.lower()} in the {m.event} "
            f"at the {m.tournament}?")
    return Spec(text, str(y), _sql(
        "SELECT MIN({year})\nFROM {M}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {event} = {e} AND {type} = {medal}",
        player=a.name, t=m.tournament, e=m.event, medal="Medal" + m.colour),
        {"tournament": m.tournament, "event": m.event, "colour": m.colour})


def _city_at(a: Athlete, which) -> str | None:
    y = which(_years(a))
    cities = {m.city for m in a.medals if m.year == y}
    return cities.pop() if len(cities) == 1 else None


@question_type("city_first_medal", "medium")
def _q_city_first_medal(a: Athlete, rng: _Rng):
    city = _city_at(a, min)
    if city is None:
        return None
    text = rng.choice([f"In which city did {a.name} win their first medal?",
                       f"Where did {a.name} win a medal for the first time?"])
    return Spec(text, city, _sql(
        "SELECT DISTINCT {city}\nFROM {M}\nWHERE {ath} = {player}\n"
        "  AND {year} = (\n    SELECT MIN({year})\n    FROM {M}\n    WHERE {ath} = {player}\n  )",
        player=a.name))


@question_type("city_latest_medal", "medium")
def _q_city_latest_medal(a: Athlete, rng: _Rng):
    city = _city_at(a, max)
    if city is None:
        return None
    text = f"In which city did {a.name} win their most recent medal?"
    return Spec(text, city, _sql(
        "SELECT DISTINCT {city}\nFROM {M}\nWHERE {ath} = {player}\n"
        "  AND {year} = (\n    SELECT MAX({year})\n    FROM {M}\n    WHERE {ath} = {player}\n  )",
        player=a.name))


@question_type("city_first_colour_at_tournament", "medium")
def _q_city_first_colour_at_tournament(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    first = min((x for x in a.medals if x.tournament == m.tournament and x.colour == m.colour),
                key=lambda x: x.year)
    text = (f"In which city did {a.name} win their first {m.colour.lower()} medal "
            f"at the {m.tournament}?")
    return Spec(text, first.city, _sql(
        "SELECT DISTINCT {city}\nFROM {M}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {type} = {medal}\n"
        "  AND {year} = (\n    SELECT MIN({year})\n    FROM {M}\n"
        "    WHERE {ath} = {player} AND {tour} = {t} AND {type} = {medal}\n  )",
        player=a.name, t=m.tournament, medal="Medal" + m.colour),
        {"tournament": m.tournament, "colour": m.colour})


@question_type("tournament_latest_medal", "medium")
def _q_tournament_latest_medal(a: Athlete, rng: _Rng):
    y = _years(a)[-1]
    tournaments = {m.tournament for m in a.medals if m.year == y}
    if len(tournaments) != 1:
        return None
    text = f"At which tournament did {a.name} win their most recent medal?"
    return Spec(text, tournaments.pop(), _sql(
        "SELECT DISTINCT {tour}\nFROM {M}\nWHERE {ath} = {player}\n"
        "  AND {year} = (\n    SELECT MAX({year})\n    FROM {M}\n    WHERE {ath} = {player}\n  )",
        player=a.name))


@question_type("age_first_medal", "medium")
def _q_age_first_medal(a: Athlete, rng: _Rng):
    text = f"How old was {a.name} when they won their first medal, {AGE_NOTE}?"
    return Spec(text, str(a.age(_years(a)[0])), _sql(
        "SELECT MIN({year} - {born})\nFROM {MP}\nWHERE {ath} = {player}", player=a.name))


@question_type("age_first_at_tournament", "medium")
def _q_age_first_at_tournament(a: Athlete, rng: _Rng):
    t = rng.choice(a.tournament_order)
    y = min(m.year for m in a.medals if m.tournament == t)
    text = f"At what age did {a.name} win a first medal at the {t}, {AGE_NOTE}?"
    return Spec(text, str(a.age(y)), _sql(
        "SELECT MIN({year} - {born})\nFROM {MP}\nWHERE {ath} = {player} AND {tour} = {t}",
        player=a.name, t=t), {"tournament": t})


@question_type("age_latest_colour_at_tournament", "medium")
def _q_age_latest_colour_at_tournament(a: Athlete, rng: _Rng):
    m = rng.choice(a.medals)
    y = max(x.year for x in a.medals if x.tournament == m.tournament and x.colour == m.colour)
    text = (f"How old was {a.name} at their most recent {m.colour.lower()} medal at the "
            f"{m.tournament}, {AGE_NOTE}?")
    return Spec(text, str(a.age(y)), _sql(
        "SELECT MAX({year} - {born})\nFROM {MP}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {type} = {medal}",
        player=a.name, t=m.tournament, medal="Medal" + m.colour),
        {"tournament": m.tournament, "colour": m.colour})


AGE_BANDS = ((20, 23), (24, 27), (28, 29), (20, 29), (30, 39), (18, 21), (25, 30))


@question_type("medals_in_age_band", "medium")
def _q_medals_in_age_band(a: Athlete, rng: _Rng):
    lo, hi = rng.choice(AGE_BANDS)
    n = sum(lo <= a.age(m.year) <= hi for m in a.medals)
    if _thin_zero(rng, n):
        return None
    text = f"How many medals did {a.name} win between the ages of {lo} and {hi}, {AGE_NOTE}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {MP}\n"
        "WHERE {ath} = {player} AND {year} - {born} BETWEEN {lo} AND {hi}",
        player=a.name, lo=lo, hi=hi), {"age_from": lo, "age_to": hi})


@question_type("colour_between_years", "medium")
def _q_colour_between_years(a: Athlete, rng: _Rng):
    years = _years(a)
    y1, y2 = sorted(rng.sample(range(years[0], years[-1] + 1), 2))
    c = rng.choice(COLOURS)
    n = sum(m.colour == c and y1 <= m.year <= y2 for m in a.medals)
    if _thin_zero(rng, n):
        return None
    text = f"How many {c.lower()} medals did {a.name} win from {y1} to {y2}, both years included?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {type} = {medal}\n"
        "  AND {year} BETWEEN {y1} AND {y2}", player=a.name, medal="Medal" + c, y1=y1, y2=y2),
        {"colour": c, "year_from": y1, "year_to": y2})


@question_type("count_before_year_at_tournament", "medium")
def _q_count_before_year_at_tournament(a: Athlete, rng: _Rng):
    t = rng.choice(a.tournament_order)
    years = sorted({m.year for m in a.medals if m.tournament == t})
    y = rng.choice(years) + (rng.randint(0, 1) if rng.random() < 0.5 else 0)
    n = sum(m.tournament == t and m.year < y for m in a.medals)
    if _thin_zero(rng, n):
        return None
    text = f"How many medals had {a.name} won at the {t} before {y}?"
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM {M}\nWHERE {ath} = {player} AND {tour} = {t} AND {year} < {y}",
        player=a.name, t=t, y=y), {"tournament": t, "year": y})


_MORE_SQL = ("SELECT CASE WHEN SUM({type} = {c1}) > SUM({type} = {c2}) THEN 'Yes' ELSE 'No' END\n"
             "FROM {M}\nWHERE {ath} = {player}")


@question_type("more_colour_than_colour", "medium")
def _q_more_colour_than_colour(a: Athlete, rng: _Rng):
    c1, c2 = rng.sample(COLOURS, 2)
    counts = Counter(m.colour for m in a.medals)
    text = f"Does {a.name} have more {c1.lower()} medals than {c2.lower()} medals?"
    return Spec(text, "Yes" if counts[c1] > counts[c2] else "No",
                _sql(_MORE_SQL, player=a.name, c1="Medal" + c1, c2="Medal" + c2),
                {"colour1": c1, "colour2": c2})


@question_type("more_colour_than_colour_at_tournament", "medium")
def _q_more_colour_than_colour_at_tournament(a: Athlete, rng: _Rng):
    c1, c2 = rng.sample(COLOURS, 2)
    t = rng.choice(a.tournament_order)
    counts = Counter(m.colour for m in a.medals if m.tournament == t)
    text = f"At the {t}, has {a.name} won more {c1.lower()} medals than {c2.lower()} medals?"
    return Spec(text, "Yes" if counts[c1] > counts[c2] else "No",
                _sql(_MORE_SQL + " AND {tour} = {t}", player=a.name, c1="Medal" + c1,
                     c2="Medal" + c2, t=t), {"colour1": c1, "colour2": c2, "tournament": t})


@question_type("career_span", "medium")
def _q_career_span(a: Athlete, rng: _Rng):
    years = _years(a)
    text = f"How many years passed between {a.name}'s first medal and most recent medal?"
    return Spec(text, str(years[-1] - years[0]), _sql(
        "SELECT MAX({year}) - MIN({year})\nFROM {M}\nWHERE {ath} = {player}", player=a.name))


@question_type("twenties_vs_thirties", "medium")
def _q_twenties_vs_thirties(a: Athlete, rng: _Rng):
    ages = [a.age(m.year) for m in a.medals]
    twenties, thirties = sum(20 <= x <= 29 for x in ages), sum(30 <= x <= 39 for x in ages)
    if thirties == 0 and rng.random() < 0.6:
        return None
    text = (f"Did {a.name} win more medals in their twenties than in their thirties, {AGE_NOTE}?")
    return Spec(text, "Yes" if twenties > thirties else "No", _sql(
        "SELECT CASE WHEN SUM({year} - {born} BETWEEN 20 AND 29)\n"
        "               > SUM({year} - {born} BETWEEN 30 AND 39) THEN 'Yes' ELSE 'No' END\n"
        "FROM {MP}\nWHERE {ath} = {player}", player=a.name))


@question_type("medal_sequence", "medium")
def _q_medal_sequence(a: Athlete, rng: _Rng):
    seqs = [(k, v) for k, v in sorted(_sequences(a).items())
            if len(v) >= 3 and len({m.colour for m in v}) >= 2]
    if not seqs:
        return None
    (t, e), seq = rng.choice(seqs)
    text = f"List the colours of {a.name}'s medals in the {e} at the {t}, in year order."
    return Spec(text, _join(m.colour for m in seq), _sql(
        "SELECT REPLACE({type}, 'Medal', '')\nFROM {M}\n"
        "WHERE {ath} = {player} AND {tour} = {t} AND {event} = {e}\n"
        "ORDER BY {year}", player=a.name, t=t, e=e), {"tournament": t, "event": e})


# --- hard: argmax over groups, window functions, self-joins


def _argmax_spec(a: Athlete, rng: _Rng, key: str, counter: Counter, text: str, where: str = "",
                 select: str | None = None, **params):
    best = _unique_argmax(counter)
    if best is None:
        return None
    return Spec(text, str(best), _sql(
        "SELECT " + (select or "{" + key + "}") + "\nFROM {M}\nWHERE {ath} = {player}" + where +
        "\nGROUP BY {" + key + "}\nORDER BY COUNT(*) DESC\nLIMIT 1", player=a.name, **params))


@question_type("best_year", "hard")
def _q_best_year(a: Athlete, rng: _Rng):
    text = rng.choice([f"In which year did {a.name} win the most medals?",
                       f"What was {a.name}'s most productive year by number of medals?"])
    return _argmax_spec(a, rng, "year", Counter(m.year for m in a.medals), text)


@question_type("best_gold_year", "hard")
def _q_best_gold_year(a: Athlete, rng: _Rng):
    text = f"In which year did {a.name} win the most gold medals?"
    return _argmax_spec(a, rng, "year", Counter(m.year for m in a.medals if m.colour == "Gold"),
                        text, where=" AND {type} = 'MedalGold'")


@question_type("best_event", "hard")
def _q_best_event(a: Athlete, rng: _Rng):
    text = f"In which event has {a.name} won the most medals, over all tournaments?"
    return _argmax_spec(a, rng, "event", Counter(m.event for m in a.medals), text)


@question_type("best_city", "hard")
def _q_best_city(a: Athlete, rng: _Rng):
    text = f"Which city has been the most successful for {a.name}, by number of medals won there?"
    return _argmax_spec(a, rng, "city", Counter(m.city for m in a.medals), text)


@question_type("best_tournament", "hard")
def _q_best_tournament(a: Athlete, rng: _Rng):
    text = f"At which tournament has {a.name} won the most medals?"
    return _argmax_spec(a, rng, "tour", Counter(m.tournament for m in a.medals), text)


@question_type("top_colour", "hard")
def _q_top_colour(a: Athlete, rng: _Rng):
    text = f"Which medal colour has {a.name} won most often: gold, silver or bronze?"
    return _argmax_spec(a, rng, "type", Counter(m.colour for m in a.medals), text,
                        select="REPLACE({type}, 'Medal', '')")


@question_type("quietest_years", "hard")
def _q_quietest_years(a: Athlete, rng: _Rng):
    per_year = Counter(m.year for m in a.medals)
    low = min(per_year.values())
    if low == max(per_year.values()):
        return None
    years = sorted(y for y, n in per_year.items() if n == low)
    text = f"In which of the years when {a.name} won medals did they win the fewest?"
    return Spec(text, _join(years), _sql(
        "WITH per_year AS (\n  SELECT {year} AS year, COUNT(*) AS n\n  FROM {M}\n"
        "  WHERE {ath} = {player}\n  GROUP BY {year}\n)\n"
        "SELECT year FROM per_year\nWHERE n = (SELECT MIN(n) FROM per_year)\nORDER BY year",
        player=a.name))


_LAGGED = ("  SELECT {type} AS medal,\n"
           "         LAG({type}, 1) OVER (PARTITION BY {tour}, {event} ORDER BY {year}) AS prev1,\n"
           "         LAG({type}, 2) OVER (PARTITION BY {tour}, {event} ORDER BY {year}) AS prev2\n"
           "  FROM {M}\n  WHERE {ath} = {player}")


def _windows(a: Athlete, size: int):
    for seq in _sequences(a).values():
        colours = [m.colour for m in seq]
        for i in range(size - 1, len(colours)):
            yield colours[i - size + 1:i + 1]


def _lag_count_spec(a: Athlete, rng: _Rng, n: int, text: str, condition: str):
    if _thin_zero(rng, n, keep=0.3):
        return None
    return Spec(text, str(n), _sql(
        "SELECT COUNT(*)\nFROM (\n" + _LAGGED + "\n)\nWHERE " + condition, player=a.name))


@question_type("colour_changes", "hard")
def _q_colour_changes(a: Athlete, rng: _Rng):
    n = sum(x != y for x, y in _windows(a, 2))
    text = (SEQ_NOTE.format(name=a.name) +
            ", how many times was a medal a different colour from the one before it?")
    return _lag_count_spec(a, rng, n, text, "prev1 IS NOT NULL AND medal <> prev1")


@question_type("gold_then_lower", "hard")
def _q_gold_then_lower(a: Athlete, rng: _Rng):
    n = sum(x == "Gold" and y != "Gold" for x, y in _windows(a, 2))
    text = (SEQ_NOTE.format(name=a.name) +
            ", how many times was a gold medal followed by a silver or bronze?")
    return _lag_count_spec(a, rng, n, text, "prev1 = 'MedalGold' AND medal <> 'MedalGold'")


@question_type("gold_lower_gold", "hard")
def _q_gold_lower_gold(a: Athlete, rng: _Rng):
    n = sum(w[0] == "Gold" and w[1] != "Gold" and w[2] == "Gold" for w in _windows(a, 3))
    text = (SEQ_NOTE.format(name=a.name) +
            ", how many times did three consecutive medals go gold, then silver or bronze, "
            "then gold again?")
    return _lag_count_spec(a, rng, n, text,
                           "prev2 = 'MedalGold' AND prev1 <> 'MedalGold' AND medal = 'MedalGold'")


@question_type("bronze_silver_gold", "hard")
def _q_bronze_silver_gold(a: Athlete, rng: _Rng):
    n = sum(w == ["Bronze", "Silver", "Gold"] for w in _windows(a, 3))
    text = (SEQ_NOTE.format(name=a.name) +
            ", how many times did three consecutive medals go bronze, silver, gold?")
    return _lag_count_spec(
        a, rng, n, text, "prev2 = 'MedalBronze' AND prev1 = 'MedalSilver' AND medal = 'MedalGold'")


_RANKED = ("WITH ranked AS (\n"
           "  SELECT {tour} AS tournament, {event} AS event, {year} AS year,\n"
           "         CASE {type} WHEN 'MedalGold' THEN 3 WHEN 'MedalSilver' THEN 2 ELSE 1 END\n"
           "           AS rank\n"
           "  FROM {M}\n  WHERE {ath} = {player}\n)\n")


@question_type("improved_events", "hard")
def _q_improved_events(a: Athlete, rng: _Rng):
    n = sum(any(RANK[seq[j].colour] > RANK[seq[i].colour]
                for i in range(len(seq)) for j in range(i + 1, len(seq)))
            for seq in _sequences(a).values())
    if _thin_zero(rng, n, keep=0.3):
        return None
    text = (f"In how many events, counting each event at each tournament separately, did "
            f"{a.name} later win a better colour than a medal won there earlier?")
    return Spec(text, str(n), _sql(
        _RANKED + "SELECT COUNT(*) FROM (\n  SELECT DISTINCT e1.tournament, e1.event\n"
        "  FROM ranked e1\n"
        "  JOIN ranked e2 ON e2.tournament = e1.tournament AND e2.event = e1.event\n"
        "   AND e2.year > e1.year AND e2.rank > e1.rank\n)", player=a.name))


@question_type("full_set_span", "hard")
def _q_full_set_span(a: Athlete, rng: _Rng):
    spans = []
    for seq in _sequences(a).values():
        by = {c: [m.year for m in seq if m.colour == c] for c in COLOURS}
        spans += [max(g, s, b) - min(g, s, b)
                  for g in by["Gold"] for s in by["Silver"] for b in by["Bronze"]]
    if not spans:
        return None
    text = (f"Within a single event at a single tournament, what is the shortest span of years "
            f"over which {a.name} won a gold, a silver and a bronze medal?")
    return Spec(text, str(min(spans)), _sql(
        "WITH won AS (\n"
        "  SELECT {tour} AS tournament, {event} AS event, {type} AS medal, {year} AS year\n"
        "  FROM {M}\n  WHERE {ath} = {player}\n)\n"
        "SELECT MIN(MAX(g.year, s.year, b.year) - MIN(g.year, s.year, b.year))\n"
        "FROM won g\n"
        "JOIN won s ON s.tournament = g.tournament AND s.event = g.event\n"
        "  AND s.medal = 'MedalSilver'\n"
        "JOIN won b ON b.tournament = g.tournament AND b.event = g.event\n"
        "  AND b.medal = 'MedalBronze'\n"
        "WHERE g.medal = 'MedalGold'", player=a.name))


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class _Item:
    """A schema-independent generated question."""

    index: int
    question_type: str
    difficulty: str
    question: str
    answer: str
    context: str
    sql: tuple[tuple[str, str], ...]
    params: tuple
    athlete: str
    sport: str


@lru_cache(maxsize=16)
def _generate(split: str, seed: int, size: int) -> tuple[_Item, ...]:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset 'generated'; "
                           f"available: {list(SPLITS)}")
    if size < 0:
        raise DatasetError(f"size must be >= 0, got {size}")
    start, stop = _pool_slice(split)
    names = name_pool()[start:stop]
    used: Counter = Counter()
    items: list[_Item] = []
    for k, (sex, name) in enumerate(names):
        if len(items) >= size:
            break
        athlete = make_athlete(_Rng("athlete", seed, split, k), sex, name)
        context = render_infobox(athlete)
        qrng = _Rng("questions", seed, split, k)
        candidates = {}
        for qtype, (difficulty, builder) in QUESTION_TYPES.items():
            spec = builder(athlete, qrng)
            if spec is not None:
                candidates[qtype] = (difficulty, spec)
        # Least-used kinds first, random tie-break: keeps the kinds balanced within a split.
        order = sorted(candidates, key=lambda q: (used[q], qrng.random()))
        for qtype in order[:QUESTIONS_PER_ATHLETE]:
            if len(items) >= size:
                break
            difficulty, spec = candidates[qtype]
            used[qtype] += 1
            items.append(_Item(len(items), qtype, difficulty, spec.question, spec.answer, context,
                               tuple(sorted(spec.sql.items())), tuple(sorted(spec.params.items())),
                               athlete.name, athlete.sport))
    else:
        if len(items) < size:
            raise DatasetError(f"split {split!r} of 'generated' holds at most {len(items)} "
                               f"questions ({QUESTIONS_PER_ATHLETE} per athlete); asked for {size}")
    return tuple(items)


def generate_examples(split: str, seed: int = 0, size: int | None = None,
                      schema: str = "tables") -> list[Example]:
    """The questions of one split as Examples whose ``gold_sql`` is written for ``schema``."""
    if schema not in infobox.SCHEMAS:
        raise DatasetError(f"unknown schema {schema!r}; available: {list(infobox.SCHEMAS)}")
    if size is None:
        size = SPLIT_SIZES.get(split, 0)
    examples = []
    for item in _generate(split, int(seed), int(size)):
        sql = dict(item.sql)
        examples.append(Example(
            id=f"generated-{split}-{seed}-{item.index:05d}", question=item.question,
            answer=item.answer, db_key=infobox.context_key(item.context),
            question_type=item.question_type, difficulty=item.difficulty, context=item.context,
            gold_sql=sql[schema],
            metadata={"athlete": item.athlete, "sport": item.sport, "params": dict(item.params),
                      "gold_sql_tables": sql["tables"], "gold_sql_flat": sql["flat"],
                      "seed": seed, "ordered": item.question_type in ORDERED_TYPES}))
    return examples


class GeneratedDataset(Dataset):
    """A split of the built-in benchmark; databases are built from each example's infobox text."""

    name = "generated"

    def __init__(self, examples: Sequence[Example], split: str, schema: str = "tables",
                 seed: int = 0):
        super().__init__(examples)
        self.split = split
        self.schema = schema
        self.seed = seed

    def database(self, example: Example) -> Path:
        return infobox.database_for_context(example.context, self.schema)

    def match(self, example: Example, rows):
        """The default matcher; in the gold's order for :data:`ORDERED_TYPES` questions."""
        return match_answer(rows, example.answer, ordered=bool(example.metadata.get("ordered")))


def load_generated(split: str = "train", data_dir=None, schema: str = "tables", seed: int = 0,
                   size: int | None = None) -> GeneratedDataset:
    """Loader for ``load_dataset("generated", split, schema=..., seed=0, size=None)``.

    ``data_dir`` is ignored (nothing is read); ``size`` defaults to SPLIT_SIZES[split].
    """
    return GeneratedDataset(generate_examples(split, seed=seed, size=size, schema=schema),
                            split=split, schema=schema, seed=seed)


register_dataset("generated", load_generated, SPLITS)
