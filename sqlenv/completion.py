"""From a model's completion to the SQL the env scores: the one extractor every path uses.

The other half of the text protocol, what the model reads before it writes, is :mod:`sqlenv.prompts`.

The trainer (``agents.policy``), the TRL reward (:mod:`sqlenv.integrations.trl`), verifiers and
SkyRL all call :func:`extract_sql`, so one completion becomes the same query everywhere. The rules,
in order (the first that finds a query wins)::

    1. the text starts with a statement (SELECT, a CTE ``WITH name AS (``, INSERT, DROP, ...,
       the keyword followed by a space or ``(``): that bare statement (a prompt that pre-filled
       the opening fence, or a bare answer);
    2. each ```-fenced block in order (```sql, ```sqlite, bare ```; an unclosed last fence runs
       to the end): a block that starts with a statement (after SQL comments) is that statement;
       otherwise the bare statement from the block's first SELECT or CTE;
    3. the bare statement from the first SELECT or CTE anywhere in the text.

A fenced statement ends at its first ``;`` (or the fence). A bare statement also ends at a blank
line (unless the next line goes on with an upper-case clause such as ``FROM``, ``WHERE``, ``JOIN``,
``UNION`` or with ``)`` / ``,``), a code fence or a closing ``</sql>`` / ``</answer>`` tag, so
trailing prose or a tag is dropped. ``;`` and blank lines inside string literals, quoted
identifiers and comments do not end a statement. In prose, ``with`` counts only as a CTE (``I went
with ...`` is not a query). Nothing is found: ``""``. Every step is a single forward scan, linear
in the text's length.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["completion_text", "extract_sql", "statement_end"]

_FENCE = "```"
_FENCE_OPEN = re.compile(r"```[ \t]*(?:[A-Za-z0-9_+-]+[ \t]*)?\r?\n?")
_KEYWORDS = ("SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|ATTACH|DETACH|VALUES|"
             "EXPLAIN|VACUUM")
# A CTE: WITH [RECURSIVE] name [(columns)] AS ( -- never two adjacent \s* (linear on long spaces).
_CTE = r"WITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^()]*\)\s*)?AS\s*\("
# At the very start: a keyword followed by a space or "(" ("Explain:" or "Update:" is prose).
_STATEMENT_START = re.compile(rf"(?:{_KEYWORDS})(?=[\s(])|{_CTE}", re.IGNORECASE)
_PROSE_START = re.compile(rf"\bSELECT\b|\b{_CTE}", re.IGNORECASE)
_CLOSING_TAG = re.compile(r"</(?:sql|answer)>", re.IGNORECASE)
# After a blank line, an upper-case clause (or ")" / ",") goes on with the query; else it is prose.
_CLAUSES = ("FROM|WHERE|GROUP|ORDER|HAVING|LIMIT|OFFSET|JOIN|LEFT|RIGHT|INNER|OUTER|CROSS|NATURAL|"
            "UNION|INTERSECT|EXCEPT|AND|OR|ON|USING|WINDOW")
_CONTINUES = re.compile(rf"(?:{_CLAUSES})\b|[),]")
_QUOTES = "'\"`"


def statement_end(sql: str) -> int | None:
    """Index of the first ``;`` outside string literals, quoted identifiers and comments, or None.

    Understands ``'...'`` and ``"..."`` (doubled quote escapes), ```...```, ``[...]``, ``--`` line
    and ``/* */`` comments.
    """
    return _scan(sql, blank_line=False)


def _scan(sql: str, blank_line: bool) -> int | None:
    """Index of the first ``;`` (or, with ``blank_line``, the first blank line) outside quotes
    and comments, or None. One pass: each character is visited once."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == ";":
            return i
        if c in _QUOTES:
            i = _quote_end(sql, i + 1, c)
        elif c == "[":
            j = sql.find("]", i + 1)
            i = n if j < 0 else j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j  # the newline itself may start a blank line
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "\n" and blank_line and _blank_line_at(sql, i):
            j = _next_text(sql, i)
            if not _CONTINUES.match(sql, j):
                return i
            i = j
        else:
            i += 1
    return None


def _quote_end(sql: str, i: int, quote: str) -> int:
    """Index just past the quote closing a literal opened before ``i`` (doubled quotes escape)."""
    n = len(sql)
    while True:
        j = sql.find(quote, i)
        if j < 0:
            return n
        if j + 1 < n and sql[j + 1] == quote:
            i = j + 2
            continue
        return j + 1


def _blank_line_at(text: str, i: int) -> bool:
    """Whether the newline at ``i`` is followed by a line of only spaces or tabs."""
    j, n = i + 1, len(text)
    while j < n and text[j] in " \t\r":
        j += 1
    return j < n and text[j] == "\n"


def _next_text(text: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is not whitespace (``len`` if none)."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def _skip_comments(text: str) -> str:
    """``text`` without leading whitespace and SQL comments."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return text[i:]


def _fenced_statement(block: str) -> str:
    """A fenced block's statement: up to its first ``;``, stripped."""
    end = statement_end(block)
    return (block if end is None else block[:end]).strip()


def _bare_statement(text: str) -> str:
    """A statement in running text: up to ``;``, a blank line, a fence or a closing tag."""
    fence = text.find(_FENCE)
    if fence >= 0:
        text = text[:fence]
    tag = _CLOSING_TAG.search(text)
    if tag is not None:
        text = text[: tag.start()]
    end = _scan(text, blank_line=True)
    return (text if end is None else text[:end]).strip()


def _prose_sql(text: str) -> str:
    """The bare statement from the first SELECT or CTE in ``text``; ``""`` when there is none."""
    found = _PROSE_START.search(text)
    return _bare_statement(text[found.start():]) if found else ""


def _fenced_blocks(text: str):
    """Contents of ```-fenced blocks in order; an unclosed last block runs to the end of text."""
    pos = 0
    while True:
        opening = _FENCE_OPEN.search(text, pos)
        if opening is None:
            return
        close = text.find(_FENCE, opening.end())
        if close < 0:
            yield text[opening.end():]
            return
        yield text[opening.end():close]
        pos = close + len(_FENCE)


def extract_sql(text: Any, prefix: str = "") -> str:
    """The first SQL statement in a model's answer, without its ``;``; ``""`` when there is none.

    ``prefix`` is what the prompt pre-filled before the completion (e.g. ``"SELECT"`` or
    ``"```sql\\nSELECT"``); it is prepended first. The rules are the module's (linear time).

    >>> extract_sql("Sure!\\n```sql\\nSELECT name FROM t WHERE x = 'a;b';\\n```\\nDone.")
    "SELECT name FROM t WHERE x = 'a;b'"
    >>> extract_sql(" name FROM t;\\n```", prefix="SELECT")
    'SELECT name FROM t'
    """
    text = (prefix or "") + (text if isinstance(text, str) else "")
    start = text.lstrip()
    if _STATEMENT_START.match(start):
        return _bare_statement(start)
    for block in _fenced_blocks(text):
        code = _skip_comments(block)
        if _STATEMENT_START.match(code):
            return _fenced_statement(code)
        found = _prose_sql(block)
        if found:
            return found
    return _prose_sql(text)


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, a message dict, or a list of chat messages (the last
    assistant turn; multimodal content parts are joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        chosen = assistant or messages
        if not chosen:
            return ""
        content = chosen[-1].get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return "" if completion is None else str(completion)
