"""Checkpoints: write one atomically, find the one to resume, check that a resume continues the same run.

``checkpoints/step_NNNNNN/`` holds ``adapter/`` (PEFT format, with the files ``agents/adapter_card.py``
describes) and ``state.pt``: the step, the optimizer, every RNG state (question sampling, Python,
torch, CUDA; per rank under torchrun) and the run's configuration, so that ``--resume`` repeats the
uninterrupted run exactly. A resume must continue the same run: ``check_resume`` refuses one whose
env (every ``sqlenv.spec.EnvSpec`` field: dataset, split, schema, sample rows, reward, query budget
``--query-timeout``/``--max-instructions``, turns per episode ``--max-turns``, ``--literal-answers``),
model or LoRA shape differ from the checkpoint's, naming each difference.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from agents.adapter_card import write_env_config
from agents.cli import ConfigError, flag
from agents.distributed import World, seed_rank
from sqlenv.spec import LEGACY_VALUES, EnvSpec, field_names

#: The trainer's ``Config`` name of each ``EnvSpec`` field it names otherwise.
CONFIG_NAMES = {"timeout": "query_timeout"}
# What a resumed run must share with its checkpoint (other settings, such as steps or learning_rate,
# may change): the env (its data folder may move: checked through "dataset"), the model and its LoRA shape.
# "dataset" is the dataset actually trained on (after the generated fallback). Config names.
RUN_IDENTITY = tuple(CONFIG_NAMES.get(name, name) for name in field_names() if name != "data_dir") + (
    "few_shot", "model", "lora_r", "lora_alpha")
# Identity values of checkpoints written before the setting existed (those runs were trained that way).
IDENTITY_DEFAULTS = {CONFIG_NAMES.get(name, name): value for name, value in LEGACY_VALUES.items()}


def save_checkpoint(path: Path, policy, optimizer, step: int, rng: np.random.Generator, config: Mapping[str, Any],
                    env: EnvSpec | None = None, eval_split: str | None = None,
                    rank_rng: list[dict] | None = None) -> Path:
    """adapter/ (PEFT format) + state.pt (optimizer, RNG states, step, config), written atomically.

    ``config``: the run's configuration as saved in config.json (with "resolved_dataset" and
    "resolved_data_dir"); ``env``: the environment the adapter was trained on and ``eval_split`` its
    held-out split, written beside it as env_config.json (``agents.adapter_card``). ``rank_rng``: every
    rank's ``rng_state()`` in a distributed run (the top-level RNG states are then rank 0's, so a plain run
    can resume a distributed checkpoint).
    """
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save(tmp / "adapter")
    if env is not None:
        write_env_config(tmp / "adapter", env, eval_split=eval_split)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": dict(config),
    }
    if rank_rng is not None:
        state.update(world_size=len(rank_rng), rank_rng=rank_rng)
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the latest one under <run>/checkpoints/."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"resume={str(path)!r} (--resume) does not exist; pass a run folder or one of its "
                          "checkpoints/step_NNNNNN folders")
    if (path / "state.pt").is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("step_*[0-9]"))
    candidates = [c for c in candidates if (c / "state.pt").is_file()]
    if not candidates:
        raise ConfigError(f"resume={str(path)!r} (--resume) holds no checkpoint (state.pt, or "
                          "checkpoints/step_*/state.pt): a run writes its first one after save_every steps; "
                          "start a new run instead")
    return candidates[-1]


def load_state(path: Path) -> dict:
    """A checkpoint's state.pt (optimizer, RNG states, step, config), on the CPU."""
    import torch

    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)


def saved_identity(state: Mapping[str, Any], run_dir: Path | None = None) -> dict[str, Any]:
    """The RUN_IDENTITY values a checkpoint was trained with (plus "data_dir" when known).

    Checkpoints written before the resolved dataset was saved in them take it from the run folder's
    config.json, else from the configured dataset name.
    """
    config = dict(state.get("config", {}))
    if "resolved_dataset" not in config and run_dir is not None and (run_dir / "config.json").is_file():
        import json

        config.setdefault("resolved_dataset", json.loads((run_dir / "config.json").read_text()).get("resolved_dataset"))
    identity = {name: config.get(name, IDENTITY_DEFAULTS.get(name)) for name in RUN_IDENTITY
                if name in config or name in IDENTITY_DEFAULTS}
    if config.get("resolved_dataset"):
        identity["dataset"] = config["resolved_dataset"]
    identity["data_dir"] = config.get("resolved_data_dir")
    return identity


def check_resume(checkpoint: Path, saved: Mapping[str, Any], current: Mapping[str, Any]):
    """Refuse a resume that would not continue the same run: ConfigError naming every difference.

    ``saved`` is ``saved_identity`` of the checkpoint; ``current`` the same keys for this command
    ("dataset" being the dataset it would train on, "data_dir" where that dataset's files are).
    """
    lines = []
    for name in RUN_IDENTITY:
        if name not in saved or saved[name] == current.get(name):
            continue
        was, now = saved[name], current.get(name)
        if name == "dataset":
            fix = f"pass --dataset {was}"
            if saved.get("data_dir"):
                fix += f" --data-dir {saved['data_dir']}"
            if now == "generated" and was != "generated" and not current.get("data_dir"):
                fix = ("its files were not found (no --data-dir and no $SQLENV_DATA_DIR): "
                       + (f"pass --data-dir {saved['data_dir']}" if saved.get("data_dir") else "pass --data-dir"))
            lines.append(f"  dataset: the run trained on {was!r}, this command would train on {now!r}; {fix}")
        else:
            lines.append(f"  {name}: the run used {was!r}, this command {now!r}; pass {flag(name)} "
                         f"{'none' if was is None else was}")
    if lines:
        raise ConfigError(f"resume={str(checkpoint)!r} (--resume) would not continue the same run:\n"
                          + "\n".join(lines)
                          + "\n  (or start a new run: leave out --resume, with another --output-dir)")


def load_adapter(path: Path, policy):
    """Load a checkpoint's adapter into the policy, in place (the optimizer's parameters stay valid)."""
    policy.load(Path(path) / "adapter")


def load_resume(checkpoint: Path | None, policy, world: World) -> dict | None:
    """A resume's checkpoint state on every rank, its adapter loaded into rank 0's policy (the caller then
    broadcasts the parameters); None for a fresh run (``checkpoint`` None)."""
    if checkpoint is None:
        return None
    state = world.on_main(lambda: load_state(checkpoint))
    if world.main:
        load_adapter(checkpoint, policy)
    return state


def restore(state: dict | None, optimizer, rng: np.random.Generator, world: World, seed: int) -> int:
    """The step the run starts at: a resume's (``state``: its optimizer and RNG states restored), or 0, the
    ranks other than 0 then getting their own token-sampling streams (``seed_rank``)."""
    if state is None:
        seed_rank(seed, world)  # ranks sample different completions of their own questions
        return 0
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state, rng, world, seed)
    return int(state["step"])


def restore_rng(state: dict, rng: np.random.Generator, world: World | None = None, seed: int = 0):
    """Restore the question RNG (shared by all ranks) and this process's token-sampling RNGs.

    Distributed: each rank takes its own saved state when the checkpoint has one per rank of this
    world size; otherwise rank 0 takes the top-level one and the others get fresh streams.
    """
    import torch

    rng.bit_generator.state = state["numpy_rng"]
    if world is not None and world.distributed:
        ranks = state.get("rank_rng")
        if ranks and len(ranks) == world.size:
            mine = ranks[world.rank]
            random.setstate(mine["python_rng"])
            torch.set_rng_state(mine["torch_rng"])
            if mine.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(mine["cuda_rng"])
            return
        if not world.main:
            seed_rank(seed, world, int(state["step"]))
            return
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])

