"""Compare a SQL result set with a TempTabQA-C gold answer string.

Gold answers are short strings ("2", "Yes", "Gold", "Individual, Team",
"World Championships 2023, World Games 2022"); a query returns rows. This module offers:

- :func:`result_to_answer`: render rows the way gold answers are written.
- :func:`ems`, :func:`rems`: the benchmark's own metrics, with the semantics of the dataset's
  scripts (``Evaluation_Metrics/exact_match_score.py`` and ``relaxed_exact_match_score.py`` in
  CoRAL-ASU/TEMPTABQA-C): both strings are split on commas and stripped; a gold item is found
  when it equals, or appears space-delimited inside, some predicted item; REMS is the fraction of
  gold items found (rounded to 2 places), EMS is 1.0 when all are found. Like the scripts they are
  case-sensitive by default, and they ignore extra predicted items.
- :func:`match_answer`: the default normalised matcher (``MatchResult.correct``), plus EMS, REMS
  and F1 of the rendered result.

The normalised matcher (``correct``)
-------------------------------------
The gold string is split on commas into items (stripped; empty items, from trailing commas,
dropped). The result is read two ways and is correct when either way's items equal the gold
items as a multiset:

- *values*: every value of every row is an item (rows flattened);
- *rows*: a one-column row is an item; a row of several columns is one item that matches a gold
  item written as its values joined by spaces, in any column order
  (``('World Championships', 2023)`` ~ ``"World Championships 2023"``).

A string value holding commas (``GROUP_CONCAT``) is split into items like the gold. Items compare
after normalisation:

- case (casefold), surrounding and repeated whitespace and Unicode form are ignored;
- numbers compare by value: ``2``, ``2.0``, ``'2'`` and ``'2.00'`` are equal (floats are rounded to
  9 decimal places to drop binary noise);
- ``yes``/``true`` and ``no``/``false`` are one value each, in any case. A *number* is never a
  yes/no value: ``COUNT(*) = 0`` does not answer gold ``"No"`` (a measured reward hack); Python
  ``bool`` (never produced by SQLite) counts as yes/no;
- the database's medal types ``MedalGold``/``MedalSilver``/``MedalBronze`` equal the gold's
  ``Gold``/``Silver``/``Bronze``;
- SQL ``NULL`` equals the words ``None``/``null`` and nothing else; it does not equal ``0``
  (``SUM`` over no rows is ``NULL``; a count question wants ``COUNT`` or ``COALESCE``).

Special gold forms, found by surveying every gold answer of every split:

- "<athlete> has not won any <medal> in <tournament>" (types 30, 35, 36: a first/latest medal
  that does not exist) is matched by a result with no non-NULL value: no rows, or NULL rows.
  This is what the gold SQL returns for such questions. An empty result never matches any
  other gold.
- "<year>  <location> <tournament> in <format> format" (type 39, "most recent medal"; the gold
  SQL selects type, year, location, format and tournament) is matched by a row whose values tile
  the item with only the words "in" and "format" left over; a medal-type column may be absent
  from the item.
- Gold lists with repeated items (37 answers: format names that differ only by trailing
  whitespace in the source, e.g. "Men's team, ..., Men's team ") compare as sets.

Duplicated predicted items count: ``('Cairo',), ('Cairo',)`` is not ``"Cairo"``.

Order
-----
By default item order is ignored: TempTabQA-C's list answers are written in no particular order
(``"1972, 1956, 1968"`` for "In which year(s) ..."), and none of the question types in its
splits asks for one. A dataset whose question asks for an order (the built-in benchmark's "in
year order" questions) passes ``ordered=True``: then the items of one reading must equal the
gold items *in sequence* (a multi-column row still matches its gold item in any column order),
the set comparison for repeated gold items is off (``"Gold, Silver, Gold"`` needs all three, in
that order), ``exact`` (EMS) needs the gold items found in order, and ``f1`` counts only the
items of the longest common subsequence, so a reversed list scores low.

F1
--
:func:`f1` is the F1 over normalised items (the better of the two readings above), from a
maximum one-to-one matching: precision = matched / predicted items, recall = matched / gold
items. Returning every row gives high recall but low precision, so it scores low, whereas the
dataset's EMS gives it full marks. ``f1`` is 1.0 exactly when ``correct``. With ``ordered=True``
the matched items are those of the longest common subsequence of predicted and gold items.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import chain
from typing import Any, Iterable, Sequence

__all__ = [
    "FLOOR_ANSWERS", "MatchResult", "ems", "f1", "is_floor_answer", "match_answer", "normalize_item", "rems",
    "result_to_answer",
]

_MEDALS = {"medalgold": "gold", "medalsilver": "silver", "medalbronze": "bronze"}
_MEDAL_DISPLAY = {"MedalGold": "Gold", "MedalSilver": "Silver", "MedalBronze": "Bronze"}
_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
NULL = "\x00null"  # the normalised form of SQL NULL (never a real string)
_NULL_WORDS = {"none", "null"}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_NEGATIVE_GOLD = re.compile(r"\bhas not won any\b", re.IGNORECASE)
_FORMAT_TEMPLATE = re.compile(r"\bin\b.*\bformat$")
_CONNECTIVES = ("in", "format")
#: Cells (predicted units x gold items) the ordered F1 computes before falling back to the
#: unordered one (a long result against a long gold list).
_MAX_LCS_CELLS = 4_000_000
#: The highest F1 a wrong answer gets under ``ordered=True``.
_MAX_WRONG_F1 = 0.99


@dataclass(frozen=True)
class MatchResult:
    """How a result set compares with a gold answer.

    ``correct``: the default normalised matcher (see module docstring); ``exact`` and
    ``relaxed``: the dataset's EMS and REMS of :func:`result_to_answer` against the gold;
    ``f1``: F1 over normalised items (1.0 exactly when ``correct``).
    """

    correct: bool
    exact: float
    relaxed: float
    f1: float


# --------------------------------------------------------------------------- rendering


def _format_number(value: float | int | Decimal) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        value = round(value, 9)
        if value == int(value):
            return str(int(value))
        return repr(value)
    text = format(value.normalize(), "f")  # Decimal
    return "0" if text in ("-0", "+0") else text


def _render_value(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (bool, int, float, Decimal)):
        return _format_number(value)
    text = str(value).strip()
    return _MEDAL_DISPLAY.get(text, text)


#: Rendered answers that are a constant floor: a count over nothing (``0``), no rows (``""``) or an
#: aggregate over no rows (``None``). A query whose filter matches nothing lands here whatever it asked.
FLOOR_ANSWERS = frozenset({"0", "", "none"})


def is_floor_answer(answer: Any) -> bool:
    """Whether a rendered answer (or gold answer string) is a constant floor: ``0``, empty or ``None``.

    >>> is_floor_answer("0"), is_floor_answer(" None "), is_floor_answer(""), is_floor_answer("2")
    (True, True, True, False)
    """
    return str(answer if answer is not None else "").strip().casefold() in FLOOR_ANSWERS


def result_to_answer(rows: Iterable[Sequence[Any]], limit: int | None = None) -> str:
    """Render a result set as an answer string, the way TempTabQA-C writes gold answers.

    Values in a row are joined by a space, rows by ``", "``. Integral numbers lose their
    ``.0`` (``2.0`` -> ``"2"``), ``NULL`` becomes ``"None"``, medal types lose their prefix
    (``MedalGold`` -> ``"Gold"``) and strings are stripped. Rows keep their order and duplicates.
    With ``limit``, rendering stops once the answer is longer than ``limit`` characters: the
    text returned is then the whole answer's first characters, more than ``limit`` of them
    (for a caller that shows a bounded answer; matching always renders it whole).

    >>> result_to_answer([("World Championships", 2023), ("World Games", 2022)])
    'World Championships 2023, World Games 2022'
    >>> result_to_answer([(2.0,)]), result_to_answer([("MedalGold",)]), result_to_answer([])
    ('2', 'Gold', '')
    >>> result_to_answer([(1,), (2,), (3,), (4,)], limit=4)
    '1, 2, 3'
    """
    if limit is None:
        return ", ".join(" ".join(_render_value(v) for v in row) for row in rows)
    parts: list[str] = []
    size = 0
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            text = (", " if r and not c else " " if c else "") + _render_value(value)
            parts.append(text)
            size += len(text)
            if size > limit:
                return "".join(parts)
        if r and not len(row):  # an empty row renders as nothing between its separators
            parts.append(", ")
            size += 2
    return "".join(parts)


# --------------------------------------------------------------------------- EMS / REMS


def _split_items(prediction: str, gold: str, case_sensitive: bool) -> tuple[list[str], list[str]]:
    if not case_sensitive:
        prediction, gold = str(prediction).casefold(), str(gold).casefold()
    predicted = [part.strip() for part in str(prediction).split(",")]
    gold_items = [part.strip() for part in str(gold).split(",")]
    return predicted, gold_items  # str.split always yields at least one item


def _found(g: str, p: str) -> bool:
    return g == p or f" {g} " in f" {p} "


def _found_fraction(prediction: str, gold: str, case_sensitive: bool) -> float:
    predicted, gold_items = _split_items(prediction, gold, case_sensitive)
    found = sum(1 for g in gold_items if any(_found(g, p) for p in predicted))
    return found / len(gold_items)


def _found_in_order(prediction: str, gold: str, case_sensitive: bool) -> bool:
    """Every gold item found, each in a later predicted item than the one before."""
    predicted, gold_items = _split_items(prediction, gold, case_sensitive)
    at = 0
    for g in gold_items:
        while at < len(predicted) and not _found(g, predicted[at]):
            at += 1
        if at == len(predicted):
            return False
        at += 1
    return True


def ems(prediction: str, gold: str, *, case_sensitive: bool = True, ordered: bool = False) -> float:
    """The dataset's exact match score: 1.0 when every gold item is found in the prediction.

    Both strings are split on commas and stripped; a gold item is found when it equals, or
    appears space-delimited inside, some predicted item. Extra predicted items are ignored
    (so a prediction listing everything scores 1.0). Case-sensitive, as the dataset's script;
    pass ``case_sensitive=False`` to fold case. ``ordered=True`` (our extension, for questions
    that ask for an order) also needs the gold items found in the gold's order.

    >>> ems("World Championships 2023, World Games 2022", "World Games 2022")
    1.0
    >>> ems("2", "2, 3")
    0.0
    >>> ems("Silver, Gold", "Gold, Silver"), ems("Silver, Gold", "Gold, Silver", ordered=True)
    (1.0, 0.0)
    """
    if ordered:
        return 1.0 if _found_in_order(prediction, gold, case_sensitive) else 0.0
    return 1.0 if _found_fraction(prediction, gold, case_sensitive) == 1.0 else 0.0


def rems(prediction: str, gold: str, *, case_sensitive: bool = True) -> float:
    """The dataset's relaxed exact match score: the fraction of gold items found (2 places).

    Same item test as :func:`ems`.

    >>> rems("Cairo", "Cairo, Doha, Lima")
    0.33
    """
    return round(_found_fraction(prediction, gold, case_sensitive), 2)


# --------------------------------------------------------------------------- normalisation


def _number_key(value: float | int | Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        value = round(value, 9)
        if value == int(value):
            return str(int(value))
        value = Decimal(repr(value))
    elif isinstance(value, int):
        return str(value)
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "+0", "") else text


def _text_key(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).split()).casefold()
    if not text:
        return ""
    if _NUMBER.fullmatch(text):
        try:
            return _number_key(Decimal(text))
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return text
    if text in _YES_NO:
        return _YES_NO[text]
    if text in _NULL_WORDS:
        return NULL
    return _MEDALS.get(text, text)


def normalize_item(value: Any) -> str:
    """The normalised form of one answer item or SQL value (see the module docstring).

    >>> [normalize_item(v) for v in (2.0, "2.00", " Yes", "TRUE", "MedalGold", "Men's  Team ")]
    ['2', '2', 'yes', 'yes', 'gold', "men's team"]
    >>> normalize_item(0) == normalize_item("No")
    False
    """
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, Decimal)):
        return _number_key(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="replace")
    return _text_key(str(value))


def _gold_items(gold: str) -> list[str]:
    return [key for key in (normalize_item(p) for p in str(gold).split(",")) if key != ""]


def _value_items(value: Any) -> list[str]:
    """A value as items: strings with commas (GROUP_CONCAT) split like gold answers."""
    if isinstance(value, str) and "," in value:
        parts = [normalize_item(p) for p in value.split(",")]
        return [p for p in parts if p != ""] or [""]
    return [normalize_item(value)]


# --------------------------------------------------------------------------- row tiling


def _tile(
    item: str, values: Sequence[str], optional: Sequence[str], leftover: Sequence[str]
) -> bool:
    """Whether ``values`` (each once, longest first) tile ``item``'s words, leaving ``leftover``.

    ``optional`` values may be used or not. Words compare after normalisation.
    """
    words = [normalize_item(w) for w in item.split()]
    for value, required in sorted(
        chain(((v, True) for v in values), ((v, False) for v in optional)),
        key=lambda pair: -len(pair[0].split()),
    ):
        needle = [normalize_item(w) for w in value.split()]
        n = len(needle)
        for start in range(len(words) - n + 1):
            if words[start:start + n] == needle:
                words[start:start + n] = [None] * n  # consumed
                break
        else:
            if required:
                return False
    return sorted(w for w in words if w is not None) == sorted(leftover)


def _row_matches(row_keys: Sequence[str], item: str) -> bool:
    """A multi-column row against one normalised gold item."""
    if NULL in row_keys:
        return False
    if _tile(item, row_keys, (), ()):
        return True
    if _FORMAT_TEMPLATE.search(item):
        plain = [k for k in row_keys if k not in _MEDALS.values()]
        medals = [k for k in row_keys if k in _MEDALS.values()]
        return bool(plain) and _tile(item, plain, medals, _CONNECTIVES)
    return False


def _words_signature(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(normalize_item(w) for k in keys for w in k.split()))


# --------------------------------------------------------------------------- matching


def _max_matching(candidates: list[list[int]]) -> int:
    """Size of a maximum matching; ``candidates[g]``: the predicted units gold item g may take."""
    owner: dict[int, int] = {}

    def augment(g: int, seen: set[int]) -> bool:
        for u in candidates[g]:
            if u in seen:
                continue
            seen.add(u)
            if u not in owner or augment(owner[u], seen):
                owner[u] = g
                return True
        return False

    return sum(1 for g in range(len(candidates)) if augment(g, set()))


def _values_matched(rows: Sequence[Sequence[Any]], gold: list[str]) -> tuple[int, int]:
    """(matched, predicted) items when every value of every row is an item."""
    predicted = Counter(chain.from_iterable(_value_items(v) for row in rows for v in row))
    wanted = Counter(gold)
    return sum((predicted & wanted).values()), sum(predicted.values())


def _rows_matched(rows: Sequence[Sequence[Any]], gold: list[str]) -> tuple[int, int]:
    """(matched, predicted) items when each row is an item (multi-column rows tile a gold item)."""
    by_key: dict[str, list[int]] = {}
    by_words: dict[tuple[str, ...], list[int]] = {}
    multi: list[list[str]] = []
    n_units = 0
    for row in rows:
        if len(row) == 1:
            for key in _value_items(row[0]):
                by_key.setdefault(key, []).append(n_units)
                n_units += 1
        elif len(row) > 1:
            keys = [normalize_item(v) for v in row]
            multi.append(keys)
            by_words.setdefault(_words_signature(keys), []).append(n_units)
            n_units += 1
        # a zero-column row is not an item
    if not multi:
        matched = sum((Counter({k: len(v) for k, v in by_key.items()}) & Counter(gold)).values())
        return matched, n_units
    first_multi = n_units - len(multi)
    unit_keys = {first_multi + i: keys for i, keys in enumerate(multi)}
    by_words_plain: dict[tuple[str, ...], list[int]] = {}
    for unit, keys in unit_keys.items():
        plain = [k for k in keys if k not in _MEDALS.values()]
        by_words_plain.setdefault(_words_signature(plain), []).append(unit)
    candidates: list[list[int]] = []
    for item in gold:
        options = list(by_key.get(item, ()))
        signature = _words_signature([item])
        pool = list(by_words.get(signature, ()))
        if _FORMAT_TEMPLATE.search(item):
            words = list(signature)
            for connective in _CONNECTIVES:
                if connective in words:
                    words.remove(connective)
            pool += by_words_plain.get(tuple(words), [])
        options += [u for u in dict.fromkeys(pool) if _row_matches(unit_keys[u], item)]
        candidates.append(options)
    return _max_matching(candidates), n_units


def _is_empty(rows: Sequence[Sequence[Any]]) -> bool:
    return all(v is None for row in rows for v in row)


def _item_equal(unit: str, item: str) -> bool:
    return unit == item


def _unit_matches(unit: str | list[str], item: str) -> bool:
    """A predicted unit (one key, or a multi-column row's keys) against one gold item."""
    if isinstance(unit, str):
        return unit == item
    return _row_matches(unit, item)  # values tile the item, in any column order


def _ordered_units(rows: Sequence[Sequence[Any]]) -> tuple[list[str], list]:
    """The two readings of ``rows`` as item sequences: (values flattened, rows as units)."""
    values = [key for row in rows for v in row for key in _value_items(v)]
    units: list = []
    for row in rows:
        if len(row) == 1:
            units.extend(_value_items(row[0]))
        elif len(row) > 1:
            units.append([normalize_item(v) for v in row])
    return values, units


def _lcs(units: Sequence, items: Sequence[str], equal) -> int:
    """Longest common subsequence of ``units`` and ``items`` under ``equal(unit, item)``."""
    previous = [0] * (len(items) + 1)
    for unit in units:
        current = [0]
        for j, item in enumerate(items):
            if equal(unit, item):
                current.append(previous[j] + 1)
            else:
                current.append(max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _score_ordered(rows: Sequence[Sequence[Any]], items: list[str]) -> tuple[bool, float]:
    """(correct, f1) when item order counts (``ordered=True``)."""
    best_f1 = 0.0
    values, units = _ordered_units(rows)
    for sequence, equal in ((values, _item_equal), (units, _unit_matches)):
        if len(sequence) == len(items) and all(equal(u, g) for u, g in zip(sequence, items)):
            return True, 1.0
        if not sequence:
            continue
        if len(sequence) * len(items) > _MAX_LCS_CELLS:  # too long to align: unordered F1
            unordered = _values_matched if sequence is values else _rows_matched
            matched, _ = unordered(rows, items)
        else:
            matched = _lcs(sequence, items, equal)
        if matched:
            precision, recall = matched / len(sequence), matched / len(items)
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return False, min(best_f1, _MAX_WRONG_F1)



def _score(rows: Sequence[Sequence[Any]], gold: str, ordered: bool = False) -> tuple[bool, float]:
    """(correct, f1) of the normalised matcher."""
    items = _gold_items(gold)
    if not items or _NEGATIVE_GOLD.search(str(gold)):
        if _is_empty(rows):
            return True, 1.0
        if not items:
            return False, 0.0
    if ordered:
        return _score_ordered(rows, items)
    best_f1 = 0.0
    for matched, predicted in (_values_matched(rows, items), _rows_matched(rows, items)):
        if matched == len(items) == predicted:
            return True, 1.0
        if matched:
            precision, recall = matched / predicted, matched / len(items)
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    if len(set(items)) < len(items):  # gold repeats an item: compare as sets
        wanted = sorted(set(items))
        for matched, predicted in (
            _values_matched(_distinct(rows, by_value=True), wanted),
            _rows_matched(_distinct(rows, by_value=False), wanted),
        ):
            if matched == len(wanted) == predicted:
                return True, 1.0
    return False, best_f1  # < 1.0: F1 is 1.0 only when matched == predicted == gold items


def _distinct(rows: Sequence[Sequence[Any]], *, by_value: bool) -> list[tuple]:
    """Rows with repeated items removed (after normalisation), for set comparison.

    ``by_value``: every value becomes a one-item row; otherwise one-column rows are deduplicated
    by item and multi-column rows by their normalised values.
    """
    seen: set = set()
    out: list[tuple] = []
    for row in rows:
        if by_value or len(row) == 1:
            for key in chain.from_iterable(_value_items(v) for v in row):
                if key not in seen:
                    seen.add(key)
                    out.append((key,))
        else:
            keys = tuple(normalize_item(v) for v in row)
            if keys not in seen:
                seen.add(keys)
                out.append(tuple(row))
    return out


def _as_rows(rows: Iterable[Sequence[Any]] | None) -> list[tuple]:
    if rows is None:
        return []
    return [tuple(row) for row in rows]


def f1(rows: Iterable[Sequence[Any]], gold: str, *, ordered: bool = False) -> float:
    """F1 over normalised items of ``rows`` against ``gold`` (1.0 exactly when ``correct``).

    >>> round(f1([("Cairo",), ("Doha",), ("Lima",), ("Oslo",)], "Cairo"), 2)
    0.4
    """
    return _score(_as_rows(rows), gold, ordered)[1]


def match_answer(rows: Iterable[Sequence[Any]], gold: str, *, ordered: bool = False) -> MatchResult:
    """Compare a result set with a gold answer: the normalised verdict, EMS, REMS and F1.

    ``ordered=True`` for a question that asks for an order: the items must come in the gold's
    order (see the module docstring, "Order").

    >>> match_answer([("World Championships", 2023.0)], "World Championships 2023")
    MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0)
    >>> match_answer([(0,)], "No").correct
    False
    >>> match_answer([("Silver",), ("Gold",)], "Gold, Silver", ordered=True).correct
    False
    """
    rows = _as_rows(rows)
    correct, f1_score = _score(rows, gold, ordered)
    prediction = result_to_answer(rows)
    return MatchResult(
        correct=correct,
        exact=ems(prediction, gold, ordered=ordered),
        relaxed=rems(prediction, gold),
        f1=f1_score,
    )
