"""Dataset sources and the loader registry. Each source module registers itself on import."""

from sqlenv.datasets.base import (
    Dataset,
    DatasetError,
    Example,
    available_datasets,
    load_dataset,
    register_dataset,
)

__all__ = ["Dataset", "DatasetError", "Example", "available_datasets", "load_dataset", "register_dataset"]
