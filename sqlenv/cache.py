"""Where sqlenv caches what it builds (databases, gold results, converted models): ``$SQLENV_CACHE_DIR``,
``$XDG_CACHE_HOME/sqlenv`` or ``~/.cache/sqlenv``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "SQLENV_CACHE_DIR"


def cache_root() -> Path:
    """sqlenv's cache folder, not created: ``$SQLENV_CACHE_DIR``, else ``$XDG_CACHE_HOME/sqlenv``, else
    ``~/.cache/sqlenv`` (built databases; converted models under ``models/``, ``agents.models``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sqlenv"


def cache_dir() -> Path:
    """Where built databases are cached (:func:`cache_root`), created if missing."""
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path
