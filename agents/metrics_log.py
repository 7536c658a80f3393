"""metrics.jsonl: one JSON object per line, {"step": n, "time": t, "train/...": ...}, flushed every line.

Non-finite values are written as null, so the file stays valid JSON. ``truncate_metrics`` drops the
records past a step, for a resume that continues a run which had gone on past its checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np


class JsonlLogger:
    """One JSON object per line: {"step": n, "train/...": ...}; flushed every line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]):
        record = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def _jsonable(value: Any):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def truncate_metrics(path: Path, step: int):
    """Drop the records logged after ``step`` (resuming a run that had gone on past its checkpoint)."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

