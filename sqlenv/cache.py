"""Where sqlenv caches what it builds (databases, gold results): ``$SQLENV_CACHE_DIR`` or ``~/.cache/sqlenv``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "SQLENV_CACHE_DIR"


def cache_dir() -> Path:
    """Where built databases are cached: ``$SQLENV_CACHE_DIR`` or ``~/.cache/sqlenv``."""
    path = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "sqlenv")
    path.mkdir(parents=True, exist_ok=True)
    return path
