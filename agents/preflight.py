"""Before any work: the model, the data, the output folder and the run to resume, checked in seconds.

``plan_run`` is the first thing ``agents/grpo_train.py`` does (on rank 0). A run that cannot work
fails here, with a ``ConfigError`` naming the flag to change (the script exits with status 2), and not
after the 25-minute warm-up stage. Nothing here creates a file or a folder, so a failed start leaves
nothing behind.

* the model: ``agents.models.check_model`` (built-in name installed, local folder, or a hub id that
  is cached or known to the hub);
* the data: the dataset actually trained on (TempTabQA-C falls back to the built-in ``generated``
  benchmark, with a notice, only when neither ``--data-dir`` nor ``$SQLENV_DATA_DIR`` is set), its
  folder, and its train and eval splits, loaded once;
* the output folder: not a file, writable, and not holding another run (unless resuming it);
* ``--resume``: a checkpoint exists, and the run it continues has the same env (dataset, split, schema,
  sample rows, reward, query budget, turns per episode, literal answers), model and LoRA shape
  (``agents.checkpoints.check_resume``);
* the warm start: ``--warmup-adapter`` is an adapter folder; a resume never runs the warm-up stage
  again, and keeps the warm-up adapter of the run it continues as its KL reference, wherever the new
  output folder is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.checkpoints import CONFIG_NAMES, RUN_IDENTITY, check_resume, find_checkpoint, load_state, saved_identity
from agents.cli import ConfigError, flag
from sqlenv.spec import EnvSpec, field_names

if TYPE_CHECKING:
    from agents.grpo_config import Config

DATA_DIR_ENV = "SQLENV_DATA_DIR"
BUILT_IN = "generated"  # the dataset that needs no files
RUN_FILES = ("metrics.jsonl", "config.json")


@dataclass(frozen=True)
class RunPlan:
    """What ``plan_run`` found: where the run reads and writes, and what it continues."""

    dataset: str                   # the dataset trained on (after the fallback to "generated")
    data_dir: str | None           # its folder, absolute; None for the built-in benchmark
    output_dir: Path               # the run folder (it may not exist yet)
    checkpoint: Path | None        # the checkpoint to resume, or None
    warmup_adapter: str | None     # the adapter GRPO starts from (None: fresh, or the warm-up stage's)
    warmup_stage: bool             # run the warm-up stage first (never on a resume: the checkpoint has the adapter)
    notice: str = ""               # a line to print (the dataset fallback), or ""
    env: EnvSpec | None = None     # the training env: env_spec(cfg, dataset, data_dir)


def plan_run(cfg: "Config") -> RunPlan:
    """Check everything a run needs before it does any work; raises ``ConfigError`` naming the flag."""
    check_model(cfg.model)
    checkpoint = find_checkpoint(cfg.resume) if cfg.resume else None
    dataset, data_dir, notice = resolve_dataset(cfg)
    warmup_adapter = cfg.warmup_adapter
    if checkpoint is not None:
        state = load_state(checkpoint)
        run_dir = checkpoint.parent.parent
        current: dict[str, Any] = {name: getattr(cfg, name) for name in RUN_IDENTITY if name != "dataset"}
        current.update(dataset=dataset, data_dir=data_dir)
        check_resume(checkpoint, saved_identity(state, run_dir), current)
        if warmup_adapter is None:  # the resumed run's warm start, which is also its KL reference
            warmup_adapter = state.get("config", {}).get("warmup_adapter")
            if warmup_adapter and not Path(warmup_adapter, "adapter_config.json").is_file():
                raise ConfigError(f"resume={cfg.resume!r} (--resume) continues a run that started from the "
                                  f"warm-up adapter {warmup_adapter!r}, which is gone; pass a copy of it with "
                                  "--warmup-adapter")
    elif warmup_adapter is not None and not Path(warmup_adapter, "adapter_config.json").is_file():
        raise ConfigError(f"warmup_adapter={warmup_adapter!r} (--warmup-adapter) is not an adapter folder (no "
                          "adapter_config.json); pass e.g. runs/sft_warmup/adapter from agents/sft_warmup.py")
    check_splits(cfg, dataset, data_dir)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else (
        checkpoint.parent.parent if checkpoint is not None else default_output_dir(cfg, dataset))
    check_output_dir(output_dir, checkpoint)
    warmup_stage = checkpoint is None and warmup_adapter is None and cfg.warmup_examples > 0
    return RunPlan(dataset, data_dir, output_dir, checkpoint, warmup_adapter, warmup_stage, notice,
                   env_spec(cfg, dataset, data_dir))


def env_spec(cfg: "Config", dataset: str | None = None, data_dir: str | None = None) -> EnvSpec:
    """The training env's spec from the trainer's Config (its names: ``CONFIG_NAMES``); ``dataset`` and
    ``data_dir``: the resolved ones (default: as configured)."""
    values = {name: getattr(cfg, CONFIG_NAMES.get(name, name)) for name in field_names()}
    if dataset is not None:
        values.update(dataset=dataset, data_dir=data_dir)
    return EnvSpec(**values)


def default_output_dir(cfg: "Config", dataset: str) -> Path:
    return Path("runs") / f"grpo__{dataset}__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


# ====================================================================================== model
def check_model(name: str):
    from agents.models import ModelNotFoundError
    from agents.models import check_model as locate

    try:
        locate(name)
    except (ModelNotFoundError, ValueError) as error:
        raise ConfigError(f"model={name!r} (--model): {error}") from None


# ====================================================================================== data
def resolve_dataset(cfg: "Config") -> tuple[str, str | None, str]:
    """(dataset trained on, its folder or None, notice): TempTabQA-C, or the generated benchmark when
    neither --data-dir nor $SQLENV_DATA_DIR is set. A folder that is given but wrong is an error."""
    from sqlenv.datasets.base import DatasetError, resolve_data_dir

    given = cfg.data_dir or os.environ.get(DATA_DIR_ENV)
    if cfg.dataset == "temptabqa-c" and not given:
        return BUILT_IN, None, (
            "notice: TempTabQA-C's files were not found (no --data-dir and no $SQLENV_DATA_DIR); training on the "
            f"built-in '{BUILT_IN}' dataset instead (pass --data-dir or set SQLENV_DATA_DIR to use TempTabQA-C).")
    if cfg.dataset == BUILT_IN:
        return BUILT_IN, None, ""
    try:
        path = resolve_data_dir(cfg.data_dir, cfg.dataset)
    except DatasetError as error:
        raise ConfigError(f"{data_dir_source(cfg)}: {error}") from None
    return cfg.dataset, str(path.resolve()), ""


def data_dir_source(cfg: "Config") -> str:
    """How the data folder was given, for messages: "data_dir='x' (--data-dir)" or the variable."""
    if cfg.data_dir or not os.environ.get(DATA_DIR_ENV):
        return f"data_dir={cfg.data_dir!r} (--data-dir)"
    return f"${DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]!r} (or --data-dir)"


def check_splits(cfg: "Config", dataset: str, data_dir: str | None):
    """Load the train split (and the eval split when evaluating) once; a missing file, an unknown
    dataset or split, or an empty split is a ConfigError naming the flag."""
    from sqlenv.datasets import load_dataset
    from sqlenv.datasets.base import DatasetError

    splits = [("split", cfg.split)] + ([("eval_split", cfg.eval_split)] if cfg.eval_limit else [])
    for name, split in splits:
        where = f"{dataset}/{split}" + (f" in {data_dir}" if data_dir else "")
        try:
            questions = len(load_dataset(dataset, split=split, data_dir=data_dir, schema=cfg.schema))
        except (DatasetError, FileNotFoundError) as error:
            text = str(error)
            culprit = ("dataset" if "unknown dataset" in text else name if "unknown split" in text else "data_dir")
            source = (data_dir_source(cfg) if culprit == "data_dir"
                      else f"{culprit}={getattr(cfg, culprit)!r} ({flag(culprit)})")
            raise ConfigError(f"{source}: cannot load {where}: {text}") from None
        if not questions:
            raise ConfigError(f"{name}={split!r} ({flag(name)}): {where} has no questions")


# ====================================================================================== output folder
def check_output_dir(path: Path, checkpoint: Path | None):
    """The run folder must be a folder (or creatable), writable, and not hold another run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir={str(path)!r} (--output-dir) is a file; pass a folder (it is created "
                          "when missing)")
    resuming_here = checkpoint is not None and path.resolve() == checkpoint.parent.parent.resolve()
    if path.is_dir() and not resuming_here and holds_run(path):
        warm = path / "warmup" / "adapter"
        hint = f" (its warm-up adapter can be reused: --warmup-adapter {warm})" if warm.is_dir() else ""
        raise ConfigError(f"output_dir={str(path)!r} (--output-dir) already holds a run; continue it with "
                          f"--resume {path}, or pass another --output-dir{hint}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir={str(path)!r} (--output-dir) cannot be written: no write permission "
                          f"in {str(existing)!r}")


def holds_run(path: Path) -> bool:
    """Whether a folder holds (part of) a GRPO run: its metrics, config or a checkpoint."""
    return any((path / name).is_file() for name in RUN_FILES) or any((path / "checkpoints").glob("step_*"))
