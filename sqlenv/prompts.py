"""Every prompt text, in one place: what a model reads before it writes SQL, on every path.

Torch-free and stack-free, so the trainer (``agents``) and every adapter (TRL, verifiers, SkyRL) import
the same texts. The other half of the text protocol, from a completion back to the SQL the env scores,
is :mod:`sqlenv.completion` (``extract_sql``, the one extractor every path uses).

Two prompt families, different on purpose:

* **The trainer's prompt** (``agents``: :func:`build_messages`, :func:`build_agent_messages`,
  :data:`PREFILL`) is written for the athlete databases (TempTabQA-C and the generated benchmark): it
  names the medal types, shows ``few_shot`` worked examples for the schema in the observation (the
  five-table one or the flat one, read from its CREATE TABLE text; an unknown schema gets none) and
  the policy prefills the assistant turn with ``PREFILL`` ("```sql\\nSELECT"), without which
  SmolLM2-135M answers in prose. Trained adapters have learned these exact bytes.
* **The stacks' default prompt** (:func:`default_messages`, :func:`agent_messages`, the tool prompts
  of ``TRL environment_factory``) names no dataset (Spider, BIRD, JSONL, any registered name), shows
  no worked examples and prefills nothing: TRL, verifiers and SkyRL send chat messages to a model
  that writes its whole reply, often through an endpoint that cannot prefill. A stack can use the
  trainer's prompt instead (``to_trl_dataset(prompt_fn=lambda obs, ex: build_messages(obs, 2))``).

Multi-turn episodes (``TextToSQLAgent-v0``) have a prompt in each family: the ``<sql>``/``<answer>``
protocol; after each move the trainer shows :func:`agent_result_message`, the stacks
:func:`latest_turn` (the env's newest transcript entry).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    # the trainer's prompt
    "PREFILL", "SYSTEM_PROMPT", "DATABASE_TEMPLATE", "SAMPLE_ROWS_TEMPLATE", "QUESTION_TEMPLATE",
    "WorkedExample", "TABLES_EXAMPLES", "FLAT_EXAMPLES", "WORKED_EXAMPLES", "detect_schema",
    "worked_examples", "system_message", "answer_text", "build_messages", "render_plain",
    "AGENT_SYSTEM_PROMPT", "AGENT_RESULT_TEMPLATE", "AgentExample", "AGENT_EXAMPLES", "turns_left_text",
    "agent_result_message", "build_agent_messages",
    # the stacks' default prompt
    "DEFAULT_SYSTEM_PROMPT", "DEFAULT_AGENT_SYSTEM_PROMPT", "USER_TEMPLATE", "TOOLS_AGENT_SYSTEM_PROMPT",
    "TOOLS_ANSWER_SYSTEM_PROMPT", "TOOL_CALL_EXAMPLE", "TOOL_CALL_TAGS", "tool_call_text", "user_message",
    "default_messages", "fenced_prompt", "agent_messages", "messages_for", "latest_turn",
]

# =========================================================================== the trainer's prompt
PREFILL = "```sql\nSELECT"

_ATHLETE = (
    "The database below describes one athlete: their medals (type 'MedalGold', 'MedalSilver' or "
    "'MedalBronze', year, location), the tournaments and event formats they won them in, and their "
    "birth date.\n"
)

SYSTEM_PROMPT = (
    "You translate questions about an athlete into SQLite queries.\n"
    + _ATHLETE
    + "Answer with exactly one SQLite SELECT statement in a ```sql code block and nothing else. Use only "
    "the tables and columns in the schema. Copy names and values exactly as they appear in the sample rows."
)

DATABASE_TEMPLATE = "Database schema:\n{schema}"
SAMPLE_ROWS_TEMPLATE = "Sample rows:\n{sample_rows}"
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


def _database_parts(observation: dict) -> list[str]:
    """The observation's schema and (when any) sample rows, as system-message paragraphs."""
    parts = [DATABASE_TEMPLATE.format(schema=observation["schema"].strip())]
    rows = (observation.get("sample_rows") or "").strip()
    if rows:
        parts.append(SAMPLE_ROWS_TEMPLATE.format(sample_rows=rows))
    return parts


def system_message(observation: dict) -> str:
    """The system prompt followed by the observation's schema and sample rows."""
    return "\n\n".join([SYSTEM_PROMPT, *_database_parts(observation)])


def answer_text(sql: str) -> str:
    """How an assistant turn writes a query: a fenced sql block (what ``PREFILL`` opens)."""
    return f"```sql\n{sql.strip()}\n```"


def _question(question: str) -> dict[str, str]:
    return {"role": "user", "content": QUESTION_TEMPLATE.format(question=question.strip())}


def build_messages(observation: dict, few_shot: int = 2) -> list[dict[str, str]]:
    """Chat messages for an observation ``{"question", "schema", "sample_rows"}``.

    The list ends with the user's question; the caller applies the chat template with a
    generation prompt and appends ``PREFILL`` (``LoRAPolicy.prompt`` does both).
    """
    messages = [{"role": "system", "content": system_message(observation)}]
    for example in worked_examples(observation["schema"], few_shot):
        messages.append(_question(example.question))
        messages.append({"role": "assistant", "content": answer_text(example.sql)})
    messages.append(_question(observation["question"]))
    return messages


def render_plain(messages: list[dict[str, str]]) -> str:
    """A chat as plain text, for tokenizers without a chat template; ends with an assistant cue."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant: "


# ---------------------------------------------------------------- the trainer's multi-turn prompt
# The agent explores with <sql> blocks, sees each result as the next user message, and submits with an
# <answer> block (docs/agent_env.md). No prefill: the worked examples show the two tags.

AGENT_SYSTEM_PROMPT = (
    "You answer questions about an athlete by querying a SQLite database, in up to {max_turns} turns.\n"
    + _ATHLETE
    + "In each turn write exactly one of:\n"
    "<sql>QUERY</sql> to run a SQLite query and see its result (to check names, values or counts), or\n"
    "<answer>QUERY</answer> to submit the SQLite query that answers the question; this ends the episode.\n"
    "Use only the tables and columns in the schema. Copy names and values exactly as they appear in the "
    "results. When a query's result already answers the question, submit that same query."
)

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
            "SELECT MIN(year) FROM Medals WHERE athlete = 'Anna Berg' AND medal = 'MedalGold'",
            "1 row\n| MIN(year) |\n|-----------|\n| 2011      |",
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
            f"SELECT MIN(m.year)\n{_MEDAL_JOINS}\nWHERE a.name = 'Anna Berg' AND m.type = 'MedalGold'",
            "1 row\n| MIN(m.year) |\n|-------------|\n| 2011        |",
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
    system = "\n\n".join([AGENT_SYSTEM_PROMPT.format(max_turns=max_turns), *_database_parts(observation)])
    messages = [{"role": "system", "content": system}]
    kind = detect_schema(observation["schema"])
    for example in (AGENT_EXAMPLES[kind][:few_shot] if kind else ()):
        messages += [
            _question(example.question),
            {"role": "assistant", "content": f"<sql>{example.explore}</sql>"},
            {"role": "user", "content": agent_result_message(example.result, max_turns - 1)},
            {"role": "assistant", "content": f"<answer>{example.answer}</answer>"},
        ]
    messages.append(_question(observation["question"]))
    return messages


# =========================================================================== the stacks' default prompt
DEFAULT_SYSTEM_PROMPT = (
    "You are an expert in SQLite. Given a database schema, a few sample rows and a question, "
    "write one SQLite query that answers the question. Reply with the query in a ```sql code block."
)
DEFAULT_AGENT_SYSTEM_PROMPT = (
    "You are an expert in SQLite. Answer a question about a database in up to {max_turns} moves. "
    "Each reply holds exactly one block: <sql>QUERY</sql> runs QUERY (read-only) and shows you its "
    "result, <answer>QUERY</answer> submits QUERY as your final answer and ends the episode."
)


#: The tags around a tool call in Qwen2.5's chat template and TRL's parser (one special token each in Qwen2.5's
#: vocabulary, plain text in SmolLM2's).
TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")


def tool_call_text(name: str, arguments: dict) -> str:
    """One tool call as Qwen2.5's chat template writes it and TRL's parser reads it (Hermes style):
    ``<tool_call>``, a line of JSON with the tool's name and arguments, ``</tool_call>``."""
    opening, closing = TOOL_CALL_TAGS
    return opening + "\n" + json.dumps({"name": name, "arguments": arguments}) + "\n" + closing


#: The worked call of the tool prompts: schema-neutral (``sqlite_master`` exists in every SQLite
#: database), so a model that copies it still makes a valid call. Without it Qwen2.5-Coder-0.5B writes
#: its calls as a ```json fence, which TRL does not parse (docs/integrations.md).
TOOL_CALL_EXAMPLE = tool_call_text("run_sql", {"query": "SELECT name FROM sqlite_master WHERE type = 'table'"})
#: The system prompts of TRL ``environment_factory`` training, where the model calls tools instead.
TOOLS_AGENT_SYSTEM_PROMPT = (
    "You are an expert in SQLite. Answer the user's question about the database below. Call run_sql to "
    "explore the data (it returns the result rows or the error), then call submit_answer once with the "
    "single SQLite query whose result answers the question. Only the submitted query is scored.\n"
    "Write each call as one JSON object between <tool_call> tags, exactly like this:\n" + TOOL_CALL_EXAMPLE
)
TOOLS_ANSWER_SYSTEM_PROMPT = (
    "You are an expert in SQLite. Answer the user's question about the database below: call "
    "submit_answer once with the single SQLite query whose result answers the question.\n"
    "Write the call as one JSON object between <tool_call> tags, exactly like this:\n"
    + tool_call_text("submit_answer", {"query": "SELECT COUNT(*) FROM the_table WHERE the_column = 'a value'"})
)
USER_TEMPLATE = "Database schema:\n{schema}\n\n{sample_block}Question: {question}"

#: A worked tool episode on a made-up one-table database, as chat turns placed before the real question
#: (:func:`tools_demo_messages`): the chat template renders its calls in the model's own tool-call format.
TOOLS_DEMO_OBSERVATION = {
    "schema": "CREATE TABLE city (name TEXT, country TEXT, population INTEGER);",
    "sample_rows": "city: name | country | population\nOslo | Norge | 709\nBergen | Norge | 291",
    "question": "How many cities have over 300 thousand people?",
}
TOOLS_DEMO_QUERY = "SELECT COUNT(*) FROM city WHERE population > 300"


def _tool_call_turn(name: str, query: str) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {"query": query}}}]}


def tools_demo_messages(multi_turn: bool = True, max_turns: int = 5, echo_moves: bool = True) -> list[dict]:
    """The worked episode's turns: the question, then (multi-turn) a ``run_sql`` call and its result, then
    the ``submit_answer`` call and its result, each result as the env returns it (``echo_moves``: as
    ``TextToSQLAgentTools(echo_moves=)`` writes it; tests/test_prompts.py)."""
    query = TOOLS_DEMO_QUERY
    messages: list[dict] = [{"role": "user", "content": user_message(TOOLS_DEMO_OBSERVATION)}]
    if not multi_turn:
        return messages + [_tool_call_turn("submit_answer", query),
                           {"role": "tool", "name": "submit_answer", "content": "Answer submitted."}]
    sql, answer = (f" <sql>{query}</sql>", f" <answer>{query}</answer>") if echo_moves else ("", "")
    return messages + [
        _tool_call_turn("run_sql", query),
        {"role": "tool", "name": "run_sql",
         "content": f"Turn 1/{max_turns}{sql}\n1 row\n| COUNT(*) |\n|----------|\n| 1        |"},
        _tool_call_turn("submit_answer", query),
        {"role": "tool", "name": "submit_answer", "content": f"Turn 2/{max_turns}{answer}\nAnswer submitted."},
    ]




def user_message(observation: dict[str, str]) -> str:
    """The stacks' user turn: the observation's schema, sample rows (when any) and question, as given."""
    rows = observation.get("sample_rows") or ""
    return USER_TEMPLATE.format(schema=observation["schema"], question=observation["question"],
                                sample_block=f"Sample rows:\n{rows}\n\n" if rows else "")


def default_messages(observation: dict[str, str],
                     system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Chat messages for one observation: a system prompt and a user turn with schema, rows and question."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_message(observation)}]


def fenced_prompt(messages: list[dict[str, str]]) -> str:
    """A system and a user message as one plain string ending in an opened ```sql fence."""
    return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\n```sql\n"


def agent_messages(observation: dict[str, str], max_turns: int) -> list[dict[str, str]]:
    """System and user messages opening a ``TextToSQLAgent-v0`` episode."""
    return default_messages(observation, DEFAULT_AGENT_SYSTEM_PROMPT.format(max_turns=max_turns))


def messages_for(observation: dict[str, str], max_turns: int | None) -> list[dict[str, str]]:
    """The opening messages: single-step when ``max_turns`` is None, else multi-turn."""
    return default_messages(observation) if max_turns is None else agent_messages(observation, max_turns)


def latest_turn(info: dict) -> str:
    """The newest entry of an agent env's transcript, from that step's ``info``: the move (``Turn t/N``
    echoing it) and its result; whole even when the transcript is cut to ``transcript_chars``."""
    return info["result"]
