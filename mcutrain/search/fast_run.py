"""What the fast estimate (``search.fast``) shares with the fine-tune analysis, for both model kinds:
the candidate grid, the document's model section, and the one real fine-tune that calibrates it.

Why separate: these are the parts that differ between a zoo int8 model and an imported graph, and
they answer through ``train.model_kind`` only (a zoo model resolves its selections with
``search.grid`` like ``analyze``; a graph takes conv indices, ranges and ``last:N`` in its node order).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass

from mcutrain.errors import McutrainError
from mcutrain.search.grid import default_layers, select_bias_grid, select_ratios
from mcutrain.train import model_kind as mk


@dataclass(frozen=True)
class Grid:
    n_convs: int
    bias_k: tuple[int, ...]
    layers: tuple[int, ...]
    ratios: tuple[float, ...]


def resolve_grid(model: mk.TrainableModel, layers, ratios, bias_grid) -> Grid:
    """The analysis's candidates (``contrib.plan_runs``): the bias grid plus the depths the weight runs need."""
    n = len(mk.convs(model))
    if mk.is_graph(model):
        chosen = _graph_layers(layers, n)
    else:
        from mcutrain.search.grid import select_layers

        chosen = select_layers(layers, model.spec)
    grid = set(select_bias_grid(bias_grid, n)) | {n - i for i in chosen}
    return Grid(n, tuple(sorted(grid)), chosen, select_ratios(ratios))


def _graph_layers(selection, n: int) -> tuple[int, ...]:
    """Conv indices of a graph: ``None`` (the last half), ints, ``a..b`` ranges and ``last:N``."""
    if selection is None or selection == "" or selection == ():
        return default_layers(n)
    items = [s.strip() for s in selection.split(",")] if isinstance(selection, str) else list(selection)
    out: set[int] = set()
    for item in items:
        text = str(item)
        try:
            if text.startswith("last:"):
                count = int(text[5:])
                lo, hi = n - count, n - 1
                if not 1 <= count <= n:
                    raise ValueError
            elif ".." in text:
                lo, hi = (int(v) for v in text.split("..", 1))
            else:
                lo = hi = int(text)
        except ValueError:
            raise McutrainError(f"--layers {text!r}: use conv indices 0..{n - 1}, ranges A..B or last:N "
                                f"(N = 1..{n}) for an imported graph") from None
        if not 0 <= lo <= hi < n:
            raise McutrainError(f"--layers {text!r}: the graph has convs 0..{n - 1}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


@contextlib.contextmanager
def _scheme_file(model: mk.TrainableModel, bias: int, layer: int | None, ratio: float):
    """The run as a temporary scheme file (``finetune`` takes a scheme by name or file), removed after."""
    n = len(mk.convs(model))
    weights = [(layer, ratio)] if layer is not None else []
    fd, path = tempfile.mkstemp(prefix="mcutrain-fast-", suffix=".json")
    os.close(fd)
    try:
        if mk.is_graph(model):
            from mcutrain.sparse.scheme import FORMAT, VERSION
            from mcutrain.sparse.builtin import GRAPH_MODEL

            doc = {"format": FORMAT, "version": VERSION, "model": GRAPH_MODEL, "name": "fast-calibration",
                   "bias": {"last": bias}, "weights": [{"layer": i, "ratio": r} for i, r in weights]}
            with open(path, "w") as f:
                json.dump(doc, f)
        else:
            from mcutrain.sparse.scheme import Scheme, save_scheme

            scheme = Scheme(model.spec.name, "fast-calibration", tuple(range(n - bias, n)), tuple(weights),
                            description="fast estimate calibration run")
            save_scheme(path, scheme, model.spec)
        yield path
    finally:
        os.unlink(path)


def calibration_run(cfg, model: mk.TrainableModel, dataset, bias: int, layer: int | None, ratio: float,
                    lr: float) -> dict:
    """One real fine-tune with the estimate's settings (never the test split): val accuracy, health, time."""
    import time

    from mcutrain.search.runs import without_test
    from mcutrain.train.finetune import FinetuneConfig, finetune

    t0 = time.perf_counter()
    with _scheme_file(model, bias, layer, ratio) as path:
        ft = FinetuneConfig(model=cfg.model, data=cfg.data, scheme=path, epochs=cfg.epochs, batch_size=cfg.batch_size,
                            lr=lr, momentum=cfg.momentum, optimizer=cfg.optimizer, qas=cfg.qas,
                            update_rule=cfg.update_rule, seed=cfg.seed, resolution=cfg.resolution,
                            train_subset=cfg.train_subset, eval_subset=cfg.eval_subset)
        result = finetune(ft, progress=False, model=model, dataset=without_test(dataset))
    return {"val_accuracy": result["val_accuracy"], "failed": result["failed"],
            "seconds": round(time.perf_counter() - t0, 2)}
