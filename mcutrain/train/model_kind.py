"""What fine-tuning needs to know about the model it trains: a zoo int8 model or an imported int8 graph.

Why: ``finetune`` was written for ``QModel`` (the zoo's blocks, ``Int8Net``); imported models are
``GraphModel`` files (a general QGraph and its classes, ``GraphNet``). Everything that differs
between the two kinds is answered here, once, so the trainer, the frozen-prefix cache, ``--lr auto``
and ``eval`` stay one code path over "a net with convs(), set_trainable, prefix/suffix".

For a graph:
- the task: a dataset with other classes gets a new zero int8 head (``graph_head.new_graph_head``);
- schemes: the baselines on the graph's convs (``sparse.builtin.graph_plan``); no channel permutation
  (every baseline trains whole convs or none);
- the input: the graph's own H x W (``--resolution`` cannot change it); the loader's default
  preprocessing, ``(p - 128) / 128``, which ``GraphNet.quantize_input`` turns into the int8 input
  ``p - 128`` and into one grey channel (the rounded mean of R, G, B) where the graph has one;
- the trained file: a graph model file whose provenance ``finetune`` says what trained it;
- the C engine (``compile``/``run``): the engine's frontend takes the QGraph (``engine_model``);
  ``target.json`` describes the graph's input (``target_facts``: preprocessing ``{"kind":
  "int8-graph", height, width, channels}``), from which ``codegen.samples`` makes the int8 images as
  ``GraphNet.quantize_input`` does; a graph records no head curvature for ``--lr auto``;
- the analysis and the search (``analyze``/``search``): the convs schemes address (``conv_table``, a
  ``sparse.table.ConvTable``: ``"model": "graph"``), the content identity contrib.json records
  (``content_identity``: ``graph:<sha256>`` of the file's tensors and structure, not its provenance), the
  engine's forward graph of a plan (``forward_graph``) and the analytic model (``analytic_bytes``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from types import SimpleNamespace

from mcutrain.data import Preprocessing
from mcutrain.errors import McutrainError
from mcutrain.io.container import peek_container
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_file import KIND as GRAPH_KIND
from mcutrain.quant.graph_file import GraphModel, load_graph_model, save_graph_model
from mcutrain.quant.graph_head import new_graph_head
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.sim_graph import GraphNet
from mcutrain.sparse import UpdatePlan, load_scheme, resolve
from mcutrain.sparse.builtin import graph_plan
from mcutrain.sparse.permute import prepare_model
from mcutrain.sparse.table import ConvTable, GraphConvs, ZooConvs

TrainableModel = QModel | GraphModel


def load_trainable(path: str | os.PathLike) -> TrainableModel:
    """The int8 model of ``path``: a zoo int8 model file or an imported graph model file."""
    if peek_container(path)[0] == GRAPH_KIND:
        return load_graph_model(path)
    return load_qmodel(path)


def is_graph(model: TrainableModel) -> bool:
    return isinstance(model, GraphModel)


def classes_of(model: TrainableModel) -> tuple[str, ...]:
    return tuple(model.classes)


def fit_task(model: TrainableModel, classes: tuple[str, ...]) -> TrainableModel:
    """A task with other classes than the model's gets a new zero-initialised int8 head."""
    if tuple(classes) == classes_of(model):
        return model
    if is_graph(model):
        return GraphModel(new_graph_head(model.graph, classes), tuple(classes))
    return new_head(model, classes)


def update_plan(model: TrainableModel, scheme: str) -> UpdatePlan:
    if is_graph(model):
        return graph_plan(model.graph, scheme)
    return resolve(load_scheme(scheme, model.spec), model.spec)


def prepared(model: TrainableModel, plan: UpdatePlan) -> TrainableModel:
    """The zoo model with the channels worth updating first; a graph as it is (whole convs train)."""
    return model if is_graph(model) else prepare_model(model, plan)


def identity(model: TrainableModel, plan: UpdatePlan) -> tuple:
    """(an object kept alive while a cached prefix is in use, the scheme): what identifies the cache."""
    return (model.graph if is_graph(model) else model.first_conv, plan.scheme)


def simulation(model: TrainableModel, *, float_twin: bool = False):
    """The int8 simulation (or, for zoo models, the fp32 twin) of ``model``."""
    if is_graph(model):
        if float_twin:
            raise McutrainError("--float trains the fp32 twin of a zoo model; an imported graph trains in int8 only")
        return GraphNet(model.graph)
    from mcutrain.quant.sim_model import Int8Net
    from mcutrain.train.float_twin import FloatTwin

    return FloatTwin(model) if float_twin else Int8Net(model)


def input_size(model: TrainableModel, resolution: int = 0) -> int | tuple[int, int]:
    """The loader's side (an int) for a zoo model, (height, width) for a graph (``resolution`` 0: the model's)."""
    if not is_graph(model):
        return resolution or model.resolution
    p = model.preprocessing
    hw = (p["height"], p["width"])
    if resolution and (resolution, resolution) != hw:
        raise McutrainError(f"--resolution {resolution}: an imported graph takes its own input size, "
                            f"{hw[0]}x{hw[1]} (leave --resolution out)")
    return hw


def preprocessing(model: TrainableModel) -> Preprocessing:
    """How loader pixels become the net's float input (graphs: the default, ``(p - 128) / 128``)."""
    return Preprocessing() if is_graph(model) else Preprocessing.from_dict(model.preprocessing)


def convs(model: TrainableModel) -> list:
    """The model's QConvs in scheme order."""
    return model.graph.convs() if is_graph(model) else model.convs()


def save_trained(path: str, model: TrainableModel, net, record: str, config: dict) -> None:
    """Write the trained integers of ``net``; the provenance says what trained them."""
    if is_graph(model):
        graph: QGraph = net.to_graph()
        graph = replace(graph, provenance={**graph.provenance, "finetune": record})
        save_graph_model(path, GraphModel(graph, classes_of(model)))
        return
    trained = net.to_qmodel()
    save_qmodel(path, replace(trained, provenance={**trained.provenance, "finetune": config}))


def finetune_record(config: dict) -> str:
    """The training recipe as one line (a graph file's provenance holds text)."""
    keys = ("data", "scheme", "epochs", "batch_size", "lr", "optimizer", "momentum", "qas", "update_rule", "seed",
            "train_subset", "augment")
    return "mcutrain finetune " + " ".join(f"{k}={config[k]}" for k in keys if k in config)


# ---------------------------------------------------------------------------------------------- the C engine

GRAPH_INPUT = "int8-graph"  # target.json's preprocessing kind for an imported graph's input


def engine_model(model: TrainableModel):
    """What the engine's frontend compiles (``engine.compile.compile_training``): the QModel or the QGraph."""
    return model.graph if is_graph(model) else model


def label(model: TrainableModel, path: str = "") -> str:
    """A model's name in reports: the zoo architecture, or the graph file's name."""
    return (os.path.basename(path) or "imported graph") if is_graph(model) else model.spec.name


def resolution_of(model: TrainableModel):
    """The input side (zoo) or [height, width] (graph), as reports and target.json carry it."""
    return list(input_size(model)) if is_graph(model) else model.resolution


def target_facts(model: TrainableModel, path: str = ""):
    """What ``codegen.targets.build_target`` reads of a model (name, resolution, classes, input), for either kind."""
    if not is_graph(model):
        return model
    p = model.preprocessing
    facts = {"kind": GRAPH_INPUT, "height": p["height"], "width": p["width"], "channels": p["channels"]}
    return SimpleNamespace(spec=SimpleNamespace(name=label(model, path)), resolution=resolution_of(model),
                           num_classes=len(model.classes), classes=classes_of(model), preprocessing=facts,
                           input=model.graph.tensor[model.graph.input].q)


def recorded_curvature(model: TrainableModel):
    """The head curvature ``finetune --lr auto`` recorded in a zoo model; a graph's provenance holds text: none."""
    if is_graph(model):
        return None
    from mcutrain.train import lr_auto

    return lr_auto.recorded_curvature(model)


# ---------------------------------------------------------------------------------------------- analysis, search

GRAPH_ARCH = GraphConvs.model  # contrib.json's model.arch and a graph scheme's "model"


def conv_table(model: TrainableModel) -> ConvTable:
    """The convs schemes address: the zoo architecture's, or the graph's in node order."""
    return GraphConvs(model.graph) if is_graph(model) else ZooConvs(model.spec)


def arch(model: TrainableModel) -> str:
    """The architecture a contrib.json names: the zoo name, or ``graph``."""
    return conv_table(model).model


def content_identity(model: TrainableModel) -> str:
    """``<arch>:<sha256>`` of what the model computes (``io.identity``), not of how it was made.

    A graph: the tensors and the structure its file holds (nodes, tensor shapes and quantization,
    classes, input), without the provenance, so a graph rewritten with another note is the same model."""
    from mcutrain.io.identity import qmodel_identity, tensors_sha256

    if not is_graph(model):
        return qmodel_identity(model)
    from mcutrain.quant.graph_file import _serialise  # the file's own contents, exactly

    meta, tensors = _serialise(model)
    meta = {k: v for k, v in meta.items() if k != "provenance"}
    h = hashlib.sha256(tensors_sha256(tensors).encode())
    h.update(json.dumps(meta, sort_keys=True).encode())
    return f"{GRAPH_ARCH}:{h.hexdigest()}"


def forward_graph(model: TrainableModel, plan: UpdatePlan):
    """The engine's forward IR of ``plan`` on ``model`` (as ``compile_training`` traces it)."""
    from mcutrain.engine.frontend import graph_from_qgraph, graph_from_qmodel

    return graph_from_qgraph(model.graph, plan) if is_graph(model) else graph_from_qmodel(model, plan)


def analytic_bytes(model: TrainableModel, plan: UpdatePlan) -> dict:
    """The paper's analytic extra memory of ``plan`` with the model's own conv sizes (``sparse.analytic``)."""
    from mcutrain.sparse.analytic import analytic_extra_bytes, graph_extra_bytes

    if is_graph(model):
        return graph_extra_bytes(plan, model.graph)
    return analytic_extra_bytes(plan, model.spec, qmodel=model)
