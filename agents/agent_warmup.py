"""Multi-turn warm-up episodes: explore with pieces of the gold SQL, then answer with the gold SQL.

``agents/sft_warmup.py --max-turns N`` (N > 1) trains on these instead of single-step targets. Each
episode is played through ``TextToSQLAgentEnv`` (``TextToSQLAgent-v0``) on a generated train question:

1. Candidate explorations come from the question's gold SQL (:func:`exploration_candidates`): the distinct
   values of each column the gold compares with a literal (``SELECT DISTINCT col FROM table``), the rows of
   its first table (``SELECT COUNT(*) FROM table``) and, when the gold is one plain ``SELECT ... FROM ...
   WHERE ...``, how many rows its own filter keeps (``SELECT COUNT(*)`` over the gold's FROM and WHERE).
   Each candidate is run through the env once; one that fails (a column of a subquery, ...) is dropped.
2. A seeded draw picks how many explorations come first (0, 1 or 2, at most ``max_turns - 1`` and at most
   the candidates that ran) and which, the gold query itself being one more candidate: drawn, it is run
   last, so the episode checks its answer and resubmits it (as the prompt's second worked episode does);
   the answer ``<answer>GOLD</answer>`` ends the episode. With ``recovery`` > 0 (and ``max_turns`` >= 3),
   that share of the questions instead gets a recovery episode where one can be built
   (:func:`recovery_candidates`): the gold with one text literal mistaken (``'MedalGold'`` written
   ``'Gold'``, a plural dropped or added), whose result is a floor (0, empty, NULL), then the distinct
   values of that column, then the gold answer: an empty result is looked into, not submitted. The
   mistaken move is kept out of the loss (the policy learns the look-up and the answer, not the mistake).
3. The moves are played through a fresh episode of the env, and the episode is laid out exactly as
   ``agents.multiturn.run_episodes`` lays out a sampled one: the prompt ``policy.agent_prompt``, each move
   tokenised on its own (``<sql>QUERY</sql>``, as the prompt's worked episodes write it), then the env's
   answer to it as ``policy.agent_feedback(info["reply"], turns_left)``. ``loss_mask`` is 1 on the
   moves' tokens only, so the loss (``agents.grpo_update.loss_weights``) covers what the policy writes and
   never the env's text.

The gold answer is scored by the env as any answer is; an episode whose answer is not correct (none is
expected on the generated benchmark) is skipped and counted.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import sqlglot
import torch
from sqlglot import exp

from agents.multiturn import Episode

__all__ = ["exploration_candidates", "recovery_candidates", "mistaken_literal", "play_episode", "build_episodes",
           "choose_explorations", "gold_answer", "new_counts", "MAX_EXPLORATIONS"]

#: Explorations before the answer are drawn from 0..MAX_EXPLORATIONS (and at most max_turns - 1).
MAX_EXPLORATIONS = 2


def _tables(tree: exp.Expression) -> tuple[list[str], dict[str, str]]:
    """The tables the query reads (in order, no repeats) and its alias -> table map."""
    names: list[str] = []
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        if table.name and table.name not in names:
            names.append(table.name)
        if table.alias:
            aliases[table.alias] = table.name
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    return [n for n in names if n not in ctes], aliases


def _filter_check(gold_sql: str) -> str | None:
    """``SELECT COUNT(*)`` over the gold's own FROM/JOIN and WHERE lines, when the gold is one plain
    ``SELECT`` laid out a clause a line (FROM a table, JOINs, one WHERE line); else None."""
    lines = gold_sql.strip().rstrip(";").splitlines()
    if len(lines) < 3 or not lines[0].upper().startswith("SELECT ") or "(" in lines[1] \
            or not lines[1].upper().startswith("FROM "):
        return None
    for end, line in enumerate(lines[2:], start=2):
        if line.upper().startswith("WHERE "):
            return "SELECT COUNT(*)\n" + "\n".join(lines[1:end + 1]) if "(" not in line else None
        if not line.upper().startswith("JOIN "):
            return None
    return None


def exploration_candidates(gold_sql: str) -> list[str]:
    """Exploratory queries built from pieces of ``gold_sql`` (none run yet): distinct values of each column
    it compares with a literal (in sqlglot's breadth-first order of the comparisons), the row count of its
    first table, and its own filter's row count."""
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return []
    tables, aliases = _tables(tree)
    out: list[str] = []
    for eq in tree.find_all(exp.EQ):
        column, literal = eq.left, eq.right
        if not (isinstance(column, exp.Column) and isinstance(literal, exp.Literal)):
            continue
        table = aliases.get(column.table) if column.table else (tables[0] if len(tables) == 1 else None)
        query = f"SELECT DISTINCT {column.name} FROM {table}" if table else None
        if query and query not in out:
            out.append(query)
    if tables:
        out.append(f"SELECT COUNT(*) FROM {tables[0]}")
    check = _filter_check(gold_sql)
    if check:
        out.append(check)
    return out


def mistaken_literal(value: str) -> str:
    """A plausible wrong guess at a text value: ``MedalGold`` -> ``Gold``, else the last word's plural
    dropped or added (``World Championships`` -> ``World Championship``, ``Team`` -> ``Teams``)."""
    if value.startswith("Medal") and len(value) > len("Medal"):
        return value[len("Medal"):]
    return value[:-1] if value.endswith("s") else value + "s"


def recovery_candidates(gold_sql: str) -> list[tuple[str, str]]:
    """(mistaken query, look-up query) pairs for a recovery episode: the gold with one text literal it
    compares a column with replaced by :func:`mistaken_literal` (the literal must occur once in the gold),
    and ``SELECT DISTINCT column FROM table``, the values of that column (none run yet)."""
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return []
    tables, aliases = _tables(tree)
    out: list[tuple[str, str]] = []
    for eq in tree.find_all(exp.EQ):
        column, literal = eq.left, eq.right
        if not (isinstance(column, exp.Column) and isinstance(literal, exp.Literal) and literal.is_string):
            continue
        value = literal.this
        quoted = "'" + value.replace("'", "''") + "'"
        table = aliases.get(column.table) if column.table else (tables[0] if len(tables) == 1 else None)
        if not table or gold_sql.count(quoted) != 1:
            continue
        wrong = "'" + mistaken_literal(value).replace("'", "''") + "'"
        out.append((gold_sql.replace(quoted, wrong), f"SELECT DISTINCT {column.name} FROM {table}"))
    return out


def play_episode(policy, env, index: int, moves: Sequence[str], unlearned: Sequence[int] = ()
                 ) -> tuple[Episode, dict[str, Any]]:
    """Play ``moves`` on question ``index`` of ``env`` (a ``TextToSQLAgentEnv``) and lay the episode out as
    ``agents.multiturn.run_episodes`` does: moves (``loss_mask`` 1, 0 for the moves at positions
    ``unlearned``) and the env's answers (0). Returns the episode and the last step's ``info``."""
    obs, _ = env.reset(options={"index": int(index)})
    prompt_ids = policy.encode(policy.agent_prompt(obs, env.max_turns))
    ids, mask, texts = [], [], []
    episode = Episode(0, prompt_ids, prompt_ids[:0], prompt_ids[:0].float(), prompt_ids[:0].float())
    info: dict[str, Any] = {}
    for position, move in enumerate(moves):
        move_ids = policy.encode(move)
        ids.append(move_ids)
        mask.append(torch.full((len(move_ids),), 0.0 if position in unlearned else 1.0))
        texts.append(move)
        _, reward, terminated, truncated, info = env.step(move)
        if episode.record(move, len(move_ids), reward, terminated or truncated, info):
            break
        feedback = policy.agent_feedback(info["reply"], info["turns_left"])
        feedback_ids = policy.encode(feedback)
        ids.append(feedback_ids)
        mask.append(torch.zeros(len(feedback_ids)))
        texts.append(feedback)
    episode.completion_ids = torch.cat(ids).long()
    episode.loss_mask = torch.cat(mask).float()
    episode.logprobs = torch.zeros(len(episode.completion_ids))
    episode.text = "".join(texts)
    return episode, info


def _working(env, index: int, candidates: Sequence[str]) -> list[str]:
    """The candidates whose exploration runs without error on question ``index``, each tried through the env."""
    works = []
    for query in candidates:
        env.reset(options={"index": int(index)})
        _, _, _, _, info = env.step(f"<sql>{query}</sql>")
        if info["move_errors"] == [None]:
            works.append(query)
    return works


def _recovery(env, index: int, gold: str, rng: random.Random) -> list[str] | None:
    """A drawn recovery pair for question ``index`` whose two explorations run and whose mistaken query comes
    back a floor; None when the question has none."""
    pairs = recovery_candidates(gold)
    rng.shuffle(pairs)
    for pair in pairs:
        moves = [f"<sql>{query}</sql>" for query in pair]
        if _working(env, index, pair) == list(pair) \
                and env.score_explorations(index, moves, ["sql", "sql"], [None, None]).floor[0]:
            return list(pair)
    return None


def gold_answer(env, index: int) -> str:
    """Question ``index``'s gold SQL as a warm-up episode submits it (no trailing semicolon)."""
    return env.example(index).gold_sql.strip().rstrip(";").rstrip()


def new_counts(max_turns: int) -> dict[str, int]:
    """The warm-up's counts, all zero (see :func:`build_episodes`)."""
    most = min(MAX_EXPLORATIONS, max_turns - 1)
    return {"skipped_not_select": 0, "skipped_too_long": 0, "skipped_not_correct": 0, "explore_failed": 0,
            "recoveries": 0, **{f"explorations_{n}": 0 for n in range(most + 1)}}


def choose_explorations(env, index: int, gold: str, rng: random.Random, *, recovery: float = 0.0,
                        counts: dict[str, int] | None = None) -> tuple[list[str], bool]:
    """The exploratory queries that come before the answer ``gold`` in question ``index``'s warm-up episode, in
    order, each already run without error through ``env`` (a ``TextToSQLAgentEnv``), and whether they make a
    recovery episode (a mistaken query that came back a floor, then the look-up). ``counts`` (optional) gets
    "explore_failed" (candidates dropped because they failed); draws from ``rng`` in a fixed order."""
    most = min(MAX_EXPLORATIONS, env.max_turns - 1)
    if recovery > 0 and most >= 2 and rng.random() < recovery:  # no draw at all when recovery is 0
        recovered = _recovery(env, index, gold, rng)
        if recovered:
            return recovered, True
    wanted = rng.randint(0, most)
    candidates = exploration_candidates(gold) if wanted else []
    if wanted and gold not in candidates:
        candidates.append(gold)
    works = _working(env, index, candidates)
    if counts is not None:
        counts["explore_failed"] += len(candidates) - len(works)
    chosen = rng.sample(works, min(wanted, len(works)))
    chosen.sort(key=lambda query: query == gold)  # the answer, run as a check, comes right before it
    return chosen, False


def build_episodes(indices: Sequence[int], policy, env, *, seed: int, max_move_tokens: int, recovery: float = 0.0
                   ) -> tuple[list[dict], dict[str, int]]:
    """Warm-up items of the questions ``indices``: ``prompt``, ``prompt_ids``, ``target_ids`` (the episode's
    completion: moves and env text), ``loss_mask``, ``episode``, ``explorations`` and ``recovery``; and counts:
    "skipped_too_long" (a move over ``max_move_tokens`` tokens), "skipped_not_correct" (the gold answer
    did not score as correct), "explorations_N" (episodes with N explorations), "explore_failed"
    (candidate explorations dropped because they failed), "recoveries" (recovery episodes, drawn for a
    ``recovery`` share of the questions when ``max_turns`` >= 3; a question without one gets a plain episode)."""
    rng = random.Random(seed)
    counts = new_counts(env.max_turns)
    items = []
    for index in indices:
        gold = gold_answer(env, index)
        chosen, recovered = choose_explorations(env, index, gold, rng, recovery=recovery, counts=counts)
        moves = [f"<sql>{query}</sql>" for query in chosen] + [f"<answer>{gold}</answer>"]
        if any(len(policy.encode(move)) > max_move_tokens for move in moves):
            counts["skipped_too_long"] += 1
            continue
        episode, info = play_episode(policy, env, index, moves, unlearned=(0,) if recovered else ())
        if not info.get("correct"):
            counts["skipped_not_correct"] += 1
            continue
        counts[f"explorations_{len(chosen)}"] += 1
        counts["recoveries"] += bool(recovered)
        prompt = policy.agent_prompt(env.observation_for(index), env.max_turns)
        items.append({"index": index, "prompt": prompt, "prompt_ids": episode.prompt_ids,
                      "target_ids": episode.completion_ids, "loss_mask": episode.loss_mask,
                      "episode": episode, "explorations": len(chosen), "recovery": bool(recovered)})
    return items, counts
