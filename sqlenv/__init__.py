"""sqlenv: a Gymnasium Text-to-SQL environment whose rewards come from executing SQL.

>>> import gymnasium as gym, sqlenv
>>> env = gym.make("TextToSQL-v0")              # the built-in generated benchmark
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step("SELECT COUNT(*) FROM Medal")
"""

from gymnasium.envs.registration import register, registry

from sqlenv.datasets import Dataset, DatasetError, Example, available_datasets, load_dataset

ENV_ID = "TextToSQL-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="sqlenv.env:TextToSQLEnv",
        # gym.make_vec(ENV_ID, num_envs=N): SAME_STEP autoreset, since every episode is one step.
        vector_entry_point="sqlenv.vector:make_vector_env",
        # SQL's random() and date('now') differ between runs, and the wall-clock backstop (`timeout`)
        # depends on the machine; see docs/env.md, "Reproducible rewards".
        nondeterministic=True,
    )


def __getattr__(name):  # lazy: keeps `import sqlenv` light for worker processes
    if name == "TextToSQLEnv":
        from sqlenv.env import TextToSQLEnv

        return TextToSQLEnv
    raise AttributeError(name)


__all__ = ["ENV_ID", "Dataset", "DatasetError", "Example", "TextToSQLEnv", "available_datasets", "load_dataset"]
