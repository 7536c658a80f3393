"""What a saved adapter folder carries besides its weights, so that it can be evaluated as it was trained.

=========================  ====================================================================
adapter_model.safetensors  PEFT: the LoRA weights
adapter_config.json        PEFT: rank, alpha, target modules, base model
policy_config.json         ``LoRAPolicy.save``: model, few_shot, max_completion_length, temperature, ...
env_config.json            this module: the environment it was trained on (``ENV_KEYS``)
=========================  ====================================================================

``benchmarks/evaluate.py --policy <adapter folder>`` takes its defaults from the last two: the model
and prompt from policy_config.json, the dataset, held-out split, data folder, schema, sample rows,
reward and turns per episode from env_config.json, so an adapter trained on the flat schema, or in
3-move episodes, is evaluated that way unless a flag says otherwise. Adapters saved before
env_config.json existed have only policy_config.json; evaluate.py then says which defaults it assumes.
One that records no ``max_turns`` (saved before it existed) was trained on one query per question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENV_FILE = "env_config.json"
POLICY_FILE = "policy_config.json"
# dataset: the one trained on; data_dir: its folder (absolute, or None when the dataset needs none);
# split: the training split; eval_split: the held-out one evaluations should use; max_turns: moves per
# episode (1: TextToSQL-v0's one query; more: TextToSQLAgent-v0 episodes).
ENV_KEYS = ("dataset", "data_dir", "split", "eval_split", "schema", "sample_rows", "reward", "max_turns")
#: Keys a writer may leave out, with the value they then record (an adapter trained before they existed).
ENV_KEY_DEFAULTS = {"max_turns": 1}


def write_env_config(adapter: str | Path, **env: Any) -> Path:
    """Write ``env_config.json`` (every one of the ``ENV_KEYS``; ``ENV_KEY_DEFAULTS`` fill those left out)
    into a saved adapter folder."""
    env = {**ENV_KEY_DEFAULTS, **env}
    if set(env) != set(ENV_KEYS):
        raise ValueError(f"env_config needs exactly {ENV_KEYS}, got {sorted(env)}")
    path = Path(adapter) / ENV_FILE
    path.write_text(json.dumps({key: env[key] for key in ENV_KEYS}, indent=2) + "\n")
    return path


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def read_env_config(adapter: str | Path) -> dict:
    """The environment an adapter was trained on (``ENV_KEYS``), or {} when it records none; a file
    written before a key existed gets its ``ENV_KEY_DEFAULTS`` value (it was trained that way)."""
    env = _read(Path(adapter) / ENV_FILE)
    return {**ENV_KEY_DEFAULTS, **env} if env else {}


def read_policy_config(adapter: str | Path) -> dict:
    """The ``PolicyConfig`` fields saved beside an adapter (``LoRAPolicy.save``), or {} when absent."""
    return _read(Path(adapter) / POLICY_FILE)
