"""Vector environments of ``TextToSQL-v0`` that autoreset in the same step.

Every episode is one step, so Gymnasium's default ``NEXT_STEP`` autoreset would spend every second
``step`` on a bare reset (reward 0, no step info). ``gym.make_vec("TextToSQL-v0", num_envs=8)`` comes
here (the registration's ``vector_entry_point``) and autoresets with ``SAME_STEP``: each ``step``
scores one query in every sub-environment and returns the next question's observation, the step's
``info`` under ``info["final_info"]``.

>>> envs = gym.make_vec("TextToSQL-v0", num_envs=8, vector_mode="async", split="dev")
"""

from __future__ import annotations

import functools

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

__all__ = ["make_vector_env", "VECTOR_MODES"]

VECTOR_MODES = ("sync", "async")


def make_vector_env(
    num_envs: int = 1,
    *,
    vector_mode: str = "sync",
    autoreset_mode: str | AutoresetMode = AutoresetMode.SAME_STEP,
    shared_memory: bool = True,
    context: str | None = None,
    **env_kwargs,
) -> VectorEnv:
    """``num_envs`` copies of ``TextToSQL-v0`` built with ``env_kwargs``, vectorised.

    ``vector_mode``: ``"sync"`` (one process) or ``"async"`` (a process per sub-environment;
    ``shared_memory`` and ``context`` as in ``AsyncVectorEnv``). ``autoreset_mode`` defaults to
    ``SAME_STEP``; ``NEXT_STEP`` and ``DISABLED`` are accepted.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
    if vector_mode not in VECTOR_MODES:
        raise ValueError(f"vector_mode={vector_mode!r} is not a vector mode; choose one of {list(VECTOR_MODES)}")
    try:
        autoreset_mode = AutoresetMode(autoreset_mode)
    except ValueError:
        choices = [mode.value for mode in AutoresetMode]
        raise ValueError(f"autoreset_mode={autoreset_mode!r} is not one of {choices}") from None
    from sqlenv import ENV_ID

    env_fns = [functools.partial(gym.make, ENV_ID, **env_kwargs) for _ in range(num_envs)]
    if vector_mode == "sync":
        return SyncVectorEnv(env_fns, autoreset_mode=autoreset_mode)
    return AsyncVectorEnv(env_fns, shared_memory=shared_memory, context=context, autoreset_mode=autoreset_mode)
