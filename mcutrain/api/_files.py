"""Reading and writing the files a `mcutrain.Model` comes from (private to ``mcutrain.api.models``).

Why apart: ``load_model`` dispatches on what a path is (zoo name, architecture file, one of four
mcutrain containers, a foreign ``.pkl``/``.tflite``) and each branch imports its own heavy module;
keeping them here keeps ``mcutrain.api.models`` cheap to import.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mcutrain.errors import McutrainError, one_line

if TYPE_CHECKING:
    from mcutrain.api.models import Model

_TFLITE_ID = b"TFL3"


def load_any(text: str, resolution: int, num_classes: int | None, classes: tuple[str, ...] | None) -> Model:
    """`mcutrain.load_model` for a string: see its docstring for what is accepted."""
    from mcutrain.models import model_names

    if (text in model_names() and not Path(text).exists()) or text.lower().endswith(".json"):
        return _architecture(text, resolution)
    if text.lower().endswith(".pkl"):
        return _tiny_training(text, resolution, num_classes, classes)
    if text.lower().endswith(".tflite") or _head(text)[4:8] == _TFLITE_ID:
        return _tflite(text, num_classes, classes)
    if num_classes is not None or classes is not None:
        raise McutrainError("num_classes/classes (a new head) apply to a .pkl or .tflite import; finetune gives "
                            "an mcutrain model a new head for its data")
    return _container(text, resolution)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as err:
        raise McutrainError(f"cannot read {one_line(path)}: {one_line(err.strerror or str(err))} (a model is "
                            f"a zoo name, an architecture .json file or a model file)") from None


def _architecture(text: str, resolution: int) -> Model:
    from mcutrain.api.models import Model
    from mcutrain.models import resolve_spec
    from mcutrain.models.spec_file import check_size

    spec = resolve_spec(text)
    side = resolution or spec.default_resolution
    check_size(spec, side)
    return Model("architecture", spec.name, None if spec.name == text else text, side, spec)


def _tiny_training(text: str, resolution: int, num_classes: int | None, classes: tuple[str, ...] | None) -> Model:
    from mcutrain.api.models import Model
    from mcutrain.quant.import_tiny_training import import_tiny_training

    qmodel = import_tiny_training(text, num_classes=num_classes, classes=classes)
    qmodel = replace(qmodel, resolution=resolution) if resolution else qmodel
    return Model("int8-model", qmodel.spec.name, None, qmodel.resolution, qmodel)


def _tflite(text: str, num_classes: int | None, classes: tuple[str, ...] | None) -> Model:
    from mcutrain.api.models import Model
    from mcutrain.quant.import_tflite import import_tflite

    model = import_tflite(text, num_classes, classes, False)
    pre = model.preprocessing
    return Model("int8-graph", Path(text).stem, None, (pre["height"], pre["width"]), model)


def _container(text: str, resolution: int) -> Model:
    from mcutrain.api.models import Model
    from mcutrain.io.container import peek_container

    kind = peek_container(text)[0]
    if kind == "float-checkpoint":
        from mcutrain.train.checkpoint import load_checkpoint

        net, info = load_checkpoint(text)
        return Model(kind, info.model, text, resolution or info.resolution, (net, info))
    if kind == "int8-model":
        from mcutrain.quant.model_file import load_qmodel

        qmodel = load_qmodel(text)
        qmodel = replace(qmodel, resolution=resolution) if resolution else qmodel
        return Model(kind, qmodel.spec.name, text, qmodel.resolution, qmodel)
    if kind == "int8-graph":
        from mcutrain.quant.graph_file import load_graph_model

        graph = load_graph_model(text)
        pre = graph.preprocessing
        return Model(kind, graph.provenance.get("source", "") or Path(text).stem, text,
                     (pre["height"], pre["width"]), graph)
    if kind == "mcutrain-float-graph":
        from mcutrain.models.float_graph import load_float_graph

        fgraph = load_float_graph(text)
        return Model("float-graph", fgraph.provenance.get("source", "") or Path(text).stem, text,
                     tuple(fgraph.input_shape[1:]), fgraph)
    raise McutrainError(f"{one_line(text)}: a {kind!r} file is not a model")


def save_model(model: Model, path: str) -> None:
    """Write ``model`` in its kind's file format (atomically, as every mcutrain file)."""
    if model.kind == "int8-model":
        from mcutrain.quant.model_file import save_qmodel

        save_qmodel(path, model.value)
    elif model.kind == "int8-graph":
        from mcutrain.quant.graph_file import save_graph_model

        save_graph_model(path, model.value)
    elif model.kind == "float-graph":
        from mcutrain.models.float_graph import save_float_graph

        save_float_graph(path, model.value)
    elif model.kind == "float-checkpoint":
        from mcutrain.train.checkpoint import save_checkpoint

        save_checkpoint(path, *model.value)
    else:
        from mcutrain.models import write_spec_file

        write_spec_file(path, model.value)
