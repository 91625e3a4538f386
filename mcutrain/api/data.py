"""Datasets: which exist offline (``mcutrain data list``) and what one's splits hold (``data show``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcutrain.api.results import Result, Table

__all__ = ["DatasetInfo", "Datasets", "dataset", "datasets"]


@dataclass(frozen=True, eq=False)
class Datasets(Table):
    """Every named dataset, installed or not: rows of ``name``, ``available``, ``sizes``,
    ``num_classes``, ``image_shape``, ``source``, ``install``, ``error``."""

    def text(self) -> str:
        from mcutrain.cli.output import table

        body = []
        for r in self.rows:
            sizes = r["sizes"] or {}
            shape = "x".join(str(s) for s in r["image_shape"]) if r["image_shape"] else "-"
            note = r["source"] if r["available"] else (r["error"] or f"install: {r['install']}")
            body.append([r["name"], "yes" if r["available"] else "NO", sizes.get("train", "-"),
                         sizes.get("val", "-"), sizes.get("test", "-"), r["num_classes"], shape, note])
        text = table(body, ["dataset", "available", "train", "val", "test", "classes", "HxWxC", "source / install"])
        return str(text) + ("\nAlso usable: folder:PATH (one sub-folder of images per class) and npz:PATH "
                            "(x uint8, y int).")


def datasets() -> Datasets:
    """The named datasets (``mcutrain data list``); ``folder:PATH`` and ``npz:PATH`` work too."""
    from mcutrain.data import dataset_catalog

    return Datasets(tuple(dataset_catalog()))


@dataclass(frozen=True, eq=False)
class DatasetInfo(Result):
    """One dataset's classes, image shape, split sizes and per-class counts (``mcutrain data show``)."""

    def text(self) -> str:
        from mcutrain.cli.output import table

        p = dict(self.payload)
        head = (f"{p['name']}: {p['num_classes']} classes, images {'x'.join(map(str, p['image_shape']))} (HxWxC), "
                f"split seed {p['seed']}")
        rows: list[list[Any]] = [[i, c] + [p["per_class"][s][i] for s in ("train", "val", "test")]
                                 for i, c in enumerate(p["classes"])]
        rows.append(["", "total"] + [p["sizes"][s] for s in ("train", "val", "test")])
        return head + "\n" + str(table(rows, ["label", "class", "train", "val", "test"]))


def dataset(name: str, *, seed: int = 0) -> DatasetInfo:
    """Load ``name`` (a named dataset, ``folder:PATH`` or ``npz:PATH``) split with ``seed`` and count it."""
    import numpy as np

    from mcutrain.data import load_dataset

    ds = load_dataset(name, seed=seed)
    parts = {"train": ds.train, "val": ds.val, "test": ds.test}
    counts = {k: np.bincount(v.labels, minlength=ds.num_classes).tolist() for k, v in parts.items()}
    return DatasetInfo({"name": ds.name, "seed": seed, "num_classes": ds.num_classes, "classes": list(ds.classes),
                        "image_shape": list(ds.image_shape), "sizes": {k: len(v) for k, v in parts.items()},
                        "per_class": counts})
