"""Every prompt text the agents use, in one place.

A prompt is a chat: one system message that states the task and shows the database (schema and
sample rows), then ``few_shot`` worked examples as user/assistant turns, then the question. The
assistant turn is prefilled with ``PREFILL`` ("```sql\\nSELECT"): without it SmolLM2-135M answers
in prose; with it the completion is the rest of a SELECT statement.

Worked examples exist for both of sqlenv's schemas, the five-table one (Athlete, Tournament,
Format, Medal, PersonalInformation) and the flat one (Medals). Which set is used is read from the
observation's CREATE TABLE text; an unknown schema gets no worked examples.

Multi-turn episodes (``TextToSQLAgent-v0``, ``agents/multiturn.py``) have their own prompt
(``build_agent_messages``): the ``<sql>``/``<answer>`` protocol, worked episodes (explore, see the
result, answer) and, after each move, the env's result as a user message (``agent_result_message``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFILL = "```sql\nSELECT"

SYSTEM_PROMPT = """\
You translate questions about an athlete into SQLite queries.
The database below describes one athlete: their medals (type 'MedalGold', 'MedalSilver' or 'MedalBronze', year, location), the tournaments and event formats they won them in, and their birth date.
Answer with exactly one SQLite SELECT statement in a ```sql code block and nothing else. Use only the tables and columns in the schema. Copy names and values exactly as they appear in the sample rows."""

DATABASE_TEMPLATE = """\
Database schema:
{schema}"""

SAMPLE_ROWS_TEMPLATE = """\
Sample rows:
{sample_rows}"""

QUESTION_TEMPLATE = "Question: {question}"


@dataclass(frozen=True)
class WorkedExample:
    """A question and its gold SQLite query, written for one schema."""

    question: str
    sql: str


# The joins every five-table query needs to reach a medal from an athlete.
_MEDAL_JOINS = (
    "FROM Medal m\n"
    "JOIN Format f ON m.format_id = f.format_id\n"
    "JOIN Tournament t ON f.tournament_id = t.tournament_id\n"
    "JOIN Athlete a ON t.athlete_id = a.athlete_id"
)

TABLES_EXAMPLES: tuple[WorkedExample, ...] = (
    WorkedExample(
        "How many World Championships Silver Medals did Anna Berg win?",
        f"SELECT COUNT(*)\n{_MEDAL_JOINS}\n"
        "WHERE a.name = 'Anna Berg' AND t.name = 'World Championships' AND m.type = 'MedalSilver';",
    ),
    WorkedExample(
        "In which year did Anna Berg win her first Gold Medal?",
        f"SELECT MIN(m.year)\n{_MEDAL_JOINS}\nWHERE a.name = 'Anna Berg' AND m.type = 'MedalGold';",
    ),
    WorkedExample(
        "Has Anna Berg ever won a Bronze Medal in the European Games?",
        "SELECT CASE WHEN COUNT(*) > 0 THEN 'Yes' ELSE 'No' END\n"
        f"{_MEDAL_JOINS}\n"
        "WHERE a.name = 'Anna Berg' AND t.name = 'European Games' AND m.type = 'MedalBronze';",
    ),
    WorkedExample(
        "How old was Anna Berg when she won her first medal?",
        f"SELECT MIN(m.year) - p.birth_year\n{_MEDAL_JOINS}\n"
        "JOIN PersonalInformation p ON p.athlete_id = a.athlete_id\nWHERE a.name = 'Anna Berg';",
    ),
    WorkedExample(
        "In which formats did Anna Berg win medals at the World Cup?",
        "SELECT DISTINCT f.name\nFROM Format f\n"
        "JOIN Tournament t ON f.tournament_id = t.tournament_id\n"
        "JOIN Athlete a ON t.athlete_id = a.athlete_id\n"
        "WHERE a.name = 'Anna Berg' AND t.name = 'World Cup';",
    ),
)

FLAT_EXAMPLES: tuple[WorkedExample, ...] = (
    WorkedExample(
        "How many World Championships Silver Medals did Anna Berg win?",
        "SELECT COUNT(*) FROM Medals\n"
        "WHERE athlete = 'Anna Berg' AND tournament = 'World Championships' AND medal = 'MedalSilver';",
    ),
    WorkedExample(
        "In which year did Anna Berg win her first Gold Medal?",
        "SELECT MIN(year) FROM Medals WHERE athlete = 'Anna Berg' AND medal = 'MedalGold';",
    ),
    WorkedExample(
        "Has Anna Berg ever won a Bronze Medal in the European Games?",
        "SELECT CASE WHEN COUNT(*) > 0 THEN 'Yes' ELSE 'No' END FROM Medals\n"
        "WHERE athlete = 'Anna Berg' AND tournament = 'European Games' AND medal = 'MedalBronze';",
    ),
    WorkedExample(
        "How old was Anna Berg when she won her first medal?",
        "SELECT MIN(year) - MIN(birth_year) FROM Medals WHERE athlete = 'Anna Berg';",
    ),
    WorkedExample(
        "In which formats did Anna Berg win medals at the World Cup?",
        "SELECT DISTINCT format FROM Medals WHERE athlete = 'Anna Berg' AND tournament = 'World Cup';",
    ),
)

WORKED_EXAMPLES = {"tables": TABLES_EXAMPLES, "flat": FLAT_EXAMPLES}

_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"'`\[]?(\w+)", re.IGNORECASE)


def detect_schema(schema_sql: str) -> str | None:
    """``"tables"``, ``"flat"`` or None, from the table names in CREATE TABLE text."""
    tables = {name.lower() for name in _CREATE_TABLE.findall(schema_sql or "")}
    if "medals" in tables:
        return "flat"
    if {"medal", "athlete"} <= tables:
        return "tables"
    return None


def worked_examples(schema_sql: str, few_shot: int) -> tuple[WorkedExample, ...]:
    """The first ``few_shot`` worked examples for the schema in ``schema_sql`` (none if unknown)."""
    if few_shot < 0:
        raise ValueError(f"few_shot must be >= 0, got {few_shot}")
    kind = detect_schema(schema_sql)
    return WORKED_EXAMPLES[kind][:few_shot] if kind else ()


def system_message(observation: dict) -> str:
    """The system prompt followed by the observation's schema and sample rows."""
    parts = [SYSTEM_PROMPT, DATABASE_TEMPLATE.format(schema=observation["schema"].strip())]
    rows = (observation.get("sample_rows") or "").strip()
    if rows:
        parts.append(SAMPLE_ROWS_TEMPLATE.format(sample_rows=rows))
    return "\n\n".join(parts)


def answer_text(sql: str) -> str:
    """How an assistant turn writes a query: a fenced sql block (what ``PREFILL`` opens)."""
    return f"```sql\n{sql.strip()}\n```"


def build_messages(observation: dict, few_shot: int = 2) -> list[dict[str, str]]:
    """Chat messages for an observation ``{"question", "schema", "sample_rows"}``.

    The list ends with the user's question; the caller applies the chat template with a
    generation prompt and appends ``PREFILL`` (``LoRAPolicy.prompt`` does both).
    """
    messages = [{"role": "system", "content": system_message(observation)}]
    for example in worked_examples(observation["schema"], few_shot):
        messages.append({"role": "user", "content": QUESTION_TEMPLATE.format(question=example.question)})
        messages.append({"role": "assistant", "content": answer_text(example.sql)})
    messages.append({"role": "user", "content": QUESTION_TEMPLATE.format(question=observation["question"].strip())})
    return messages


def render_plain(messages: list[dict[str, str]]) -> str:
    """A chat as plain text, for tokenizers without a chat template; ends with an assistant cue."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant: "


# --------------------------------------------------------------------------- multi-turn (TextToSQLAgent-v0)
# The agent explores with <sql> blocks, sees each result as the next user message, and submits with an
# <answer> block (docs/agent_env.md). No prefill: the worked examples show the two tags.

AGENT_SYSTEM_PROMPT = """\
You answer questions about an athlete by querying a SQLite database, in up to {max_turns} turns.
The database below describes one athlete: their medals (type 'MedalGold', 'MedalSilver' or 'MedalBronze', year, location), the tournaments and event formats they won them in, and their birth date.
In each turn write exactly one of:
<sql>QUERY</sql> to run a SQLite query and see its result (to check names, values or counts), or
<answer>QUERY</answer> to submit the SQLite query that answers the question; this ends the episode.
Use only the tables and columns in the schema. Copy names and values exactly as they appear in the results."""

AGENT_RESULT_TEMPLATE = "Result:\n{result}\n\n{turns_left}"


@dataclass(frozen=True)
class AgentExample:
    """A worked multi-turn episode: the question, one exploration with its result, the answer."""

    question: str
    explore: str
    result: str
    answer: str


AGENT_EXAMPLES: dict[str, tuple[AgentExample, ...]] = {
    "flat": (
        AgentExample(
            "How many World Championships Silver Medals did Anna Berg win?",
            "SELECT DISTINCT tournament, medal FROM Medals WHERE athlete = 'Anna Berg'",
            "3 rows\n| tournament          | medal       |\n|---------------------|-------------|\n"
            "| World Championships | MedalSilver |\n| World Championships | MedalGold   |\n"
            "| European Games      | MedalBronze |",
            "SELECT COUNT(*) FROM Medals\n"
            "WHERE athlete = 'Anna Berg' AND tournament = 'World Championships' AND medal = 'MedalSilver'",
        ),
        AgentExample(
            "In which year did Anna Berg win her first Gold Medal?",
            "SELECT medal, year FROM Medals WHERE athlete = 'Anna Berg' AND medal = 'MedalGold'",
            "2 rows\n| medal     | year |\n|-----------|------|\n| MedalGold | 2014 |\n| MedalGold | 2011 |",
            "SELECT MIN(year) FROM Medals WHERE athlete = 'Anna Berg' AND medal = 'MedalGold'",
        ),
    ),
    "tables": (
        AgentExample(
            "How many World Championships Silver Medals did Anna Berg win?",
            "SELECT DISTINCT t.name, m.type\n" + _MEDAL_JOINS + "\nWHERE a.name = 'Anna Berg'",
            "3 rows\n| name                | type        |\n|---------------------|-------------|\n"
            "| World Championships | MedalSilver |\n| World Championships | MedalGold   |\n"
            "| European Games      | MedalBronze |",
            f"SELECT COUNT(*)\n{_MEDAL_JOINS}\n"
            "WHERE a.name = 'Anna Berg' AND t.name = 'World Championships' AND m.type = 'MedalSilver'",
        ),
        AgentExample(
            "In which year did Anna Berg win her first Gold Medal?",
            f"SELECT m.type, m.year\n{_MEDAL_JOINS}\nWHERE a.name = 'Anna Berg' AND m.type = 'MedalGold'",
            "2 rows\n| type      | year |\n|-----------|------|\n| MedalGold | 2014 |\n| MedalGold | 2011 |",
            f"SELECT MIN(m.year)\n{_MEDAL_JOINS}\nWHERE a.name = 'Anna Berg' AND m.type = 'MedalGold'",
        ),
    ),
}


def turns_left_text(turns_left: int) -> str:
    """What the result message says about the turns still available."""
    if turns_left <= 1:
        return "This is your last turn: submit <answer>QUERY</answer> now."
    return f"{turns_left} turns left."


def agent_result_message(result: str, turns_left: int) -> str:
    """The user message after a move: the env's result (or error) text and the turns left."""
    return AGENT_RESULT_TEMPLATE.format(result=result.strip(), turns_left=turns_left_text(turns_left))


def build_agent_messages(observation: dict, max_turns: int, few_shot: int = 2) -> list[dict[str, str]]:
    """Chat messages that start a multi-turn episode: the system prompt with the database, ``few_shot``
    worked episodes (explore, see the result, answer), then the question. Ends with the user's question."""
    if max_turns < 2:
        raise ValueError(f"max_turns must be >= 2 for a multi-turn prompt, got {max_turns}")
    if few_shot < 0:
        raise ValueError(f"few_shot must be >= 0, got {few_shot}")
    parts = [AGENT_SYSTEM_PROMPT.format(max_turns=max_turns),
             DATABASE_TEMPLATE.format(schema=observation["schema"].strip())]
    rows = (observation.get("sample_rows") or "").strip()
    if rows:
        parts.append(SAMPLE_ROWS_TEMPLATE.format(sample_rows=rows))
    messages = [{"role": "system", "content": "\n\n".join(parts)}]
    kind = detect_schema(observation["schema"])
    for example in (AGENT_EXAMPLES[kind][:few_shot] if kind else ()):
        messages += [
            {"role": "user", "content": QUESTION_TEMPLATE.format(question=example.question)},
            {"role": "assistant", "content": f"<sql>{example.explore}</sql>"},
            {"role": "user", "content": agent_result_message(example.result, max_turns - 1)},
            {"role": "assistant", "content": f"<answer>{example.answer}</answer>"},
        ]
    messages.append({"role": "user", "content": QUESTION_TEMPLATE.format(question=observation["question"].strip())})
    return messages
