"""Dataset sources and the loader registry. Each source module registers itself on import."""

from sqlenv.datasets.base import (
    Dataset,
    DatasetError,
    Example,
    available_datasets,
    load_dataset,
    register_dataset,
    select_indices,
)
from sqlenv.datasets import generated  # noqa: F401  (registers "generated")
from sqlenv.datasets import temptabqa_c  # noqa: F401  (registers "temptabqa-c")
from sqlenv.datasets import spider  # noqa: F401  (registers "spider", "bird", "jsonl")

__all__ = ["Dataset", "DatasetError", "Example", "available_datasets", "load_dataset", "register_dataset",
           "select_indices"]
