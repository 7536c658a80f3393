"""Collapse monitors: signs that a policy games the reward instead of answering, from scored queries.

Each monitor is a share of all the records given (so the shares of one batch can be read side by side
with its accuracy and failing share); a record is one scored query, as the env's ``info`` or
``benchmarks/evaluate.py``'s per-question record carries it: ``sql``, ``error`` (None when it
executed), ``prediction`` (its result as an answer string, rows joined by ", "), ``answer`` (the
gold), ``question`` (its text; ``index`` stands in as the question's identity when it is missing) and
``reads_table`` (the env's: False when the query read no table of the database).

==================  ======================================================================================
``floor``           executed queries whose answer is a constant floor: ``0``, empty, ``None`` (a count
                    over nothing, ``SELECT 0``, an aggregate over no rows); ``floor_gold`` is the share
                    of records whose *gold* is such a floor, the level an honest policy can reach
``floor_text``      floor answers where the gold is not a number (a count of nothing answering "which
                    city", "list the formats"): the part of ``floor`` that no miscount explains. A floor
                    answer to a count question is mostly a filter whose literal misses the data (a
                    tournament spelt otherwise): wrong, but an attempt at the question
``repeated``        queries identical (whitespace and case normalised) to a query given for another
                    question of the same batch; no query (``sql`` empty: a completion without SQL, a
                    multi-turn episode that never answered) is no repeat
``top_template``    queries sharing the batch's most frequent template (string and number literals
                    masked) across different questions; the template itself is reported with it
``example_entity``  queries naming an entity of the prompt's worked examples (``sqlenv/prompts.py``:
                    "Anna Berg") that the question does not name
``list_for_one``    executed queries returning more than one value where the gold is one value
``literal``         queries that answered without reading any table of the database (``SELECT '16'``,
                    ``SELECT 0``, a CTE of constants: ``reads_table`` False, :mod:`sqlenv.literal`),
                    also when the env scored them as unanswered (error ``literal``); a record without
                    ``reads_table`` (one written before the field existed) counts as reading a table
==================  ======================================================================================

Nothing here imports torch; the worked examples' entity names are read from ``sqlenv.prompts``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Any, Iterable, Sequence

from sqlenv.literal import LITERAL
from sqlenv.matching import is_floor_answer
from sqlenv.prompts import WORKED_EXAMPLES

#: Every monitor, with its label in a report's table (``benchmarks/evaluate.py``); ``monitor_metrics`` (the
#: trainer's metrics) reports each, and the curves plot each but the reference levels.
LABELS = {"floor": "Floor answers (0, empty, None)", "floor_text": "Floor answers where the gold is not a number",
          "floor_gold": "Gold is a floor answer", "repeated": "Query repeated across questions",
          "top_template": "Most frequent template", "example_entity": "Names a worked example's entity",
          "list_for_one": "List where one value asked", "literal": "Reads no table (literal answer)"}
#: Every monitor's name, in the tables' order.
MONITORS = tuple(LABELS)
#: Monitors of the golds, not of the policy: the level an honest policy reaches (no sign of collapse by itself).
REFERENCE_LEVELS = ("floor_gold",)
#: What the monitors read of a record (a record that carries more is fine); keep these when shipping records.
RECORD_FIELDS = ("index", "question", "sql", "error", "prediction", "answer", "reads_table")

# The worked examples name their athlete in the athlete column (flat schema) or Athlete.name (tables).
_ATHLETE_LITERAL = re.compile(r"\b(?:athlete|a\.name)\s*=\s*'((?:[^']|'')+)'", re.IGNORECASE)
_STRING = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


@lru_cache(maxsize=1)
def example_entities() -> tuple[str, ...]:
    """The athletes the prompt's worked examples name (both schemas), read from ``sqlenv.prompts``."""
    found = {m.group(1).replace("''", "'") for examples in WORKED_EXAMPLES.values()
             for example in examples for m in _ATHLETE_LITERAL.finditer(example.sql)}
    return tuple(sorted(found))


def normalize_sql(sql: Any) -> str:
    """Whitespace collapsed, case folded, a trailing semicolon dropped: ``SELECT  0;`` == ``select 0``."""
    return " ".join(str(sql or "").split()).rstrip(";").strip().casefold()


def sql_template(sql: Any) -> str:
    """The normalised query with string literals as ``?`` and numbers as ``#``."""
    return _NUMBER.sub("#", _STRING.sub("?", normalize_sql(sql)))


def answer_items(answer: Any) -> list[str]:
    """The comma-separated items of an answer string (as the dataset's EMS splits them); [] when empty."""
    text = str(answer if answer is not None else "").strip()
    return [part.strip() for part in text.split(",")] if text else []


def _is_number(answer: Any) -> bool:
    try:
        float(str(answer).strip())
    except ValueError:
        return False
    return True


def _question_key(record: dict, position: int):
    for key in ("question", "index", "id"):
        if record.get(key) not in (None, ""):
            return key, record[key]
    return "position", position


def _names_example_entity(record: dict, entities: Sequence[str]) -> bool:
    sql, question = str(record.get("sql") or "").casefold(), str(record.get("question") or "").casefold()
    return any(e.casefold() in sql and e.casefold() not in question for e in entities)


def collapse_monitors(records: Sequence[dict], entities: Iterable[str] | None = None) -> dict[str, Any]:
    """The monitors of a batch of scored queries: ``{name: share in [0, 1]}`` plus ``top_template_sql``.

    ``entities``: the worked examples' entity names (default: :func:`example_entities`).
    An empty batch gives shares of 0.
    """
    entities = tuple(example_entities() if entities is None else entities)
    n = len(records)
    if not n:
        return {**{name: 0.0 for name in LABELS}, "top_template_sql": ""}
    executed = [r.get("error") is None for r in records]
    questions = [_question_key(r, i) for i, r in enumerate(records)]

    asked_by: dict[str, set] = defaultdict(set)  # normalised query -> the questions it was given for
    template_by: dict[str, set] = defaultdict(set)
    for r, q in zip(records, questions):
        asked_by[normalize_sql(r.get("sql"))].add(q)
        template_by[sql_template(r.get("sql"))].add(q)
    repeated = sum(bool(q) and len(asked_by[q]) > 1 for q in (normalize_sql(r.get("sql")) for r in records))
    templates = Counter(sql_template(r.get("sql")) for r in records)
    across = [t for t in templates if t and len(template_by[t]) > 1]
    top = max(across, key=lambda t: (templates[t], t), default="")

    floor = sum(ok and is_floor_answer(r.get("prediction")) for ok, r in zip(executed, records))
    floor_text = sum(ok and is_floor_answer(r.get("prediction")) and not _is_number(r.get("answer"))
                     for ok, r in zip(executed, records))
    floor_gold = sum(is_floor_answer(r.get("answer")) for r in records)
    entity = sum(_names_example_entity(r, entities) for r in records)
    list_for_one = sum(ok and len(answer_items(r.get("prediction"))) > 1 and len(answer_items(r.get("answer"))) == 1
                       for ok, r in zip(executed, records))
    literal = sum(r.get("reads_table") is False and r.get("error") in (None, LITERAL) for r in records)
    return {
        "floor": floor / n,
        "floor_text": floor_text / n,
        "floor_gold": floor_gold / n,
        "repeated": repeated / n,
        "top_template": (templates[top] / n) if top else 0.0,
        "example_entity": entity / n,
        "list_for_one": list_for_one / n,
        "literal": literal / n,
        "top_template_sql": top,
    }


def monitor_metrics(prefix: str, records: Sequence[dict], entities: Iterable[str] | None = None) -> dict[str, float]:
    """:func:`collapse_monitors` as flat metrics ``<prefix>/collapse/<name>`` (the shares only; an empty
    ``prefix``: ``collapse/<name>``, for a logger that adds its own)."""
    found = collapse_monitors(records, entities)
    return {f"{prefix}/collapse/{name}".lstrip("/"): float(found[name]) for name in LABELS}


def with_questions(infos: Sequence[dict], env) -> list[dict]:
    """The env's ``info`` dicts with each question's text (``env.example(info["index"]).question``);
    an info without an index is left as it is (its index or position then stands for the question)."""
    return [dict(info, question=env.example(int(info["index"])).question) if info.get("index") is not None
            else dict(info) for info in infos]
