"""sqlenv: a Gymnasium Text-to-SQL environment whose rewards come from executing SQL.

>>> import gymnasium as gym, sqlenv
>>> env = gym.make("TextToSQL-v0")              # the built-in generated benchmark
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step("SELECT COUNT(*) FROM Medal")
>>> env = sqlenv.EnvSpec(split="dev", max_instructions=100_000_000, timeout=10.0).make()   # settings as one value
"""

from gymnasium.envs.registration import register, registry

from sqlenv.datasets import Dataset, DatasetError, Example, available_datasets, load_dataset
from sqlenv.executor import HostError
from sqlenv.spec import EnvSpec

ENV_ID = "TextToSQL-v0"
AGENT_ENV_ID = "TextToSQLAgent-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="sqlenv.env:TextToSQLEnv",
        # gym.make_vec(ENV_ID, num_envs=N): SAME_STEP autoreset, since every episode is one step.
        # Gymnasium's vector_kwargs= and wrappers= need vectorization_mode="sync"|"async", as for
        # any env with a vector entry point (docs/env.md, "Vector environments").
        vector_entry_point="sqlenv.vector:make_vector_env",
        # SQL's random() and date('now') differ between runs, and the wall-clock backstop (`timeout`)
        # depends on the machine; see docs/env.md, "Reproducible rewards".
        nondeterministic=True,
    )

if AGENT_ENV_ID not in registry:
    register(
        id=AGENT_ENV_ID,
        entry_point="sqlenv.agent_env:TextToSQLAgentEnv",
        # Multi-turn episodes: Gymnasium's default vector env and NEXT_STEP autoreset fit (a bare reset
        # step after each finished episode, reward 0), so no vector_entry_point; see docs/agent_env.md.
        # Nondeterministic for TextToSQL-v0's reasons, plus the wall-clock total of exploration time.
        nondeterministic=True,
    )


def __getattr__(name):  # lazy: keeps `import sqlenv` light for worker processes
    if name == "TextToSQLEnv":
        from sqlenv.env import TextToSQLEnv

        return TextToSQLEnv
    if name == "TextToSQLAgentEnv":
        from sqlenv.agent_env import TextToSQLAgentEnv

        return TextToSQLAgentEnv
    raise AttributeError(name)


__all__ = ["AGENT_ENV_ID", "ENV_ID", "Dataset", "DatasetError", "EnvSpec", "Example", "HostError", "TextToSQLAgentEnv",
           "TextToSQLEnv", "available_datasets", "load_dataset"]
