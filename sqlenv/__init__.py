"""sqlenv: a Gymnasium Text-to-SQL environment whose rewards come from executing SQL."""

from sqlenv.datasets import Dataset, DatasetError, Example, available_datasets, load_dataset

__all__ = ["Dataset", "DatasetError", "Example", "available_datasets", "load_dataset"]
