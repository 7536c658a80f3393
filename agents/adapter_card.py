"""What a saved adapter folder carries besides its weights, so that it can be evaluated as it was trained.

=========================  ====================================================================
adapter_model.safetensors  PEFT: the LoRA weights
adapter_config.json        PEFT: rank, alpha, target modules, base model
policy_config.json         ``LoRAPolicy.save``: model, few_shot, max_completion_length, temperature, ...
env_config.json            this module: the environment it was trained on (``ENV_KEYS``)
=========================  ====================================================================

``benchmarks/evaluate.py --policy <adapter folder>`` takes its defaults from the last two: the model
and prompt from policy_config.json, the dataset, held-out split, data folder, schema, sample rows and
reward from env_config.json, so an adapter trained on the flat schema is evaluated on the flat schema
unless a flag says otherwise. Adapters saved before env_config.json existed have only
policy_config.json; evaluate.py then says which defaults it assumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENV_FILE = "env_config.json"
POLICY_FILE = "policy_config.json"
# dataset: the one trained on; data_dir: its folder (absolute, or None when the dataset needs none);
# split: the training split; eval_split: the held-out one evaluations should use.
ENV_KEYS = ("dataset", "data_dir", "split", "eval_split", "schema", "sample_rows", "reward")


def write_env_config(adapter: str | Path, **env: Any) -> Path:
    """Write ``env_config.json`` (exactly the ``ENV_KEYS``) into a saved adapter folder."""
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
    """The environment an adapter was trained on (``ENV_KEYS``), or {} when it records none."""
    return _read(Path(adapter) / ENV_FILE)


def read_policy_config(adapter: str | Path) -> dict:
    """The ``PolicyConfig`` fields saved beside an adapter (``LoRAPolicy.save``), or {} when absent."""
    return _read(Path(adapter) / POLICY_FILE)
