"""Datasets: named offline datasets, users' folders and .npz files, deterministic splits, a fast loader.

No network access, ever: named datasets come from installed packages (see ``dataset_catalog()`` for
what is installed and the command that installs what is not).

``BatchLoader`` needs torch and is imported on first use, so that listing datasets stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcutrain.data.datasets import ImageSet, SplitDataset, dataset_catalog, load_dataset, mirror_safe
from mcutrain.data.preprocessing import Preprocessing

if TYPE_CHECKING:
    from mcutrain.data.loader import BatchLoader

__all__ = ["ImageSet", "SplitDataset", "load_dataset", "dataset_catalog", "mirror_safe", "Preprocessing",
           "BatchLoader"]


def __getattr__(name: str):
    if name == "BatchLoader":
        from mcutrain.data.loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
