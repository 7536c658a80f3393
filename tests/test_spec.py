"""sqlenv/spec.py: EnvSpec round-trips, names the bad field and its file, reads old files as their runs were,
and builds the env it describes."""

import inspect
import json
import subprocess
import sys

import pytest

from sqlenv.agent_env import TextToSQLAgentEnv
from sqlenv.datasets import load_dataset
from sqlenv.env import TextToSQLEnv
from sqlenv.spec import LEGACY_VALUES, EnvSpec, field_names

SPEC = EnvSpec(dataset="generated", split="dev", data_dir=None, schema="flat", sample_rows=0, reward="partial",
               timeout=7.5, max_instructions=5000, max_turns=3, literal_answers="unanswered")


def test_round_trips_through_json():
    data = json.loads(json.dumps(SPEC.to_dict()))
    assert list(data) == list(field_names())
    assert EnvSpec.from_dict(data) == SPEC
    assert EnvSpec.from_dict(EnvSpec().to_dict()) == EnvSpec()


def test_defaults_are_the_envs():
    """The spec's defaults are TextToSQLEnv's (one query per question: max_turns 1; the env's schema=None is
    "tables" when it loads the dataset by name, as a spec does)."""
    params = inspect.signature(TextToSQLEnv.__init__).parameters
    agent_params = inspect.signature(TextToSQLAgentEnv.__init__).parameters
    for name in field_names():
        if name == "filter_hints":  # a setting of the multi-turn env only
            assert EnvSpec().filter_hints is agent_params[name].default is False
        elif name not in ("max_turns", "schema"):
            assert EnvSpec().to_dict()[name] == params[name].default, name
    assert EnvSpec().max_turns == 1 and params["schema"].default is None and EnvSpec().schema == "tables"
    assert TextToSQLEnv().schema_variant == "tables"


@pytest.mark.parametrize("change, fragment", [
    ({"max_turn": 2}, "unknown env setting 'max_turn'"),
    ({"sample_rows": -1}, "sample_rows=-1 must be an integer >= 0"),
    ({"max_instructions": 0}, "max_instructions=0 must be an integer >= 1"),
    ({"timeout": "1"}, "timeout='1' must be a positive number of seconds"),
    ({"schema": "wide"}, "schema='wide' is not a schema variant"),
    ({"reward": "nope"}, "reward='nope' is not a reward preset"),
    ({"max_turns": True}, "max_turns=True must be an integer >= 1"),
    ({"literal_answers": "drop"}, "literal_answers='drop' is not an option; choose one of ['score', 'unanswered']"),
    ({"column_values": -1}, "column_values=-1 must be an integer >= 0"),
])
def test_a_bad_or_unknown_field_names_itself_and_the_file(change, fragment):
    with pytest.raises(ValueError) as error:
        EnvSpec.from_dict({**SPEC.to_dict(), **change}, source="run/env_config.json")
    assert str(error.value).startswith("run/env_config.json: ") and fragment in str(error.value)


def test_a_missing_field_is_named_unless_it_came_later():
    data = SPEC.to_dict()
    del data["schema"]
    with pytest.raises(ValueError, match="a.json: missing env setting 'schema'"):
        EnvSpec.from_dict(data, source="a.json")
    old = {k: v for k, v in SPEC.to_dict().items() if k not in LEGACY_VALUES}  # written before the budget existed
    spec = EnvSpec.from_dict(old)
    assert (spec.timeout, spec.max_instructions, spec.max_turns, spec.literal_answers, spec.column_values) == (
        1.0, None, 1, "score", 0)


def test_make_builds_the_env_it_describes():
    env = SPEC.make()
    try:
        assert isinstance(env, TextToSQLAgentEnv) and env.max_turns == 3
        assert (env.executor.config.timeout, env.executor.config.max_instructions) == (7.5, 5000)
        assert (env.dataset.split, env.schema_variant, env.num_sample_rows, env.reward_preset) == (
            "dev", "flat", 0, "partial")
    finally:
        env.close()
    one = EnvSpec(dataset="generated", split="dev").make(split="test", workers=0)
    try:
        assert type(one) is TextToSQLEnv and one.dataset.split == "test"
        assert (one.executor.config.timeout, one.executor.config.max_instructions) == (1.0, None)
    finally:
        one.close()
    subset = load_dataset("generated", split="dev").subset([0, 1])
    two = EnvSpec(max_instructions=9).make(dataset=subset)
    try:
        assert len(two.dataset) == 2 and two.executor.config.max_instructions == 9
    finally:
        two.close()


@pytest.mark.parametrize("max_turns", [1, 3])
def test_literal_answers_reach_the_env(max_turns):
    """The spec's literal_answers decides how the env it builds scores SELECT 0 (a literal) on a question whose
    gold is 0; render_mode reaches the env too."""
    dataset = load_dataset("generated", split="dev")
    index = next(i for i, example in enumerate(dataset) if example.answer == "0")
    move = "SELECT 0" if max_turns == 1 else "<answer>SELECT 0</answer>"
    outcomes = {}
    for option in ("score", "unanswered"):
        env = EnvSpec(split="dev", max_turns=max_turns, literal_answers=option).make(render_mode="ansi")
        try:
            env.reset(options={"index": index})
            _, reward, _, _, info = env.step(move)
            outcomes[option] = (reward, info["error"], info["reads_table"])
            assert env.literal_answers == option and "SELECT 0" in env.render()
        finally:
            env.close()
    assert outcomes == {"score": (1.0, None, False), "unanswered": (-1.0, "literal", False)}


def test_the_command_line_builds_its_env_from_the_spec():
    """python -m sqlenv run takes the spec's env settings as flags: a literal scored as no answer fails (exit 1);
    a bad value is named (exit 2)."""
    def run(*flags):
        return subprocess.run([sys.executable, "-m", "sqlenv", "run", "SELECT 0", "--index", "0", *flags],
                              check=False, capture_output=True, text=True, timeout=120)

    scored, unanswered = run("--max-instructions", "100000", "--timeout", "5"), run("--literal-answers", "unanswered")
    assert scored.returncode == 0 and "Reward: -1" not in scored.stdout, scored.stderr
    assert unanswered.returncode == 1 and "Reward: -1" in unanswered.stdout, unanswered.stderr
    bad = run("--timeout", "0")
    assert bad.returncode == 2 and "timeout=0.0 must be a positive number of seconds" in bad.stderr


def test_is_frozen_and_imports_no_torch():
    with pytest.raises(AttributeError):
        SPEC.timeout = 2.0  # type: ignore[misc]
    code = "import sys, sqlenv.spec; sqlenv.spec.EnvSpec(); assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
