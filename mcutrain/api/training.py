"""Train and measure: ``pretrain`` (float), ``evaluate``, ``quantize`` (float -> int8), ``finetune``
(int8, sparse update, in the PyTorch simulation): the functions behind the commands of those names.

Each takes the command's flags as keyword arguments with the command's defaults, and returns the
command's ``--json`` document as a frozen `mcutrain.api.results.Result`. A run that fails to learn
raises `mcutrain.errors.TrainingFailed` (its ``result`` holds the document), as the command exits 3.
Heavy modules (torch, the trainer) are imported when a function is called, not with ``mcutrain``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcutrain.api.arguments import PathLike, path_of
from mcutrain.api.results import Result
from mcutrain.errors import DataError

__all__ = ["EvalResult", "FinetuneResult", "PretrainResult", "QuantizeResult", "evaluate", "finetune", "pretrain",
           "quantize"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- pretrain


def _pretrain_text(s: dict[str, Any]) -> str:
    return (f"{s['model']} on {s['data']} @ {s['resolution']}px: test accuracy {s['test_accuracy']:.4f} "
            f"(n={s['test_n']}) -> {s['checkpoint']}")


@dataclass(frozen=True, eq=False)
class PretrainResult(Result):
    """What `pretrain` measured: test accuracy, the checkpoint written, per-epoch health."""

    def text(self) -> str:
        return _pretrain_text(dict(self.payload))

    @property
    def checkpoint(self) -> str:
        """The float checkpoint written (``out``)."""
        return str(self.payload["checkpoint"])

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the dataset's test split, 0..1."""
        return float(self.payload["test_accuracy"])


def pretrain(model: PathLike, data: str, out: PathLike, *, epochs: int = 12, batch_size: int = 128,
             lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 4e-5, label_smoothing: float = 0.1,
             resolution: int = 0, no_augment: bool = False, seed: int = 0, resume: bool = False,
             force: bool = False, keep_failed: bool = False, quiet: bool = False,
             log: Callable[[str], None] = _stderr) -> PretrainResult:
    """Float-train ``model`` (a zoo name or an architecture .json file) on ``data``; writes the
    checkpoint ``out`` (``mcutrain pretrain``). ``log`` receives the epoch lines (default: stderr)."""
    from mcutrain.train.pretrain import PretrainConfig
    from mcutrain.train.pretrain import pretrain as run_pretrain

    cfg = PretrainConfig(model=path_of(model), data=data, out=path_of(out), epochs=epochs, batch_size=batch_size,
                         lr=lr, momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
                         resolution=resolution, augment=not no_augment, seed=seed)
    summary = run_pretrain(cfg, resume=resume, force=force, progress=not quiet, log=log, keep_failed=keep_failed)
    return PretrainResult(summary)


# ---------------------------------------------------------------------------------------------- evaluate


def _eval_text(r: dict[str, Any]) -> str:
    return f"{r['model']} on {r['data']} ({r['split']}): accuracy {r['accuracy']:.4f} over {r['n']} samples"


@dataclass(frozen=True, eq=False)
class EvalResult(Result):
    """Accuracy and loss of a model on one split of a dataset."""

    def text(self) -> str:
        return _eval_text(dict(self.payload))

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy, 0..1."""
        return float(self.payload["accuracy"])


def evaluate(checkpoint: PathLike, data: str, *, seed: int = 0, split: str = "test") -> EvalResult:
    """Accuracy of ``checkpoint`` (a float checkpoint, or an int8 graph run bit-exactly in int8) on a
    split of ``data`` (``mcutrain eval``)."""
    from mcutrain.data import load_dataset
    from mcutrain.train.evaluate import evaluate as run_evaluate

    if split not in ("test", "val", "train"):
        raise DataError(f"split {split!r}: choose test, val or train")
    path = path_of(checkpoint)
    model, name, classes, resolution, prep = _evaluable(path)
    dataset = load_dataset(data, seed=seed)
    if dataset.num_classes != classes:
        raise DataError(f"{data} has {dataset.num_classes} classes but {path} was trained for {classes}")
    result = run_evaluate(model, getattr(dataset, split), resolution, prep)
    return EvalResult({"accuracy": result["accuracy"], "n": result["n"], "loss": result["loss"], "model": name,
                       "data": data, "split": split})


def _evaluable(path: str) -> tuple[Any, str, int, Any, Any]:
    """(net, model name, number of classes, loader resolution, preprocessing) of a checkpoint or int8 graph."""
    from mcutrain.data import Preprocessing
    from mcutrain.io.container import peek_container
    from mcutrain.quant.graph_file import KIND as GRAPH_KIND
    from mcutrain.train.checkpoint import load_checkpoint

    if peek_container(path)[0] == GRAPH_KIND:
        from mcutrain.train import model_kind as mk

        graph_model = mk.load_trainable(path)
        name = graph_model.provenance.get("source", "int8 graph")
        return (mk.simulation(graph_model), name, len(graph_model.classes), mk.input_size(graph_model),
                mk.preprocessing(graph_model))
    model, info = load_checkpoint(path)
    return model, info.model, info.num_classes, info.resolution, Preprocessing.from_dict(info.preprocessing)


# ---------------------------------------------------------------------------------------------- quantize


def _quantize_text(r: dict[str, Any]) -> str:
    head = f"{r['model']}: float {r['float_accuracy'] * 100:.2f}% -> int8 {r['int8_accuracy'] * 100:.2f}% on "
    if "agreement" in r:
        return (head + f"{r['n']:,} test images (same class: {r['agreement'] * 100:.1f}%); int8 graph of "
                f"{r['nodes']} nodes; wrote {r['out']}")
    return head + f"{r['n']:,} test images; wrote {r['out']}"


@dataclass(frozen=True, eq=False)
class QuantizeResult(Result):
    """Float and int8 test accuracy of a quantized model, and the file written."""

    def text(self) -> str:
        return _quantize_text(dict(self.payload))

    @property
    def out(self) -> str:
        """The int8 model file written."""
        return str(self.payload["out"])

    @property
    def int8_accuracy(self) -> float:
        """Test accuracy of the int8 model, 0..1."""
        return float(self.payload["int8_accuracy"])

    @property
    def float_accuracy(self) -> float:
        """Test accuracy of the float model it came from, 0..1."""
        return float(self.payload["float_accuracy"])


def quantize(checkpoint: PathLike, data: str, out: PathLike, *, calibration_batches: int = 16,
             seed: int | None = None) -> QuantizeResult:
    """Post-training quantization of a float checkpoint (or an imported PyTorch float graph) to an
    int8 model file ``out``, calibrated on ``data`` (``mcutrain quantize``). ``seed``: the split seed
    (None: the checkpoint's)."""
    from mcutrain.io.container import peek_container
    from mcutrain.models.float_graph import KIND as FLOAT_GRAPH_KIND

    path, out_path = path_of(checkpoint), path_of(out)
    if peek_container(path)[0] == FLOAT_GRAPH_KIND:
        return _quantize_float_graph(path, data, out_path, calibration_batches, seed)
    return _quantize_checkpoint(path, data, out_path, calibration_batches, seed)


def _quantize_checkpoint(path: str, data: str, out: str, batches: int, seed: int | None) -> QuantizeResult:
    from mcutrain.data import Preprocessing, load_dataset
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.quant.sim_model import Int8Net
    from mcutrain.train.checkpoint import load_checkpoint
    from mcutrain.train.evaluate import evaluate as run_evaluate

    model, info = load_checkpoint(path)
    seed = seed if seed is not None else info.training.get("config", {}).get("seed", 0)
    dataset = load_dataset(data, seed=seed)
    if dataset.num_classes != info.num_classes:
        raise DataError(f"{data} has {dataset.num_classes} classes, {path} has {info.num_classes}")
    print(f"calibrating on {batches} batches of {data} ...", file=sys.stderr)
    qmodel = quantize_model(model, info, dataset.train, batches=batches, seed=seed, calibration_data=data)
    save_qmodel(out, qmodel)
    prep = Preprocessing.from_dict(info.preprocessing)
    print(f"evaluating float and int8 on {len(dataset.test):,} test images ...", file=sys.stderr)
    fl = run_evaluate(model, dataset.test, info.resolution, prep)
    q8 = run_evaluate(Int8Net(qmodel), dataset.test, info.resolution, prep)
    frozen = sum(len(c.frozen_channels) for c in qmodel.convs())
    return QuantizeResult({"out": out, "model": info.model, "resolution": info.resolution,
                           "float_accuracy": fl["accuracy"], "int8_accuracy": q8["accuracy"], "n": q8["n"],
                           "accuracy_drop": fl["accuracy"] - q8["accuracy"], "degenerate_channels": frozen})


def _quantize_float_graph(path: str, data: str, out: str, batches: int, seed: int | None) -> QuantizeResult:
    """An imported PyTorch float graph -> an int8 graph file, with float and int8 test accuracy."""
    from mcutrain.api.torch_file import quantize_and_evaluate
    from mcutrain.data import load_dataset
    from mcutrain.models.float_graph import load_float_graph
    from mcutrain.quant.graph_file import GraphModel, save_graph_model

    graph = load_float_graph(path)
    seed = seed if seed is not None else 0
    dataset = load_dataset(data, seed=seed)
    if dataset.num_classes != graph.num_outputs:
        raise DataError(f"{data} has {dataset.num_classes} classes, {path} has {graph.num_outputs}")
    print(f"calibrating on {batches} batches of {data} ...", file=sys.stderr)
    qgraph, metrics = quantize_and_evaluate(graph, dataset.train, dataset.test, batches, seed, data)
    classes = tuple(graph.classes) or tuple(str(i) for i in range(graph.num_outputs))
    save_graph_model(out, GraphModel(qgraph, classes))
    return QuantizeResult({"out": out, "model": path, "nodes": len(qgraph.nodes), **metrics})


# ---------------------------------------------------------------------------------------------- finetune


def _finetune_text(r: dict[str, Any]) -> str:
    loss = "none" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
    fate = f"wrote {r['out']}" if r["out"] else "wrote nothing"
    return (f"test accuracy {r['accuracy_before'] * 100:.2f}% -> {r['accuracy'] * 100:.2f}% (n={r['n']}), "
            f"validation accuracy {r['val_accuracy'] * 100:.2f}%, final train loss {loss}, lr {r['config']['lr']:.3g}, "
            f"{r['images_per_s']:.0f} images/s; {'FAILED, ' if r['failed'] else ''}{fate}")


@dataclass(frozen=True, eq=False)
class FinetuneResult(Result):
    """Accuracy before and after fine-tuning, the rate used, the model written."""

    def text(self) -> str:
        return _finetune_text(dict(self.payload))

    @property
    def accuracy(self) -> float:
        """Test accuracy after training, 0..1."""
        return float(self.payload["accuracy"])

    @property
    def accuracy_before(self) -> float:
        """Test accuracy before training (a new head: chance), 0..1."""
        return float(self.payload["accuracy_before"])

    @property
    def lr(self) -> float:
        """The learning rate the run used (``auto``'s choice where it chose)."""
        return float(self.payload["config"]["lr"])


def finetune(model: PathLike, data: str, scheme: PathLike, out: PathLike, *, optimizer: str = "sgd",
             momentum: float = 0.9, qas: bool = True, update_rule: str = "sr", epochs: int = 10,
             batch_size: int = 32, lr: float | str = "auto", resolution: int = 0, seed: int = 0,
             train_subset: int = 0, eval_subset: int = 0, augment: bool = False, float: bool = False,
             keep_failed: bool = False, quiet: bool = False, backward: str = "float32") -> FinetuneResult:
    """Train the int8 ``model`` on ``data`` with the parameters ``scheme`` selects (a built-in name or a
    scheme .json file) in the PyTorch simulation; writes ``out`` (``mcutrain finetune``). A dataset
    with other classes than the model gets a new int8 head; ``float``: train the fp32 twin instead.
    ``backward``: "float32" (default) or "int8", the integer backward of ``quant/int8_grad.py`` (plain
    SGD: ``momentum=0``)."""
    from mcutrain.train.finetune import FinetuneConfig, no_qas_warning
    from mcutrain.train.finetune import finetune as run_finetune
    from mcutrain.train.model_kind import load_trainable

    cfg = FinetuneConfig(model=path_of(model), data=data, scheme=path_of(scheme), out=path_of(out),
                         optimizer=optimizer, momentum=momentum, qas=qas, update_rule=update_rule, epochs=epochs,
                         batch_size=batch_size, lr=lr, resolution=resolution, seed=seed, augment=augment,
                         float=float, train_subset=train_subset, eval_subset=eval_subset, backward=backward)
    loaded = None
    if not cfg.float and not cfg.qas:  # the int8 step without QAS: say what it costs
        loaded = load_trainable(cfg.model)
        print(f"mcutrain finetune: warning: {no_qas_warning(loaded, cfg)}", file=sys.stderr)
    return FinetuneResult(run_finetune(cfg, progress=not quiet, model=loaded, keep_failed=keep_failed))
