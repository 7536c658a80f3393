import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "temptabqa-c"


def temptabqa_dir() -> Path | None:
    """TempTabQA-C's folder: $SQLENV_DATA_DIR, else ../shared/data/temptabqa-c beside the repo."""
    path = Path(os.environ.get("SQLENV_DATA_DIR") or SHARED_DATA)
    return path if (path / "Dev_set").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = temptabqa_dir()
    if path is None:
        pytest.skip("TempTabQA-C files not found (set SQLENV_DATA_DIR)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Build databases into a per-run cache, never into the user's ~/.cache."""
    os.environ.setdefault("SQLENV_CACHE_DIR", str(tmp_path_factory.mktemp("sqlenv-cache")))
