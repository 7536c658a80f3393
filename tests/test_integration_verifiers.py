"""sqlenv.integrations.verifiers: scripted policies scored by verifiers, through ``play`` and real evals.

The eval tests run verifiers' own evaluation (``run_eval``, what ``vf-eval`` calls, and the ``vf-eval``
CLI) against a scripted OpenAI-compatible server on localhost (``ChatServer``): each rollout is verifiers' chat program,
run by ``SQLChatHarness``, talking to the server through verifiers' interception proxy.
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers.v1")

import sqlenv  # noqa: E402
from sqlenv.integrations import verifiers as adapter  # noqa: E402
from sqlenv.integrations.chat_server import ChatServer  # noqa: E402


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



def test_prompts_are_the_recorded_ones():
    from test_prompts import RENDERED

    recorded = RENDERED["tables"]["stacks"]
    for config, expected in ((adapter.SQLTasksetConfig(limit=1), recorded["single"]),
                             (adapter.SQLTasksetConfig(env=sqlenv.AGENT_ENV_ID, max_turns=5, limit=1),
                              recorded["agent"])):
        task = next(iter(adapter.SQLTaskset(config)))
        assert [task.data.system_prompt, task.data.prompt] == [m["content"] for m in expected]

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
    replies = ["<sql>SELECT 1</sql>", "oops", f"<answer>{example.gold_sql}</answer>", "ignored after the end"]
    reward, info, done = adapter.replay(config, 7, replies)
    assert (reward, done, info["correct"], info["move_errors"]) == (1.0, True, True, [None, "no_tag", None])


@pytest.fixture
def steps(monkeypatch):
    """Every move any TextToSQLAgent-v0 env in this process plays, in order."""
    from sqlenv.agent_env import TextToSQLAgentEnv

    played, step = [], TextToSQLAgentEnv.step

    def counted(self, action):
        played.append(action)
        return step(self, action)

    monkeypatch.setattr(TextToSQLAgentEnv, "step", counted)
    return played


def test_each_move_is_played_once(gold, steps):
    config = adapter.SQLTasksetConfig(env=sqlenv.AGENT_ENV_ID, max_turns=5, limit=1)

    def policy(messages):
        moves = sum(m["role"] == "assistant" for m in messages)
        if moves < 4:
            return f"<sql>SELECT {moves}</sql>"
        return f"<answer>{_gold_for(gold, messages)}</answer>"

    results = adapter.play(adapter.SQLTaskset(config), policy)
    assert results[0]["reward"] == 1.0 and results[0]["metrics"]["correct"] == 1.0
    assert steps[:4] == [f"<sql>SELECT {k}</sql>" for k in range(4)] and len(steps) == 5
    assert len(adapter.EPISODES) == 0  # the rollout's env was closed when the episode ended


def test_taskset_takes_the_env_arguments():
    flat = list(adapter.SQLTaskset(adapter.SQLTasksetConfig(schema="flat", limit=1)))[0]
    assert flat.data.prompt.startswith("Database schema:\nCREATE TABLE Medals (")
    assert flat.config.env_kwargs["schema"] == "flat"
    config = adapter.SQLTasksetConfig(env=sqlenv.AGENT_ENV_ID, max_instructions=1_000,
                                      result_rows=2, limit=1)
    task = list(adapter.SQLTaskset(config))[0]
    chosen = ("max_instructions", "result_rows", "max_turns")
    assert {k: task.config.env_kwargs[k] for k in chosen} == {
        "max_instructions": 1_000, "result_rows": 2, "max_turns": 5}
    heavy = "<answer>SELECT COUNT(*) FROM Medal a, Medal b, Medal c</answer>"
    reward, info, done = adapter.replay(task.config, 0, [heavy])
    unbounded = adapter.replay(adapter.SQLTaskConfig(env=sqlenv.AGENT_ENV_ID), 0, [heavy])[1]
    assert (reward, done, unbounded["error"]) == (-1.0, True, None)
    assert info["error"] is not None  # the instruction budget reached the env
    literal = list(adapter.SQLTaskset(adapter.SQLTasksetConfig(literal_answers="unanswered", limit=1)))[0]
    reward, info, _ = adapter.replay(literal.config, 0, ["SELECT 0"])
    assert (reward, info["error"]) == (-1.0, "literal")  # the option reached the env
    single = adapter.SQLTasksetConfig(max_turns=3, result_rows=2, limit=1)
    assert "result_rows" not in adapter.env_kwargs(single)  # agent-only: not for TextToSQL-v0


def test_views_and_bad_configuration():
    taskset = adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=10))
    assert [t.data.index for t in taskset.include(idx=["3:5"])] == [3, 4]
    with pytest.raises(ValueError, match="env='Other-v0'"):
        list(adapter.SQLTaskset(adapter.SQLTasksetConfig(env="Other-v0", limit=1)))
    with pytest.raises(ValueError, match="reward='nope'"):
        list(adapter.SQLTaskset(adapter.SQLTasksetConfig(reward="nope", limit=1)))
    assert issubclass(adapter.SQLAgentEnv, vf.Env)


# --- real verifiers evaluations against a scripted model server ---------------------------------

@pytest.fixture
def scripted():
    servers = []

    def start(policy):
        servers.append(ChatServer(policy))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _eval(model, out, **taskset):
    """verifiers' eval runner (the body of ``vf-eval``) on the sqlenv taskset; the episodes' traces."""
    from verifiers.v1.cli.eval.runner import run_eval
    from verifiers.v1.configs.cli.eval import EvalConfig

    config = EvalConfig.model_validate({
        "env": {"taskset": {"id": "sqlenv-verifiers", **taskset}}, "model": "scripted",
        "client": {"base_url": model.base_url}, "push": False, "rich": None, "output_dir": str(out)})
    assert isinstance(config.env, adapter.SQLAgentEnvConfig) and config.env.agent.runtime.type == "subprocess"
    episodes = asyncio.run(run_eval(config))
    traces = sorted((t for e in episodes for t in e.traces), key=lambda t: t.task.data.index)
    assert all(t.ok and not t.errors for t in traces), [t.errors for t in traces]
    return traces


def _reward(trace):
    return sum(r.score * r.weight for r in trace.rewards.values())


def test_eval_gold_policy_scores_one_through_the_chat_harness(gold, scripted, tmp_path):
    model = scripted(lambda m: "Sure.\n```sql\n" + _gold_for(gold, m) + "\n```")
    traces = _eval(model, tmp_path, limit=3)
    tasks = list(adapter.SQLTaskset(adapter.SQLTasksetConfig(limit=3)))
    assert [t.task.data.index for t in traces] == [0, 1, 2]
    assert [_reward(t) for t in traces] == [1.0] * 3
    assert traces[0].metrics == {"correct": 1.0, "executed": 1.0, "f1": 1.0}
    assert traces[0].agent.config.harness.id == "sqlenv-verifiers" and traces[0].num_turns == 1
    seen = sorted(model.requests, key=lambda body: body["messages"][1]["content"] != tasks[0].data.prompt)
    assert len(model.requests) == 3 and seen[0]["messages"] == [
        {"role": "system", "content": tasks[0].data.system_prompt}, {"role": "user", "content": tasks[0].data.prompt}]
    lines = next(tmp_path.glob("*/traces.jsonl")).read_text().splitlines()
    assert sorted(json.loads(line)["traces"][0]["rewards"]["sqlenv"]["score"] for line in lines) == [1.0] * 3


def test_eval_garbage_policy_scores_minus_one_in_both_envs(scripted, tmp_path):
    model = scripted(lambda m: "I don't know")
    single = _eval(model, tmp_path / "single", limit=2)
    assert [_reward(t) for t in single] == [-1.0, -1.0] and single[0].metrics["executed"] == 0.0
    agent = _eval(model, tmp_path / "agent", env=sqlenv.AGENT_ENV_ID, max_turns=2, limit=1)
    assert _reward(agent[0]) == -1.0 and agent[0].num_turns == 2 and len(adapter.EPISODES) == 0
    env = gym.make(sqlenv.AGENT_ENV_ID, max_turns=2).unwrapped
    env.reset(options={"index": 0})
    observation, _, _, _, info = env.step("I don't know")
    feedback = info["result"]
    assert feedback == observation["transcript"]  # the first move's entry is the whole transcript
    assert agent[0].nodes[3].message.content == feedback and feedback.startswith("Turn 1/2 ")
    assert len(model.requests) == 2 + 2


def test_eval_agent_env_explores_then_answers(gold, scripted, tmp_path, steps):
    def policy(messages):
        if not any(m["role"] == "assistant" for m in messages):
            return "<sql>SELECT COUNT(*) FROM Medal</sql>"
        return f"<answer>{_gold_for(gold, messages)}</answer>"

    model = scripted(policy)
    traces = _eval(model, tmp_path, env=sqlenv.AGENT_ENV_ID, max_turns=3, limit=2)
    assert [_reward(t) for t in traces] == [1.0, 1.0] and [t.num_turns for t in traces] == [2, 2]
    roles = [(n.message.role, n.sampled) for n in traces[0].nodes]
    assert roles == [("system", False), ("user", False), ("assistant", True), ("user", False), ("assistant", True)]
    feedback = traces[0].nodes[3].message.content
    assert feedback.startswith("Turn 1/3 <sql>SELECT COUNT(*) FROM Medal</sql>\n1 row\n| COUNT(*) |")
    second = [body["messages"] for body in model.requests if len(body["messages"]) == 4]
    assert len(model.requests) == 4 and len(second) == 2
    assert {m[3]["content"] for m in second} == {feedback}
    assert len(steps) == 4 and len(adapter.EPISODES) == 0  # two moves a rollout, each played once


def test_example_runs_the_vf_eval_cli():
    example = Path(__file__).parents[1] / "examples" / "verifiers_eval.py"
    done = subprocess.run([sys.executable, str(example), "--policy", "explore",
                           "--env", sqlenv.AGENT_ENV_ID, "-n", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("$ ") and " sqlenv-verifiers --model scripted-explore " in lines[0]
    assert lines[1:] == ["question 0: reward +1.0  turns 2  correct 1", "question 1: reward +1.0  turns 2  correct 1",
                         "mean reward +1.00 over 2 questions (TextToSQLAgent-v0, policy explore, 4 model requests)"]


def test_chat_harness_needs_the_subprocess_runtime():
    from verifiers.v1.harnesses.null import NullHarnessConfig
    from verifiers.v1.runtimes import DockerRuntime

    harness = adapter.SQLChatHarness(NullHarnessConfig(id="sqlenv-verifiers"))
    with pytest.raises(ValueError, match="runtime.type='docker'"):
        asyncio.run(harness.setup(DockerRuntime(vf.DockerConfig())))



def test_chat_server_answers_plain_and_streamed_requests_and_refuses_bad_ones():
    import httpx

    def policy(messages):
        return f"{len(messages)} messages" if len(messages) < 3 else {}["no reply"]

    with ChatServer(policy) as server:
        url = server.base_url + "/chat/completions"
        plain = httpx.post(url, json={"model": "x", "messages": [{"role": "user", "content": "hi"}]}).json()
        assert plain["choices"][0]["message"] == {"role": "assistant", "content": "1 messages"}
        streamed = httpx.post(url, json={"model": "x", "stream": True, "messages": []}).text.split("\n\n")
        assert json.loads(streamed[0][6:])["choices"][0]["delta"]["content"] == "0 messages"
        assert streamed[-2] == "data: [DONE]"
        bad = httpx.post(url, json={"model": "x"})
        assert bad.status_code == 400 and "messages" in bad.json()["error"]
        assert httpx.post(server.base_url + "/embeddings", json={}).status_code == 404
        failed = httpx.post(url, json={"model": "x", "messages": [{}, {}, {}]})
        assert (failed.status_code, failed.json()["error"]) == (500, "policy failed: KeyError: 'no reply'")
        assert len(server.requests) == 3
