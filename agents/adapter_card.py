"""What a saved adapter folder carries besides its weights, so that it can be evaluated as it was trained.

=========================  ====================================================================
adapter_model.safetensors  PEFT: the LoRA weights
adapter_config.json        PEFT: rank, alpha, target modules, base model
policy_config.json         ``LoRAPolicy.save``: model, few_shot, max_completion_length, temperature, ...
env_config.json            this module: the environment it was trained on, the fields of
                           ``sqlenv.spec.EnvSpec`` plus ``eval_split``
=========================  ====================================================================

``benchmarks/evaluate.py --policy <adapter folder>`` takes its defaults from the last two: the model
and prompt from policy_config.json, the env (dataset, held-out split, data folder, schema, sample rows,
reward, query budget, turns per episode, how literal answers are scored) from env_config.json, so an adapter
trained on the flat schema, under an instruction budget or in 3-move episodes is evaluated that way unless a flag
says otherwise.
Adapters saved before env_config.json existed have only policy_config.json; evaluate.py then says which
defaults it assumes. A file written before a field existed (``timeout``, ``max_instructions``,
``max_turns``, ``literal_answers``) reads as the value those runs had (``sqlenv.spec.LEGACY_VALUES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlenv.spec import EnvSpec, field_names

ENV_FILE = "env_config.json"
POLICY_FILE = "policy_config.json"
# split: the training split; eval_split (beside the spec): the held-out one evaluations should use;
# dataset: the one trained on; data_dir: its folder (absolute, or None when the dataset needs none).
ENV_KEYS = field_names() + ("eval_split",)


def write_env_config(adapter: str | Path, spec: EnvSpec | None = None, *, eval_split: str, **fields: Any) -> Path:
    """Write ``env_config.json`` (the spec's fields and ``eval_split``) into a saved adapter folder.

    ``spec``, or its fields as keywords (those of ``LEGACY_VALUES`` may be left out); a missing or
    unknown field is a ValueError naming it."""
    if spec is None:
        spec = EnvSpec.from_dict(fields, source="write_env_config")
    elif fields:
        raise ValueError(f"write_env_config: pass the spec or its fields, not both ({sorted(fields)})")
    path = Path(adapter) / ENV_FILE
    path.write_text(json.dumps({**spec.to_dict(), "eval_split": eval_split}, indent=2) + "\n")
    return path


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def read_env_spec(adapter: str | Path) -> tuple[EnvSpec, str | None] | None:
    """``(spec, eval_split)`` an adapter was trained with, or None when it records none; a bad or unknown
    field is a ValueError naming it and the file."""
    path = Path(adapter) / ENV_FILE
    data = _read(path)
    if not data:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of env settings, got {type(data).__name__}")
    data = dict(data)
    eval_split = data.pop("eval_split", None)
    return EnvSpec.from_dict(data, source=str(path)), eval_split


def read_env_config(adapter: str | Path) -> dict:
    """The environment an adapter was trained on (``ENV_KEYS``), or {} when it records none."""
    found = read_env_spec(adapter)
    if found is None:
        return {}
    spec, eval_split = found
    return {**spec.to_dict(), "eval_split": eval_split}


def read_policy_config(adapter: str | Path) -> dict:
    """The ``PolicyConfig`` fields saved beside an adapter (``LoRAPolicy.save``), or {} when absent."""
    return _read(Path(adapter) / POLICY_FILE)
