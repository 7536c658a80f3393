"""sqlenv.integrations.verifiers: scripted policies evaluated with verifiers' own task scoring."""

import pytest

vf = pytest.importorskip("verifiers.v1")

import sqlenv  # noqa: E402
from sqlenv.integrations import verifiers as adapter  # noqa: E402


@pytest.fixture(scope="module")
def gold():
    return {ex.question: ex.gold_sql for ex in sqlenv.load_dataset("generated")}


def _gold_for(gold, messages):
    user = next(m["content"] for m in messages if m["role"] == "user")
    return gold[user.rsplit("Question: ", 1)[1].strip()]


def test_taskset_yields_prompted_tasks_without_the_gold():
    tasks = list(adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=2)))
    example = sqlenv.load_dataset("generated")[1]
    assert [t.data.index for t in tasks] == [0, 1] and tasks[1].data.id == example.id
    assert tasks[1].data.prompt.endswith("Question: " + example.question)
    assert "```sql" in tasks[1].data.system_prompt and example.gold_sql not in tasks[1].data.prompt
    assert [f.__name__ for f in tasks[0].hooks("reward")] == ["sqlenv"]
    assert sorted(f.__name__ for f in tasks[0].hooks("metric")) == ["correct", "executed", "f1"]
    assert tasks[0].key == "sqlenv:TextToSQL-v0:generated-train-0-00000"


def test_gold_policy_scores_one_on_every_task(gold):
    taskset = adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=4))
    results = adapter.play(taskset, lambda m: "Sure.\n```sql\n" + _gold_for(gold, m) + "\n```")
    assert [r["reward"] for r in results] == [1.0] * 4
    assert results[0]["rewards"] == {"sqlenv": 1.0}
    assert results[0]["metrics"] == {"correct": 1.0, "executed": 1.0, "f1": 1.0}


def test_rubric_follows_the_reward_preset():
    broken = adapter.play(adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=1)), lambda m: "I don't know")
    assert broken[0]["reward"] == -1.0 and broken[0]["metrics"]["executed"] == 0.0
    paper = adapter.play(adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=1, reward="paper")),
                         lambda m: "SELECT nonsense FROM nowhere")
    assert paper[0]["reward"] == -100.0


def test_agent_policy_explores_then_answers(gold):
    config = adapter.SQLTasksetConfig(env=sqlenv.AGENT_ENV_ID, max_turns=3, limit=2)
    seen = []

    def policy(messages):
        moves = sum(m["role"] == "assistant" for m in messages)
        if moves == 0:
            return "<sql>SELECT COUNT(*) FROM Medal</sql>"
        seen.append(messages[-1]["content"])
        return f"<answer>{_gold_for(gold, messages)}</answer>"

    results = adapter.play(adapter.SQLTaskset(config), policy)
    assert [r["reward"] for r in results] == [1.0, 1.0]
    assert seen[0].startswith("Turn 1/3 <sql>SELECT COUNT(*) FROM Medal</sql>\n1 row\n| COUNT(*) |")
    assert "<answer>QUERY</answer>" in adapter.SQLTaskset(config).take(1).__iter__().__next__().data.system_prompt


def test_agent_without_an_answer_is_truncated_with_the_error_reward():
    config = adapter.SQLTasksetConfig(env=sqlenv.AGENT_ENV_ID, max_turns=2, limit=1)
    results = adapter.play(adapter.SQLTaskset(config), lambda m: "<sql>SELECT 1</sql>")
    assert results[0]["reward"] == -1.0 and results[0]["metrics"]["executed"] == 0.0


def test_replay_is_the_gymnasium_env_score(gold):
    example = sqlenv.load_dataset("generated")[7]
    config = adapter.SQLTaskConfig(env=sqlenv.AGENT_ENV_ID, env_kwargs={"max_turns": 4})
    reward, info, done = adapter.replay(config, 7, ["<sql>SELECT 1</sql>", "oops", f"<answer>{example.gold_sql}</answer>",
                                                    "ignored after the end"])
    assert (reward, done, info["correct"], info["move_errors"]) == (1.0, True, True, [None, "no_tag", None])


def test_views_and_bad_configuration():
    taskset = adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=10))
    assert [t.data.index for t in taskset.include(idx=["3:5"])] == [3, 4]
    with pytest.raises(ValueError, match="env='Other-v0'"):
        list(adapter.SQLTaskset(adapter.SQLTasksetConfig(env="Other-v0", limit=1)))
    with pytest.raises(ValueError, match="reward='nope'"):
        list(adapter.SQLTaskset(adapter.SQLTasksetConfig(reward="nope", limit=1)))
    assert issubclass(adapter.SQLAgentEnv, vf.SingleAgentEnv)
