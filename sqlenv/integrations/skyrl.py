"""skyrl-gym adapter: ``TextToSQL-v0`` and ``TextToSQLAgent-v0`` as registered SkyRL text envs.

Importing this module registers two ids with ``skyrl_gym`` (``pip install 'sqlenv[skyrl]'``)::

    import skyrl_gym, sqlenv.integrations.skyrl
    env = skyrl_gym.make("sqlenv_agent", env_config={"max_turns": 5}, extras={"extra_info": {"index": 3}})
    prompt, info = env.init(None)              # chat messages built from the observation
    out = env.step("<sql>SELECT COUNT(*) FROM Medal</sql>")  # {"observations", "reward", "done", "metadata"}

| skyrl-gym | sqlenv |
| --- | --- |
| ``sqlenv`` / ``sqlenv_agent`` | ``TextToSQL-v0`` / ``TextToSQLAgent-v0`` (``gym.make``) |
| ``env_config`` (SkyRL's ``environment.skyrl_gym.<id>``) | env keywords: ``dataset``, ``split``, ``reward``, ... |
| ``extras["extra_info"]["index"]`` (or ``extras["index"]``) | ``reset(options={"index": i})``: the question |
| ``init(prompt)`` | ``reset``; returns ``prompt`` when given, else ``sqlenv.prompts.messages_for`` of the observation |
| ``step(text)`` | ``step``: the SQL extracted from the text (single-step), or the move itself (agent) |
| ``observations`` | ``[]`` when done, else the newest transcript entry as a user message |
| ``done`` / ``reward`` / ``metadata`` | ``terminated or truncated`` / the step's reward / the step's ``info`` |

All logic stays in the Gymnasium envs; :func:`skyrl_rows` builds SkyRL dataset rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

import sqlenv
from sqlenv.completion import completion_text, extract_sql
from sqlenv.prompts import latest_turn, messages_for

try:
    import skyrl_gym
    from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sqlenv.integrations.skyrl needs skyrl-gym: pip install 'sqlenv[skyrl]'") from exc

__all__ = ["ENV_IDS", "SQLSkyRLEnv", "SQLAgentSkyRLEnv", "register", "skyrl_rows"]

#: skyrl-gym id -> the Gymnasium id it serves.
ENV_IDS = {"sqlenv": sqlenv.ENV_ID, "sqlenv_agent": sqlenv.AGENT_ENV_ID}


def _config(env_config: Any) -> dict[str, Any]:
    if env_config is None:
        return {}
    if isinstance(env_config, Mapping):
        return dict(env_config)
    if hasattr(env_config, "items"):  # omegaconf DictConfig
        return {k: v for k, v in env_config.items()}
    raise ValueError(f"env_config={env_config!r} must be a mapping of {ENV_IDS} constructor keywords")


def _index(extras: Mapping[str, Any]) -> int | None:
    info = extras.get("extra_info") or {}
    index = extras.get("index", info.get("index") if isinstance(info, Mapping) else None)
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"extras index={index!r} must be an integer question index")
    return index


class SQLSkyRLEnv(BaseTextEnv):
    """``TextToSQL-v0`` as a SkyRL text env: one reply, its SQL executed and scored."""

    GYM_ID = sqlenv.ENV_ID

    def __init__(self, env_config: Any = None, extras: Mapping[str, Any] | None = None):
        super().__init__()
        extras = dict(extras or {})
        kwargs = _config(env_config)
        info = extras.get("extra_info") if isinstance(extras.get("extra_info"), Mapping) else {}
        max_turns = extras.get("max_turns", info.get("max_turns"))
        if self.GYM_ID == sqlenv.AGENT_ENV_ID and max_turns is not None:
            kwargs["max_turns"] = max_turns
        self.env = gym.make(self.GYM_ID, **kwargs).unwrapped
        self.index = _index(extras)
        self.seed = extras.get("seed")
        self.max_turns = getattr(self.env, "max_turns", 1)
        self.last_info: dict[str, Any] = {}

    def init(self, prompt: Any = None):
        options = None if self.index is None else {"index": self.index}
        observation, info = self.env.reset(seed=self.seed, options=options)
        self.turns = 0
        self.last_info = dict(info)
        multi = self.GYM_ID == sqlenv.AGENT_ENV_ID
        return (prompt if prompt else messages_for(observation, self.max_turns if multi else None)), info

    def _act(self, action: str):
        return self.env.step(extract_sql(action))

    def step(self, action: Any) -> BaseTextEnvStepOutput:
        self.turns += 1
        text = completion_text(action)
        observation, reward, terminated, truncated, info = self._act(text)
        done = bool(terminated or truncated)
        self.last_info = dict(info)
        observations = [] if done else [{"role": "user", "content": self._feedback(observation, info)}]
        return BaseTextEnvStepOutput(observations=observations, reward=float(reward), done=done,
                                     metadata=dict(info), postprocessed_action=text)

    def _feedback(self, observation: dict, info: dict) -> str:  # only the agent env continues
        raise AssertionError("a single-step episode never continues")

    def get_metrics(self) -> dict[str, Any]:
        info = self.last_info
        return {"turns": self.turns, "executed": float(bool(info.get("executed", False))),
                "correct": float(bool(info.get("correct", False)))}

    def close(self):
        self.env.close()


class SQLAgentSkyRLEnv(SQLSkyRLEnv):
    """``TextToSQLAgent-v0`` as a SkyRL multi-turn text env: ``<sql>`` explores, ``<answer>`` ends."""

    GYM_ID = sqlenv.AGENT_ENV_ID

    def _act(self, action: str):
        return self.env.step(action)

    def _feedback(self, observation: dict, info: dict) -> str:
        return latest_turn(info)


def register() -> None:
    """Register ``sqlenv`` and ``sqlenv_agent`` with skyrl-gym (idempotent; done on import)."""
    for env_id, cls in (("sqlenv", SQLSkyRLEnv), ("sqlenv_agent", SQLAgentSkyRLEnv)):
        if env_id not in skyrl_gym.registry:
            skyrl_gym.register(id=env_id, entry_point=f"{__name__}:{cls.__name__}")


def skyrl_rows(dataset: sqlenv.Dataset, env_class: str = "sqlenv", *, max_turns: int = 5,
               sample_rows: int = 3, column_values: int = 0, indices=None) -> list[dict[str, Any]]:
    """SkyRL dataset rows (``prompt``, ``env_class``, ``reward_spec``, ``extra_info``), one per question.
    ``sample_rows`` and ``column_values`` shape the prompt's schema as the env's arguments do.

    Write them to parquet for SkyRL's trainer; ``extra_info.index`` pins each episode's question.
    """
    if env_class not in ENV_IDS:
        raise ValueError(f"env_class={env_class!r} must be one of {list(ENV_IDS)}")
    env = gym.make(ENV_IDS[env_class], dataset=dataset, sample_rows=sample_rows,
                   column_values=column_values).unwrapped
    try:
        rows = []
        for i in range(len(dataset)) if indices is None else indices:
            observation = env.observation_for(int(i))
            rows.append({
                "prompt": messages_for(observation, max_turns if env_class == "sqlenv_agent" else None),
                "env_class": env_class,
                "reward_spec": {"method": "rule", "ground_truth": dataset[int(i)].answer},
                "extra_info": {"index": int(i), "id": dataset[int(i)].id,
                               **({"max_turns": max_turns} if env_class == "sqlenv_agent" else {})},
            })
        return rows
    finally:
        env.close()


register()
