"""Vector environments of ``TextToSQL-v0`` that autoreset in the same step.

Every episode is one step, so Gymnasium's default ``NEXT_STEP`` autoreset would spend every
second ``step`` on a bare reset (reward 0, no step info). ``gym.make_vec("TextToSQL-v0",
num_envs=8)`` comes here (the registration's ``vector_entry_point``) and autoresets with
``SAME_STEP``: each ``step`` scores one query in every sub-environment and returns the next
question's observation, the step's ``info`` under ``info["final_info"]``.

>>> envs = gym.make_vec("TextToSQL-v0", num_envs=8, vector_mode="async", split="dev")

Gymnasium passes a vector entry point only plain keyword arguments: its ``vector_kwargs`` and
``wrappers`` need ``vectorization_mode="sync"`` or ``"async"`` (Gymnasium's own vectorisers, which
default to ``NEXT_STEP``), as for every registered env with a vector entry point. Here the
vectoriser's arguments are plain keywords (``autoreset_mode``, ``copy``, ``shared_memory``, ...)
and ``vector_mode`` picks the vectoriser.
"""

from __future__ import annotations

import functools

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

__all__ = ["make_vector_env", "VECTOR_MODES", "VECTOR_ARGUMENTS"]

VECTOR_MODES = ("sync", "async")
# The vectoriser's own arguments, by mode, taken out of the keywords; the rest build each env.
VECTOR_ARGUMENTS = {
    "sync": ("copy", "observation_mode"),
    "async": ("copy", "observation_mode", "shared_memory", "context", "daemon"),
}


def make_vector_env(
    num_envs: int = 1,
    *,
    vector_mode: str = "sync",
    autoreset_mode: str | AutoresetMode = AutoresetMode.SAME_STEP,
    **kwargs,
) -> VectorEnv:
    """``num_envs`` copies of ``TextToSQL-v0``, vectorised.

    ``vector_mode``: ``"sync"`` (``SyncVectorEnv``, one process) or ``"async"``
    (``AsyncVectorEnv``, a process per sub-environment). ``autoreset_mode`` defaults to
    ``SAME_STEP``; ``NEXT_STEP`` and ``DISABLED`` are accepted. Keywords named in
    ``VECTOR_ARGUMENTS[vector_mode]`` (``copy``, ``observation_mode``; for async also
    ``shared_memory``, ``context``, ``daemon``) go to the vectoriser, all others to ``gym.make``.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
    if vector_mode not in VECTOR_MODES:
        raise ValueError(f"vector_mode={vector_mode!r} is not a vector mode; "
                         f"choose one of {list(VECTOR_MODES)}")
    try:
        autoreset_mode = AutoresetMode(autoreset_mode)
    except ValueError:
        choices = [mode.value for mode in AutoresetMode]
        raise ValueError(f"autoreset_mode={autoreset_mode!r} is not one of {choices}") from None
    vector_kwargs, env_kwargs = _split(kwargs, vector_mode)
    from sqlenv import ENV_ID

    env_fns = [functools.partial(gym.make, ENV_ID, **env_kwargs) for _ in range(num_envs)]
    vectoriser = SyncVectorEnv if vector_mode == "sync" else AsyncVectorEnv
    return vectoriser(env_fns, autoreset_mode=autoreset_mode, **vector_kwargs)


def _split(kwargs: dict, vector_mode: str) -> tuple[dict, dict]:
    """``kwargs`` as (the vectoriser's arguments, the env's); another mode's argument is refused."""
    names = VECTOR_ARGUMENTS[vector_mode]
    for name in VECTOR_ARGUMENTS["async"]:
        if name in kwargs and name not in names:
            raise ValueError(f"{name}={kwargs[name]!r} applies to vector_mode='async' only, "
                             f"not vector_mode={vector_mode!r}")
    vector_kwargs = {name: kwargs[name] for name in names if name in kwargs}
    return vector_kwargs, {k: v for k, v in kwargs.items() if k not in vector_kwargs}
