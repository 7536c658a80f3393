"""TextToSQLEnv: one benchmark question per episode, answered by one SQL query."""

from __future__ import annotations

import re
import reprlib
import string
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sqlenv import infobox, literal
from sqlenv.datasets import Dataset, Example, load_dataset
from sqlenv.executor import ExecutionResult, Executor, ExecutorConfig
from sqlenv.matching import MatchResult, result_to_answer
from sqlenv.rewards import reward as compute_reward, reward_preset, reward_range
from sqlenv.spaces import UnicodeText

MAX_QUESTION_CHARS = 2_000
MAX_SCHEMA_CHARS = 20_000
MAX_SAMPLE_ROWS_CHARS = 20_000
#: Characters ``action_space.sample()`` draws; ``contains`` and ``step`` accept any string.
ACTION_CHARSET = frozenset(string.printable)
#: Characters of each text field of a step's ``info`` (``sql``, ``error_message``, ``prediction``)
#: and of the result table ``render()`` shows; a longer text is cut and ends with ``CUT_NOTE``.
#: Scoring always uses the whole result.
MAX_INFO_CHARS = 10_000
#: How a cut text ends (``{limit}``: its length in characters, this note included).
CUT_NOTE = "\n... (cut at {limit} characters)"


@dataclass(frozen=True)
class _Database:
    path: str
    schema: str
    sample_rows: str


class TextToSQLEnv(gym.Env[dict, str]):
    """Answer a natural-language question about a database with one SQL query.

    ## Description
    Each episode is one question from a Text-to-SQL benchmark (by default the built-in generated
    benchmark; also TempTabQA-C, the reference work's benchmark). The agent writes one SQL
    query; the environment executes it in a hardened, read-only SQLite sandbox
    (:mod:`sqlenv.executor`) and rewards it by comparing the result with the gold answer
    (:mod:`sqlenv.matching`, :mod:`sqlenv.rewards`). No gold SQL is needed to score.

    ## Action Space
    :class:`~sqlenv.spaces.UnicodeText`: one SQL statement as a string of any Unicode characters
    (``contains`` accepts every string ``step`` scores within ``max_sql_length``; ``sample()`` draws
    printable ASCII). Any action is accepted by ``step``: garbage is penalised, never raised on.

    ## Observation Space
    ``Dict`` of ``UnicodeText``: ``question`` (the question), ``schema`` (the database's
    ``CREATE TABLE`` statements) and ``sample_rows`` (the first ``sample_rows`` rows of each
    table as text; empty when 0). Flattens to Unicode code points (``FlattenObservation`` works).

    ## Rewards
    Set by ``reward``, a preset of :mod:`sqlenv.rewards` (one entry of ``REWARD_PRESETS`` each):
    ``"binary"`` (default; execution error -1, executed but wrong 0, correct +1), ``"partial"``
    (error -1, else the F1 of the answer items, at most 0.99 when wrong, 1 when correct),
    ``"paper"`` (our reading of the reference work: error -100, valid SQL +1, up to +100 by
    relaxed match, +1000 for an exact match), ``"arctic"`` (Arctic-Text2SQL-R1's: error 0,
    executed but wrong 0.1, correct 1) or ``"arctic-nofloor"`` (``arctic``, but a wrong answer
    that is ``0``, empty or ``NULL`` earns 0). ``info`` carries every component; its text fields
    (``sql``, ``error_message``, ``prediction``) hold at most ``MAX_INFO_CHARS`` characters (a cut
    one ends with ``CUT_NOTE``), while scoring always uses the whole result.
    ``info["reads_table"]`` says whether SQLite read a table of the database to answer (False for a
    literal answer such as ``SELECT '16'``, and for a query that failed; :mod:`sqlenv.literal`).
    ``literal_answers="unanswered"`` scores an answer that reads no table as one that gives nothing:
    the preset's execution-error reward, ``info["error"] == "literal"``; ``"score"`` (the default)
    scores it like any other answer.
    A fault of the host (a database that cannot be opened, no file descriptors, no memory) is never
    a reward: ``step``, ``reset`` and ``score_group`` raise :class:`sqlenv.HostError` naming the
    database and the cause.

    ## Starting State
    ``reset`` picks a question uniformly with ``self.np_random``; ``options={"index": i}``
    pins question ``i`` (a GRPO group pins one question for all its samples). ``info`` holds
    ``index``, ``id``, ``question_type`` and ``difficulty``, never the gold SQL or answer (unless
    ``expose_gold=True``, for debugging); the step's ``info`` reports the answer after the episode.

    ## Episode End
    Every episode is one step: ``terminated=True`` after ``step``. ``gym.make_vec`` autoresets in
    the same step (:mod:`sqlenv.vector`); the env pickles and deep-copies (connections reopen where
    the copy runs).

    ## Arguments
    ``gym.make("sqlenv:TextToSQL-v0", dataset="generated", split="train", data_dir=None,
    reward="binary", schema=None, sample_rows=3, column_values=0, timeout=1.0, max_rows=10_000,
    workers=0, render_mode=None, expose_gold=False, max_instructions=None, literal_answers="score",
    **dataset_kwargs)``; ``dataset`` may also be a :class:`~sqlenv.Dataset`, and ``dataset_kwargs`` go to
    its loader (``db=``, ``empty_match=``).
    ``schema="flat"`` swaps the benchmark's five tables for one denormalised table (None: "tables"). A Dataset
    object's databases are built for the schema it was loaded with (``sqlenv.load_dataset(..., schema=)``):
    ``schema`` may be left out (None) or must name that one; anything else is a ValueError.
    ``column_values=k`` lists under each table's statement the ``k`` most frequent text values of each
    column as SQL literals (:mod:`sqlenv.schema`), so filters need not guess spellings; 0 (default): none.
    ``max_instructions`` bounds each query in SQLite VM instructions, the same on every machine
    (``timeout`` stays the wall-clock backstop); set it for reproducible rewards.

    ## Version History
    * v0: initial version. Later changes kept the id: no gold in reset ``info`` (``expose_gold``),
      Unicode action space, SAME_STEP vector entry point, picklable, ``info["reads_table"]`` and
      ``literal_answers``, ``column_values``, ``schema`` beside a Dataset object checked (it was ignored).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        dataset: str | Dataset = "generated",
        split: str | None = None,
        data_dir: str | None = None,
        reward: str = "binary",
        schema: str | None = None,
        sample_rows: int = 3,
        column_values: int = 0,
        timeout: float = 1.0,
        max_rows: int = 10_000,
        workers: int = 0,
        render_mode: str | None = None,
        expose_gold: bool = False,
        max_instructions: int | None = None,
        literal_answers: str = "score",
        **dataset_kwargs,
    ):
        reward_preset(reward)
        literal.literal_answers_option(literal_answers)
        if schema is not None and schema not in infobox.SCHEMAS:
            raise ValueError(f"schema={schema!r} is not a schema variant; choose one of {list(infobox.SCHEMAS)}")
        if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
            raise ValueError(f"sample_rows={sample_rows!r} must be an integer >= 0")
        if isinstance(column_values, bool) or not isinstance(column_values, int) or column_values < 0:
            raise ValueError(f"column_values={column_values!r} must be an integer >= 0 (0: none)")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers={workers!r} must be an integer >= 0")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; "
                             f"use one of {self.metadata['render_modes']}")
        if isinstance(dataset, Dataset):
            if dataset_kwargs:
                raise ValueError(f"{sorted(dataset_kwargs)} are dataset loader arguments: pass them to "
                                 "sqlenv.load_dataset, not beside a Dataset object")
            loaded_with = getattr(dataset, "schema", "tables")
            if schema is not None and schema != loaded_with:
                raise ValueError(f"schema={schema!r}, but the Dataset object was loaded with schema={loaded_with!r} "
                                 f"and its databases are built for it: pass schema={schema!r} to sqlenv.load_dataset")
            self.dataset = dataset
        else:
            try:
                self.dataset = load_dataset(dataset, split=split, data_dir=data_dir, schema=schema or "tables",
                                            **dataset_kwargs)
            except TypeError as exc:
                if not dataset_kwargs:
                    raise
                raise ValueError(f"{sorted(dataset_kwargs)}: not arguments of TextToSQLEnv, nor all of the "
                                 f"{dataset!r} dataset's loader ({exc})") from None
        if len(self.dataset) == 0:
            raise ValueError(f"dataset {self.dataset!r} has no questions")
        self.reward_preset = reward
        self.schema_variant = getattr(self.dataset, "schema", schema or "tables")
        self.num_sample_rows = sample_rows
        self.column_values = column_values
        self.workers = workers
        self.render_mode = render_mode
        self.expose_gold = bool(expose_gold)
        self.literal_answers = literal_answers
        self.executor = Executor(ExecutorConfig(timeout=timeout, max_rows=max_rows, max_instructions=max_instructions))
        self.reward_range = reward_range(reward)

        charset = frozenset(string.printable)
        self.observation_space = spaces.Dict(
            {
                "question": UnicodeText(MAX_QUESTION_CHARS, min_length=0, charset=charset),
                "schema": UnicodeText(MAX_SCHEMA_CHARS, min_length=0, charset=charset),
                "sample_rows": UnicodeText(MAX_SAMPLE_ROWS_CHARS, min_length=0, charset=charset),
            }
        )
        self.action_space = UnicodeText(self.executor.config.max_sql_length, min_length=0, charset=ACTION_CHARSET)
        self._databases: dict[str, _Database] = {}
        self._index: int | None = None
        self._last: dict[str, Any] | None = None

    # ------------------------------------------------------------------ episode API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "index" in options:
            index = options["index"]
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.dataset):
                raise ValueError(f"options['index']={index!r} is out of range for {len(self.dataset)} questions")
            index = int(index)
        else:
            index = int(self.np_random.integers(len(self.dataset)))
        self._index = index
        self._last = None
        example = self.dataset[index]
        return self._observation(example), self._reset_info(index, example)

    def step(self, action: str):
        if self._index is None:
            raise RuntimeError("Cannot call env.step() before calling env.reset()")
        if self._last is not None:
            raise RuntimeError("The episode has ended (one step per question). Call reset before using step method.")
        example = self.dataset[self._index]
        result = self.executor.execute(self._database(example).path, action)
        reward, info = self._score(example, action, result)
        self._last = {"sql": action, "result": result, "info": info}
        return self._observation(example), reward, True, False, info

    def score_group(self, sqls: Sequence[str], workers: int | None = None,
                    deadline: float | None = None) -> list[tuple[float, dict]]:
        """Score G queries for the current question in one call (the GRPO group path).

        ``workers`` > 0 executes them in parallel worker processes (default: the env's
        ``workers``); each query gets its time budget, and a worker that overruns ``deadline``
        seconds is killed and its sample scored as a timeout. Does not end the episode.
        """
        if self._index is None:
            raise RuntimeError("Cannot call env.score_group() before calling env.reset()")
        return self.score_sqls(self._index, sqls, workers=workers, deadline=deadline)

    def score_sqls(self, index: int, sqls: Sequence[str], workers: int | None = None,
                   deadline: float | None = None) -> list[tuple[float, dict]]:
        """Score queries against question ``index`` without touching the episode state."""
        example = self.dataset[index]
        path = self._database(example).path
        workers = self.workers if workers is None else workers
        results = self.executor.execute_group(path, list(sqls), workers=workers, deadline=deadline)
        return [self._score(example, sql, result, index) for sql, result in zip(sqls, results)]

    def render(self):
        if self.render_mode != "ansi":
            return None
        if self._index is None:
            return "(call reset first)\n"
        example = self.dataset[self._index]
        lines = [f"Question [{self._index}]: {example.question}"]
        if self._last is None:
            return "\n".join(lines) + "\n"
        result: ExecutionResult = self._last["result"]
        info = self._last["info"]
        lines.append("SQL: " + _one_line(self._last["sql"]))
        if info["error"] is not None:  # as scored: a literal answer under literal_answers="unanswered" too
            lines.append(_cut(f"Error ({info['error']}): {info['error_message']}"))
        else:
            lines.append(_cut(_format_table(result.columns, result.rows, chars=MAX_INFO_CHARS)))
        lines.append(f"Gold answer: {example.answer}")
        lines.append(f"Reward: {info['reward']:g}  correct={info['correct']}  exact={info['exact']:g}  "
                     f"relaxed={info['relaxed']:g}  f1={info['f1']:.2f}")
        return "\n".join(lines) + "\n"

    def interrupt(self) -> None:
        """Stop the query this env runs now, from another thread (a server whose client went
        away): that step ends at once with a timeout error. A no-op between steps."""
        self.executor.interrupt()

    def close(self):
        self.executor.close()
        super().close()

    # ------------------------------------------------------------------ pickling and copying
    def __getstate__(self) -> dict[str, Any]:
        """Everything but open resources: the executor travels as its configuration and the
        database descriptions are rebuilt on first use, so a copy (``copy.deepcopy``, pickle,
        cloudpickle, a spawned process) opens its own connections wherever it runs."""
        state = self.__dict__.copy()
        state["executor"] = self.executor.config
        state["_databases"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["executor"] = Executor(state["executor"])
        self.__dict__.update(state)

    # ------------------------------------------------------------------ helpers
    def example(self, index: int) -> Example:
        return self.dataset[index]

    def observation_for(self, index: int) -> dict[str, str]:
        """The observation of question ``index``, without resetting (for batched rollouts)."""
        return self._observation(self.dataset[index])

    def _observation(self, example: Example) -> dict[str, str]:
        db = self._database(example)
        return {"question": example.question[:MAX_QUESTION_CHARS], "schema": db.schema, "sample_rows": db.sample_rows}

    def _reset_info(self, index: int, example: Example) -> dict[str, Any]:
        info = {
            "index": index,
            "id": example.id,
            "question_type": example.question_type,
            "difficulty": example.difficulty,
        }
        if self.expose_gold:  # debugging only: frameworks that log or template info would leak it
            info["gold_sql"] = example.gold_sql
            info["answer"] = example.answer
        return info

    def _database(self, example: Example) -> _Database:
        db = self._databases.get(example.db_key)
        if db is None:
            path = str(self.dataset.database(example))
            schema, rows = self.dataset.describe(path, self.num_sample_rows, self.column_values)
            db = _Database(path, schema[:MAX_SCHEMA_CHARS], rows[:MAX_SAMPLE_ROWS_CHARS])
            if len(self._databases) > 4096:
                self._databases.clear()
            self._databases[example.db_key] = db
        return db

    def _score(self, example: Example, sql: Any, result: ExecutionResult, index: int | None = None):
        # Literal answers: asked of SQLite only for a query that executed (sqlenv.literal)
        reads = result.error is None and literal.reads_table(self._database(example).path, sql)
        if result.error is None and not reads and self.literal_answers == "unanswered":
            result = ExecutionResult(error=literal.LITERAL, message=literal.LITERAL_MESSAGE)
        match: MatchResult | None = self.dataset.match(example, result.rows) if result.error is None else None
        value = float(compute_reward(self.reward_preset, result, match))
        shown = result_to_answer(result.rows, MAX_INFO_CHARS) if result.error is None else ""
        info = {
            "index": self._index if index is None else index,
            "sql": _cut(sql if isinstance(sql, str) else _short_repr(sql)),
            "executed": result.error is None,
            "reads_table": reads,
            "error": result.error,
            "error_message": _cut(result.message),
            "correct": bool(match.correct) if match else False,
            "exact": float(match.exact) if match else 0.0,
            "relaxed": float(match.relaxed) if match else 0.0,
            "f1": float(match.f1) if match else 0.0,
            "prediction": _cut(shown),
            "answer": example.answer,
            "reward": value,
        }
        return value, info


def _cut(text: str, limit: int = MAX_INFO_CHARS) -> str:
    """``text``, or if longer its first characters and ``CUT_NOTE``, in ``limit`` characters."""
    if len(text) <= limit:
        return text
    note = CUT_NOTE.format(limit=limit)
    return text[: max(0, limit - len(note))] + note[: limit]


def _short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` in at most about ``limit`` characters, and never an exception."""
    shorter = reprlib.Repr()
    shorter.maxstring = shorter.maxother = shorter.maxlong = limit
    try:
        text = shorter.repr(value)
    except Exception:  # noqa: BLE001 -- a hostile __repr__, an int past the digit limit
        text = f"<{type(value).__name__} object>"
    return text[:limit]


_WORD_PIECE = re.compile(r"\S{1,512}")


def _one_line(sql: Any, limit: int = 500) -> str:
    """``sql`` with each run of whitespace made one space, cut at ``limit`` characters (+ `` ...``).

    Reads only as far as the cut, and copies no word longer than 512 characters whole."""
    text = sql if isinstance(sql, str) else _short_repr(sql, limit + 1)
    pieces: list[str] = []
    size, end = 0, -1
    for match in _WORD_PIECE.finditer(text):
        if pieces and match.start() != end:
            pieces.append(" ")
            size += 1
        pieces.append(match.group())
        size += match.end() - match.start()
        end = match.end()
        if size > limit:
            break
    text = "".join(pieces)
    return text if len(text) <= limit else text[:limit] + " ..."


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _cell(value: Any, width: int) -> str:
    """The first ``width`` characters of one value as table text, cut before it is converted:
    ``NULL``, blobs as ``x'hex'``, backslashes and newlines written ``\\``, ``\\n``, ``\\r``."""
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("x'" + bytes(value[: width // 2 + 1]).hex() + "'")[:width]
    if isinstance(value, str):
        return _escape(value[:width])[:width]
    return _escape(str(value)[:width])[:width]


def _format_table(columns: Sequence[Any], rows: Sequence[Sequence[Any]], limit: int = 20,
                  chars: int = MAX_INFO_CHARS) -> str:
    """``rows[:limit]`` under ``columns`` as a text table, or its first ``chars + 1`` characters
    when it is longer (the caller cuts it with ``_cut``).

    Bounded before it is built: cells are cut at ``chars + 1`` characters before widths are
    computed, columns that start past ``chars`` and rows that cannot start within it (more than
    ``(chars + 1) // 5 + 1``) are neither converted nor counted in the widths, and lines stop once
    the text passes ``chars``. Within those rows, the text is the whole table's beginning.
    """
    room = chars + 1
    body = rows[: min(limit, room // 5 + 1)]  # every line takes at least 5 characters
    header: list[str] = []
    cells: list[list[str]] = [[] for _ in body]
    widths: list[int] = []
    start = 2  # where the next column starts in each line
    for i, name in enumerate(columns):
        if start > chars:
            break
        header.append(_cell(name, room))
        for row, out in zip(body, cells):
            if i < len(row):
                out.append(_cell(row[i], room))
        widths.append(max([len(header[-1])] + [len(out[-1]) for out, row in zip(cells, body)
                                               if i < len(row)]))
        start += widths[-1] + 3
    more = len(header) < len(columns)  # columns that start past the budget

    def line(values: list[str]) -> str:
        text = "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths))
        return text + (" | " if more else " |")

    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + ("|-" if more else "|")]
    lines += (line(out) for out in cells)  # generator: stops at the budget below
    return _join_within(lines, chars, len(rows) - limit)


def _join_within(lines, chars: int, more_rows: int) -> str:
    """Lines joined by newlines, stopped once past ``chars`` characters (then cut to chars + 1)."""
    out: list[str] = []
    size = -1
    for text in lines:
        out.append(text)
        size += len(text) + 1
        if size > chars:
            return "\n".join(out)[: chars + 1]
    if more_rows > 0:
        out.append(f"... {more_rows} more rows")
    return "\n".join(out)[: chars + 1]
