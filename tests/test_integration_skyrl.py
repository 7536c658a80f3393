"""sqlenv.integrations.skyrl driven through the real skyrl-gym registry and Env interface."""

import pytest

skyrl_gym = pytest.importorskip("skyrl_gym")

import sqlenv  # noqa: E402
from sqlenv.integrations import skyrl as adapter  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    return sqlenv.load_dataset("generated")


def test_both_envs_are_registered():
    assert skyrl_gym.spec("sqlenv").entry_point == "sqlenv.integrations.skyrl:SQLSkyRLEnv"
    assert skyrl_gym.spec("sqlenv_agent").entry_point == "sqlenv.integrations.skyrl:SQLAgentSkyRLEnv"



def test_prompts_are_the_recorded_ones(dataset):
    from test_prompts import RENDERED

    recorded = RENDERED["tables"]["stacks"]
    for env_id, config, expected in (("sqlenv", {}, recorded["single"]),
                                     ("sqlenv_agent", {"max_turns": 5}, recorded["agent"])):
        env = skyrl_gym.make(env_id, env_config=config, extras={"extra_info": {"index": 0}})
        assert env.init(None)[0] == expected, env_id
        env.close()
        assert adapter.skyrl_rows(dataset, env_id, max_turns=5, indices=[0])[0]["prompt"] == expected

def test_single_step_episode_scores_the_gold_sql(dataset):
    example = dataset[3]
    env = skyrl_gym.make("sqlenv", env_config={"reward": "binary"}, extras={"extra_info": {"index": 3}})
    prompt, info = env.init(None)
    assert info["id"] == example.id and "gold_sql" not in info
    assert prompt[0]["role"] == "system" and example.question in prompt[1]["content"]
    out = env.step(f"Here it is:\n```sql\n{example.gold_sql}\n```")
    assert out["done"] is True and out["observations"] == []
    assert out["reward"] == 1.0 and out["metadata"]["correct"] is True
    assert out["metadata"]["answer"] == example.answer
    assert env.get_metrics() == {"turns": 1, "executed": 1.0, "correct": 1.0}
    env.close()


def test_single_step_garbage_is_penalised_not_raised():
    env = skyrl_gym.make("sqlenv", extras={"index": 0})
    env.init([{"role": "user", "content": "given prompt"}])
    out = env.step("no query here")
    assert out["done"] is True and out["reward"] == -1.0 and out["metadata"]["executed"] is False
    env.close()


def test_agent_episode_explores_then_answers(dataset):
    example = dataset[3]
    env = skyrl_gym.make("sqlenv_agent", env_config={"max_turns": 4}, extras={"extra_info": {"index": 3}})
    given = [{"role": "user", "content": "the dataset's prompt"}]
    prompt, info = env.init(given)
    assert prompt == given and info["turns_left"] == 4
    out = env.step("Count first. <sql>SELECT COUNT(*) FROM Medal</sql>")
    assert out["done"] is False and out["reward"] == 0.0
    assert out["observations"] == [{"role": "user", "content":
        "Turn 1/4 <sql>SELECT COUNT(*) FROM Medal</sql>\n1 row\n| COUNT(*) |\n|----------|\n| 11       |"}]
    out = env.step("SELECT 1")  # malformed move: costs a turn, says why
    assert out["done"] is False
    assert out["observations"][0]["content"].startswith("Turn 2/4 (malformed move) SELECT 1\nMalformed move: no <sql>")
    out = env.step(f"<answer>{example.gold_sql}</answer>")
    assert out["done"] is True and out["reward"] == 1.0 and out["observations"] == []
    assert out["metadata"]["move_errors"] == [None, "no_tag", None]
    assert env.get_metrics() == {"turns": 3, "executed": 1.0, "correct": 1.0}
    env.close()


def test_agent_truncation_gives_the_no_answer_reward():
    env = skyrl_gym.make("sqlenv_agent", env_config={"max_turns": 2}, extras={"index": 1})
    env.init(None)
    assert env.step("<sql>SELECT 1</sql>")["done"] is False
    out = env.step("<sql>SELECT 2</sql>")
    assert out["done"] is True and out["reward"] == -1.0 and out["metadata"]["error"] == "no_answer"
    env.close()


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="reward='nope'"):
        skyrl_gym.make("sqlenv", env_config={"reward": "nope"}, extras={"index": 0})
    with pytest.raises(ValueError, match="index='3'"):
        skyrl_gym.make("sqlenv", extras={"index": "3"})


def test_skyrl_rows_pin_questions_and_match_init(dataset):
    rows = adapter.skyrl_rows(dataset, "sqlenv_agent", max_turns=3, indices=[5, 7])
    assert [r["extra_info"]["index"] for r in rows] == [5, 7]
    assert rows[0]["reward_spec"]["ground_truth"] == dataset[5].answer
    env = skyrl_gym.make("sqlenv_agent", extras=rows[1])
    prompt, info = env.init(None)
    assert prompt == rows[1]["prompt"] and info["id"] == dataset[7].id and env.max_turns == 3
    env.close()
