"""``mcutrain data``: which datasets exist offline, and what a dataset's splits look like.

``data list`` shows every named dataset, installed or not (with the command that installs a missing
one); ``data show NAME`` loads one (also ``folder:PATH`` / ``npz:PATH``) and prints its split sizes
and per-class counts, so a user can check their own data before training on it.
"""

from __future__ import annotations

import argparse

import numpy as np

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.data import dataset_catalog, load_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help=HELP["data"],
                                   description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p_list = sub.add_parser("list", help="named datasets: installed or not, sizes, classes, image shape")
    add_json_flag(p_list)
    p_list.set_defaults(func=run_list)

    p_show = sub.add_parser("show", help="split sizes and per-class counts of one dataset")
    p_show.add_argument("name", help="a named dataset (see 'data list'), folder:PATH or npz:PATH")
    p_show.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    add_json_flag(p_show)
    p_show.set_defaults(func=run_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def run_list(args: argparse.Namespace) -> int:
    emit(args, dataset_catalog(), _list_text)
    return 0


def _list_text(rows: list[dict]) -> str:
    body = []
    for r in rows:
        sizes = r["sizes"] or {}
        shape = "x".join(str(s) for s in r["image_shape"]) if r["image_shape"] else "-"
        note = r["source"] if r["available"] else (r["error"] or f"install: {r['install']}")
        body.append([r["name"], "yes" if r["available"] else "NO", sizes.get("train", "-"),
                     sizes.get("val", "-"), sizes.get("test", "-"), r["num_classes"], shape, note])
    text = table(body, ["dataset", "available", "train", "val", "test", "classes", "HxWxC", "source / install"])
    return text + "\nAlso usable: folder:PATH (one sub-folder of images per class) and npz:PATH (x uint8, y int)."


def run_show(args: argparse.Namespace) -> int:
    ds = load_dataset(args.name, seed=args.seed)
    parts = {"train": ds.train, "val": ds.val, "test": ds.test}
    counts = {k: np.bincount(v.labels, minlength=ds.num_classes).tolist() for k, v in parts.items()}
    payload = {"name": ds.name, "seed": args.seed, "num_classes": ds.num_classes, "classes": list(ds.classes),
               "image_shape": list(ds.image_shape), "sizes": {k: len(v) for k, v in parts.items()},
               "per_class": counts}
    emit(args, payload, _show_text)
    return 0


def _show_text(p: dict) -> str:
    head = (f"{p['name']}: {p['num_classes']} classes, images {'x'.join(map(str, p['image_shape']))} (HxWxC), "
            f"split seed {p['seed']}")
    rows = [[i, c] + [p["per_class"][s][i] for s in ("train", "val", "test")] for i, c in enumerate(p["classes"])]
    rows.append(["", "total"] + [p["sizes"][s] for s in ("train", "val", "test")])
    return head + "\n" + table(rows, ["label", "class", "train", "val", "test"])
