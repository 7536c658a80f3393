"""TextToSQLAgentEnv (``TextToSQLAgent-v0``): explore the database with queries, then answer.

The multi-turn sibling of :class:`~sqlenv.env.TextToSQLEnv`: same datasets, hardened executor, matchers
and reward presets, but an episode lasts up to ``max_turns`` moves. Each move is a string holding one
``<sql>...</sql>`` block (an exploratory query: its result comes back in the observation) or one
``<answer>...</answer>`` block (the final query, scored exactly as ``TextToSQL-v0`` scores its one
step). See docs/agent_env.md.
"""

from __future__ import annotations

import math
import string
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from gymnasium import spaces

from sqlenv.env import ACTION_CHARSET, TextToSQLEnv, _cut, _format_table, _one_line
from sqlenv.executor import ExecutionResult, Executor, ExecutorConfig
from sqlenv.filter_hints import FilterHints
from sqlenv.matching import is_floor_answer, result_to_answer
from sqlenv.spaces import UnicodeText

__all__ = ["TextToSQLAgentEnv", "MOVE_ERRORS", "NO_ANSWER", "Explorations", "kept_a_floor"]

#: Error kinds of a move that is not a well-formed ``<sql>`` or ``<answer>`` block (``too_long``:
#: longer than ``action_space.max_length``, answered without being read), or an exploration
#: refused because the episode's exploration time is spent (``budget``). A well-formed exploration
#: that fails carries the executor's error kind (``syntax``, ``no_such_table``, ...).
MOVE_ERRORS = ("not_text", "too_long", "no_tag", "both_tags", "several_tags", "empty", "budget")
#: The final ``info["error"]`` when the turns ran out without an ``<answer>``.
NO_ANSWER = "no_answer"

_TAGS = {name: (f"<{name}>".encode(), f"</{name}>".encode()) for name in ("sql", "answer")}
#: How a reply tells the policy to move, in the text protocol's tags (``sqlenv.integrations.trl_env``'s tools
#: say it in their own terms).
MOVE_HINT = "Write exactly one <sql>QUERY</sql> (explore) or <answer>QUERY</answer> (submit)."
SUBMIT_HINT = "Submit an <answer>."
_TAG_ROOM = 10_000  # characters an action may hold besides its query (tags, reasoning text)


@dataclass(frozen=True)
class Explorations:
    """What an episode's explorations found (:meth:`TextToSQLAgentEnv.score_explorations`). Per move:
    ``correct``, an exploration that ran and would have been scored right had it been submitted; ``floor``,
    one whose result, read as an answer, is a floor (``0``, empty or ``None``: a count over nothing, a filter
    that matched no row). ``answer_explored``: the answer resubmits an exploration (None: no answer)."""

    correct: list[bool]
    floor: list[bool]
    answer_explored: bool | None


def kept_a_floor(floor: Sequence[bool], outcome: Mapping[str, Any]) -> bool:
    """An exploration's result was a floor and the episode still answered with a wrong floor: ``outcome`` is
    the answer's ``info`` (or an evaluation record: ``error``, ``correct``, ``prediction``)."""
    return (any(floor) and outcome.get("error") is None and not outcome.get("correct")
            and is_floor_answer(outcome.get("prediction")))


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def _non_negative_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return float(value)


class TextToSQLAgentEnv(TextToSQLEnv):
    """Answer a question about a database in up to ``max_turns`` moves: explore, then answer.

    ## Action Space
    :class:`~sqlenv.spaces.UnicodeText`: a string holding exactly one ``<sql>QUERY</sql>`` block (explore:
    run QUERY and see its result) or one ``<answer>QUERY</answer>`` block (submit QUERY as the final
    answer). Text outside the block (reasoning) is ignored; tag names are case-insensitive. Anything
    else (no block, both kinds, two blocks, an empty query, a non-string, a move longer than
    ``action_space.max_length``: ``max_sql_length`` + 10,000) is a malformed move: it costs a turn
    and gets an observation saying what was wrong, never an exception. A move is measured before it
    is read, and read in one pass (time linear in its length).

    ## Observation Space
    ``Dict`` of ``UnicodeText``: ``question``, ``schema`` and ``sample_rows`` as in ``TextToSQL-v0``,
    plus ``transcript``: the earlier moves and their results as text (at most ``transcript_chars``
    characters; the oldest moves are dropped first). Each exploration result shows at most
    ``result_rows`` rows and ``result_chars`` characters, with the row count, or the error kind and
    message; its cells are cut before the table is built, and formatting it counts against
    ``explore_seconds``. Each step's ``info`` has ``turn``, ``turns_left``, ``move_errors``,
    ``move`` (``sql``, ``answer`` or ``malformed``) and ``result``: the transcript entry that move
    appended (the line ``Turn t/N`` echoing the move, then what the env answered), whole even when
    the transcript is cut, and ``reply``: what the env answered alone (the result table or error,
    ``Answer submitted.``), for a chat that already holds the move. Text fields of ``info`` are bounded
    as ``TextToSQL-v0``'s are (``MAX_INFO_CHARS``).

    ## Rewards
    The ``<answer>`` query is scored exactly as ``TextToSQL-v0`` scores its step (the same ``reward``
    presets, matchers and ``info``, ``reads_table`` included; under ``literal_answers="unanswered"`` an
    answer that reads no table is scored as no answer, ``info["error"] == "literal"``). Exploring with
    literals is free: only the answer is checked. Other moves reward ``-turn_cost``, minus
    ``exploration_error_penalty`` when the move was malformed or its query failed (both 0 by default,
    so only the answer counts). Running out of turns without an answer ends the episode with
    ``truncated=True`` and the preset's execution-error reward (``info["error"] == "no_answer"``), on top
    of that last move's own reward.

    ## Episode End
    ``terminated=True`` on the ``<answer>`` move; ``truncated=True`` after ``max_turns`` moves without one.
    Gymnasium's default ``NEXT_STEP`` vector autoreset fits (no ``vector_entry_point``).

    ## Arguments
    Every ``TextToSQL-v0`` argument (``dataset``, ``split``, ``reward``, ``timeout``,
    ``max_instructions``, ``literal_answers``, ``expose_gold``, dataset keywords, ...), plus ``max_turns=5``,
    ``result_rows=20``, ``result_chars=2_000``, ``transcript_chars=8_000``, ``explore_timeout=None``
    (each exploration query's time budget; ``None``: ``timeout``), ``explore_max_instructions=None``
    (each exploration query's instruction budget; ``None``: ``max_instructions``),
    ``explore_seconds=5.0`` (total exploration query time per episode), ``turn_cost=0.0``,
    ``exploration_error_penalty=0.0``, ``filter_hints=False`` (an exploration whose result reads as a floor
    answer, empty, ``0`` or ``NULL``, also gets one line per text value it filters on that matches no row of
    its column, naming the column that holds it or else the column's values: :mod:`sqlenv.filter_hints`).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        *args,
        max_turns: int = 5,
        result_rows: int = 20,
        result_chars: int = 2_000,
        transcript_chars: int = 8_000,
        explore_timeout: float | None = None,
        explore_max_instructions: int | None = None,
        explore_seconds: float = 5.0,
        turn_cost: float = 0.0,
        exploration_error_penalty: float = 0.0,
        filter_hints: bool = False,
        **kwargs,
    ):
        self.max_turns = _positive_int("max_turns", max_turns)
        self.result_rows = _positive_int("result_rows", result_rows, 0)
        self.result_chars = _positive_int("result_chars", result_chars, 100)
        self.transcript_chars = _positive_int("transcript_chars", transcript_chars, 1)
        if self.transcript_chars < self.result_chars:
            raise ValueError(f"transcript_chars={transcript_chars!r} must be >= result_chars={result_chars!r}, "
                             "so that the newest result fits the transcript")
        if explore_timeout is not None and (
                isinstance(explore_timeout, bool) or not isinstance(explore_timeout, (int, float))
                or not math.isfinite(explore_timeout) or explore_timeout <= 0):
            raise ValueError(f"explore_timeout={explore_timeout!r} must be a positive number of seconds or None")
        if explore_max_instructions is not None:
            _positive_int("explore_max_instructions", explore_max_instructions)
        self.explore_seconds = _non_negative_float("explore_seconds", explore_seconds)
        self.turn_cost = _non_negative_float("turn_cost", turn_cost)
        self.exploration_error_penalty = _non_negative_float("exploration_error_penalty", exploration_error_penalty)
        if not isinstance(filter_hints, bool):
            raise ValueError(f"filter_hints={filter_hints!r} must be True or False")
        self.filter_hints = FilterHints() if filter_hints else None
        super().__init__(*args, **kwargs)
        config = self.executor.config
        self.explore_executor = Executor(ExecutorConfig(
            timeout=config.timeout if explore_timeout is None else float(explore_timeout),
            max_rows=config.max_rows,
            max_instructions=config.max_instructions if explore_max_instructions is None else explore_max_instructions,
        ))
        low, high = self.reward_range
        self.reward_range = (low - self.turn_cost - self.exploration_error_penalty, high)
        self.observation_space = spaces.Dict({
            **self.observation_space.spaces,
            "transcript": UnicodeText(self.transcript_chars, min_length=0, charset=frozenset(string.printable)),
        })
        self.action_space = UnicodeText(config.max_sql_length + _TAG_ROOM, min_length=0,
                                        charset=ACTION_CHARSET)
        self._entries: list[str] = []
        self._move_errors: list[str | None] = []
        self._explore_spent = 0.0
        self._done = False
        self._final: dict[str, Any] | None = None

    # ------------------------------------------------------------------ episode API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._entries, self._move_errors, self._reply = [], [], ""
        self._explore_spent, self._done, self._final = 0.0, False, None
        return super().reset(seed=seed, options=options)

    def step(self, action: str):
        if self._index is None:
            raise RuntimeError("Cannot call env.step() before calling env.reset()")
        if self._done:
            raise RuntimeError("The episode has ended (an answer was submitted or the turns ran out). "
                               "Call reset before using step method.")
        example = self.dataset[self._index]
        turn = len(self._move_errors) + 1
        kind, query, problem = self.parse(action)
        if kind == "answer":
            result = self.executor.execute(self._database(example).path, query)
            reward, info = self._score(example, query, result)
            self._move_errors.append(info["error"])  # the executor's, or "literal" (literal_answers="unanswered")
            self._reply = "Answer submitted."
            self._entries.append(f"Turn {turn}/{self.max_turns} <answer>{self._clip(query)}</answer>\n{self._reply}")
            self._done = True
            self._final = info
            info = {**info, **self._turn_info("answer")}
            return self._observation(example), reward, True, False, info
        if kind == "sql":
            error, text = self._explore(example, query)
            head = f"Turn {turn}/{self.max_turns} <sql>{self._clip(query)}</sql>"
        else:
            error, text = problem
            head = f"Turn {turn}/{self.max_turns} (malformed move) {self._clip(_one_line(action, 200))}"
        self._move_errors.append(error)
        self._reply = text
        self._entries.append(head + "\n" + text)
        reward = 0.0 - self.turn_cost - (self.exploration_error_penalty if error is not None else 0.0)
        info = {"index": self._index, **self._turn_info(kind)}
        if turn < self.max_turns:
            return self._observation(example), reward, False, False, info
        # turns ran out without an answer: the preset's execution-error reward, and the gold after the episode
        self._done = True
        missing = ExecutionResult(error=NO_ANSWER, message=f"no <answer> within {self.max_turns} turns")
        penalty, final = self._score(example, "", missing)
        self._final = final
        return self._observation(example), reward + penalty, False, True, {**final, **info, "reward": reward + penalty}

    def parse(self, action: Any) -> tuple[str, str, tuple[str, str] | None]:
        """``("sql" | "answer", query, None)`` for a well-formed move, else
        ``("malformed", "", (error kind, observation text))``.

        The move is measured before it is read (a non-string is ``not_text``, one longer than
        ``action_space.max_length`` is ``too_long``), then read in one pass over its tags."""
        if not isinstance(action, str):
            got = type(action).__name__
            return _malformed("not_text", f"Malformed move: expected a string, got {got}. Write "
                              "<sql>QUERY</sql> to explore or <answer>QUERY</answer> to submit.")
        action = str.__str__(action)  # a str subclass: the plain string, never its methods
        limit = self.action_space.max_length
        if len(action) > limit:
            return _malformed("too_long", f"Malformed move: it is {len(action)} characters long; "
                                          f"the limit is {limit}. {MOVE_HINT}")
        blocks, opened = _blocks(action)
        if not blocks:
            what = f"the {opened} tag is not closed" if opened else "no <sql> or <answer> block"
            return _malformed("no_tag", f"Malformed move: {what}. {MOVE_HINT}")
        kinds = {name for name, _ in blocks}
        if len(kinds) > 1:
            return _malformed("both_tags",
                              f"Malformed move: both <sql> and <answer> blocks. {MOVE_HINT}")
        name, query = blocks[0]
        if len(blocks) > 1:
            count = len(blocks)
            return _malformed("several_tags", f"Malformed move: {count} <{name}> blocks. {MOVE_HINT}")
        query = query.strip()
        if not query:
            return _malformed("empty", f"Malformed move: the <{name}> block is empty. {MOVE_HINT}")
        return name, query, None

    def render(self):
        if self.render_mode != "ansi":
            return None
        if self._index is None:
            return "(call reset first)\n"
        lines = [f"Question [{self._index}]: {self.dataset[self._index].question}", self._transcript()]
        if self._final is not None:
            info = self._final
            lines.append(f"Gold answer: {info['answer']}")
            lines.append(f"Reward: {info['reward']:g}  correct={info['correct']}  error={info['error']}")
        return "\n".join(line for line in lines if line) + "\n"

    def interrupt(self) -> None:
        self.explore_executor.interrupt()
        super().interrupt()

    def close(self):
        self.explore_executor.close()
        super().close()

    # ------------------------------------------------------------------ pickling and copying
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["explore_executor"] = self.explore_executor.config
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["explore_executor"] = Executor(state["explore_executor"])
        super().__setstate__(state)

    # ------------------------------------------------------------------ analysis
    def score_explorations(self, index: int, moves: Sequence[str], move_kinds: Sequence[str],
                           move_errors: Sequence[str | None]) -> Explorations:
        """What an episode of question ``index`` found by exploring (its ``moves`` and each one's ``info``
        ``move`` and ``move_errors`` entries), outside the episode (``score_sqls``): per move, whether it is
        an exploration that ran and would have been scored correct had it been submitted, and whether its
        result is a floor answer; and whether the episode's answer resubmits one of its ``<sql>``
        explorations, failed ones included (whitespace and a final semicolon aside; None when it did not
        answer)."""
        ran = [(position, self.parse(move)[1]) for position, (move, kind, error)
               in enumerate(zip(moves, move_kinds, move_errors)) if kind == "sql" and error is None]
        correct, floor = [False] * len(moves), [False] * len(moves)
        for (position, _), (_, info) in zip(ran, self.score_sqls(index, [q for _, q in ran]) if ran else []):
            correct[position] = bool(info["correct"])
            floor[position] = info["error"] is None and is_floor_answer(info["prediction"])
        if not moves or move_kinds[-1] != "answer":
            return Explorations(correct, floor, None)
        explored = {_same_query(self.parse(move)[1]) for move, kind in zip(moves, move_kinds) if kind == "sql"}
        return Explorations(correct, floor, _same_query(self.parse(moves[-1])[1]) in explored)

    def hinted_explorations(self, index: int, moves: Sequence[str], floor: Sequence[bool]) -> list[bool]:
        """Per move of an episode of question ``index``: an exploration whose result was a ``floor``
        (:meth:`score_explorations`) that filter hints name a missing value for, i.e. one that got (with
        ``filter_hints=True``) or would have got (without) hint lines; they depend only on the database and
        the query."""
        hints = self.filter_hints or FilterHints()
        path = self._database(self.dataset[index]).path
        return [bool(is_floor and hints.hints(path, self.parse(move)[1])) for move, is_floor in zip(moves, floor)]

    # ------------------------------------------------------------------ helpers
    def observation_for(self, index: int) -> dict[str, str]:
        """The first observation of question ``index`` (empty transcript), without resetting."""
        return {**super()._observation(self.dataset[index]), "transcript": ""}

    def _observation(self, example) -> dict[str, str]:
        return {**super()._observation(example), "transcript": self._transcript()}

    def _reset_info(self, index, example) -> dict[str, Any]:
        return {**super()._reset_info(index, example), **self._turn_info(None)}

    def _turn_info(self, move: str | None) -> dict[str, Any]:
        info = {"turn": len(self._move_errors), "turns_left": self.max_turns - len(self._move_errors),
                "move_errors": list(self._move_errors)}
        if move is not None:  # a step: the move and its transcript entry, whole even when the transcript is cut
            info["move"] = move
            info["result"] = self._entries[-1]
            info["reply"] = self._reply
        return info

    def _explore(self, example, query: str) -> tuple[str | None, str]:
        left = self.explore_seconds - self._explore_spent
        if left <= 0:
            return "budget", (f"Not run: the episode's {self.explore_seconds:g} s of exploration query time "
                              f"is spent. {SUBMIT_HINT}")
        executor = self.explore_executor
        path = self._database(example).path
        result = executor._execute(path, query, min(executor.config.timeout, left))
        started = time.perf_counter()
        try:
            error, text = self._result_text(result)
            if error is None and self.filter_hints is not None \
                    and is_floor_answer(result_to_answer(result.rows[:2], limit=8)):
                hints = self.filter_hints.hints(path, query)
                if hints:
                    text = self._clip(text + "\n" + "\n".join(hints))
            return error, text
        finally:  # formatting the result counts against the exploration budget too
            self._explore_spent += result.elapsed + (time.perf_counter() - started)

    def _result_text(self, result: ExecutionResult) -> tuple[str | None, str]:
        """An exploration's error, and its result as at most ``result_chars`` characters of text."""
        if result.error is not None:
            message = result.message[: self.result_chars]
            return result.error, self._clip(f"Error ({result.error}): {message}")
        count = len(result.rows)
        shown = min(count, self.result_rows)
        head = f"{count} row{'s' if count != 1 else ''}" + (f" (first {shown} shown)" if shown < count else "")
        table = _format_table(result.columns, result.rows[:shown], limit=max(shown, 1),
                              chars=self.result_chars)
        return None, self._clip(head + "\n" + table)

    def _clip(self, text: str) -> str:
        return _cut(text, self.result_chars)

    def _transcript(self) -> str:
        budget = self.transcript_chars
        kept: list[str] = []
        size = 0
        for entry in reversed(self._entries):
            extra = len(entry) + (2 if kept else 0)
            if size + extra > budget:
                break
            kept.append(entry)
            size += extra
        dropped = len(self._entries) - len(kept)
        if dropped:
            note = f"({dropped} earlier turn{'s' if dropped != 1 else ''} omitted)"
            while kept and size + len(note) + 2 > budget:
                size -= len(kept.pop()) + 2
            if kept:
                kept.append(note)
            else:
                return self._entries[-1][: budget]
        return "\n\n".join(reversed(kept))


def _same_query(sql: str) -> str:
    """``sql`` with its whitespace runs as one space and no final semicolon: what runs the same either way."""
    return " ".join(sql.split()).rstrip("; ")


def _malformed(kind: str, text: str) -> tuple[str, str, tuple[str, str]]:
    return "malformed", "", (kind, text)


def _blocks(action: str) -> tuple[list[tuple[str, str]], str | None]:
    """The ``<sql>``/``<answer>`` blocks of ``action`` as ``(tag name, text)``, and the first
    opening tag as written (or None), in time linear in the length of ``action``: what
    ``re.findall(r"<(sql|answer)>(.*?)</\\1>", action, re.I | re.S | re.A)`` gives (names lowered).

    A block opens at the leftmost opening tag that a closing tag of the same name follows, and ends
    at the first such closing tag; the search goes on after it. A name whose closing tag does not
    follow an opening tag follows no later one either, so it is not looked for again."""
    low = action.encode("ascii", "replace").lower()  # one byte per character: positions agree
    nexts = {name: low.find(opening) for name, (opening, _) in _TAGS.items()}
    firsts = [at for at in nexts.values() if at >= 0]
    opened = None
    if firsts:
        first = min(firsts)
        opened = action[first: action.index(">", first) + 1]
    blocks: list[tuple[str, str]] = []
    after = 0
    while True:
        for name, at in nexts.items():
            if 0 <= at < after:
                nexts[name] = low.find(_TAGS[name][0], after)
        live = [(at, name) for name, at in nexts.items() if at >= 0]
        if not live:
            return blocks, opened
        at, name = min(live)
        opening, closing = _TAGS[name]
        body = at + len(opening)
        close = low.find(closing, body)
        if close < 0:
            nexts[name] = -1  # never closed after this opening, so never after a later one
            continue
        blocks.append((name, action[body:close]))
        after = close + len(closing)
