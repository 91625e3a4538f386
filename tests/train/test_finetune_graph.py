"""Fine-tuning imported int8 graphs (issue 13): the trainer, eval and export on GraphModel files.

Two small graphs made as a user makes them (a PyTorch module pretrained briefly on digits, imported
and quantized by mcutrain): a ResNet-like one (identity and 1x1 stride-2 convolution shortcuts) and
a VWW-like one (grey non-square input, depthwise-separable blocks). Each gets a new head and a short
fine-tune on digits through the CLI; the loss falls, the accuracy ends well above chance, the file
loads, evaluates, exports, and LiteRT's reference kernels compute exactly graph_forward's outputs
on the export. The shared VWW model (when present) learns a new 2-class head on faces.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))

from tests.helpers.cli import run_command  # noqa: E402
from tests.helpers.trainable_graphs import ResNetLike, VwwLike, trainable_model  # noqa: E402

from mcutrain.cli import cmd_eval, cmd_export, cmd_finetune  # noqa: E402
from mcutrain.data import load_dataset  # noqa: E402
from mcutrain.errors import McutrainError, TrainingFailed  # noqa: E402
from mcutrain.quant.graph_file import GraphModel, load_graph_model, save_graph_model  # noqa: E402
from mcutrain.quant.graph_forward import graph_forward  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402
from mcutrain.sparse.errors import SchemeError  # noqa: E402
from mcutrain.train.finetune import FinetuneConfig, finetune  # noqa: E402

GRAPHS = {"resnet_like": ResNetLike, "vww_like": VwwLike}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def models(digits, tmp_path_factory):
    """Each graph as a file whose classes differ from digits' names: finetune gives it a new head."""
    folder = tmp_path_factory.mktemp("graphs")
    paths = {}
    for name, module_type in GRAPHS.items():
        model = trainable_model(module_type, digits, pretrain_epochs=3)
        paths[name] = folder / f"{name}.safetensors"
        save_graph_model(paths[name], GraphModel(model.graph, tuple(f"pre{c}" for c in model.classes)))
    return paths


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_finetune_cli_trains_evaluates_and_exports(name, models, tmp_path, capsys):
    out = tmp_path / "trained.safetensors"
    code, text = run_command(cmd_finetune, ["finetune", str(models[name]), "--data", "digits", "--scheme", "last-k:3",
                                            "--epochs", "2", "--out", str(out), "--quiet", "--json"])
    r = json.loads(text)
    assert code == 0 and r["out"] == str(out) and not r["failed"]
    assert r["train_loss_per_epoch"][-1] < math.log(10) and r["train_loss_per_epoch"][-1] < r["train_loss_per_epoch"][0]
    assert r["accuracy_before"] <= 0.15 and r["accuracy"] > 0.3  # chance: 0.1 (a new zero head)
    assert r["trainable"]["weight_layers"] and r["prefix_cached_blocks"] > 0

    trained = load_graph_model(out)
    original = load_graph_model(models[name])
    assert trained.classes == tuple(str(i) for i in range(10))
    assert "scheme=last-k:3" in trained.provenance["finetune"]
    convs_before, convs_after = original.graph.convs(), trained.graph.convs()
    changed = [not np.array_equal(a.weight, b.weight) for a, b in zip(convs_before, convs_after)]
    assert not any(changed[:-3]) and any(changed[-3:])  # only the last 3 convs' weights may move

    code, text = run_command(cmd_eval, ["eval", str(out), "--data", "digits", "--json"])
    assert code == 0 and json.loads(text)["accuracy"] == pytest.approx(r["accuracy"])

    tfl = tmp_path / "trained.tflite"
    code, _ = run_command(cmd_export, ["export", str(out), "--out", str(tfl)])
    assert code == 0
    _check_litert_equal(tfl, trained)


def _check_litert_equal(path: Path, model: GraphModel) -> None:
    pytest.importorskip("ai_edge_litert")
    from litert_compare import litert_all_tensors, to_nhwc

    from mcutrain.models.tflite.reader import read_tflite
    from mcutrain.quant.from_tflite import graph_from_tflite

    graph = graph_from_tflite(read_tflite(path))
    assert graph.convs()[-1].weight.tobytes() == model.graph.convs()[-1].weight.tobytes()
    x = np.random.default_rng(0).integers(-128, 128, size=(1,) + graph.tensor[graph.input].shape[1:]).astype(np.int8)
    ours = graph_forward(graph, x)[graph.output]
    theirs = litert_all_tensors(path, to_nhwc(x))
    out_index = next(i for i, t in enumerate(read_tflite(path).tensors) if t.name == graph.output)
    np.testing.assert_array_equal(theirs[out_index], ours)


def test_frozen_channels_never_train(models, digits, tmp_path):
    model = load_graph_model(models["resnet_like"])
    nodes = list(model.graph.nodes)
    i = next(k for k, n in enumerate(nodes) if n.kind == "conv2d")
    nodes[i] = replace(nodes[i], params=replace(nodes[i].params, frozen_channels=(0, 3)))
    frozen = GraphModel(replace(model.graph, nodes=tuple(nodes)), tuple(digits.classes))
    out = tmp_path / "t.safetensors"
    try:  # whether this short run passes the health checks does not matter here; the file is written
        finetune(FinetuneConfig(model="", data="digits", scheme="full", epochs=1, lr=0.1, out=str(out)),
                 progress=False, model=frozen, dataset=digits, keep_failed=True)
    except TrainingFailed:
        pass
    after = load_graph_model(out).graph.convs()[0]
    before = frozen.graph.convs()[0]
    np.testing.assert_array_equal(after.weight[[0, 3]], before.weight[[0, 3]])
    np.testing.assert_array_equal(after.bias[[0, 3]], before.bias[[0, 3]])
    assert not np.array_equal(after.weight, before.weight)  # the other channels did train


def test_graph_schemes(models):
    graph = load_graph_model(models["vww_like"]).graph
    n = len(graph.convs())
    assert [c.bias for c in graph_plan(graph, "bias-only").convs] == [True] * n
    assert not any(c.updates_weight for c in graph_plan(graph, "bias-only").convs)
    assert graph_plan(graph, "last-layer").lowest_trained_conv is None
    plan = graph_plan(graph, "last-k:2")
    assert [c.index for c in plan.trained_convs] == [n - 2, n - 1] and all(c.kept_channels > 0 for c in plan.convs[-2:])
    assert [c.kind for c in graph_plan(graph, "full").convs][:3] == ["normal", "depthwise", "pointwise"]
    for bad, says in (("paper-99kb", "zoo networks"), (f"last-k:{n + 1}", f"0 to {n}"), ("nope", "last-k:N")):
        with pytest.raises(SchemeError, match=says) as err:
            graph_plan(graph, bad)
        assert "\n" not in str(err.value)


def test_graph_refusals(models, digits):
    model = load_graph_model(models["vww_like"])
    with pytest.raises(McutrainError, match="int8 only"):
        finetune(FinetuneConfig(model="", data="digits", scheme="full", float=True, lr=0.1), progress=False,
                 model=model, dataset=digits)
    with pytest.raises(McutrainError, match="13x9"):
        finetune(FinetuneConfig(model="", data="digits", scheme="full", resolution=32, lr=0.1), progress=False,
                 model=model, dataset=digits)


@pytest.mark.slow
def test_shared_vww_new_head_learns_faces(tmp_path):
    from tests.quant.graph_models import shared_model

    from mcutrain.quant.import_tflite import import_tflite

    path = shared_model("vww_96_int8")
    faces = load_dataset("faces")
    model = import_tflite(path, classes=tuple(faces.classes), new_head=True)
    r = finetune(FinetuneConfig(model="", data="faces", scheme="last-layer", epochs=3,
                                out=str(tmp_path / "t.safetensors")), progress=False, model=model, dataset=faces)
    assert r["accuracy"] > r["accuracy_before"] and r["accuracy"] > 0.6


def test_a_graph_scheme_file_with_ratios(models, tmp_path):
    graph = load_graph_model(models["resnet_like"]).graph
    names = [c.name for c in graph.convs()]
    doc = {"format": "mcutrain-scheme", "version": 1, "model": "graph", "name": "mine",
           "bias": {"layers": [3, names[5]]}, "weights": [{"layer": names[5], "ratio": 0.25}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    plan = graph_plan(graph, str(path))
    assert plan.scheme == "mine" and [c.index for c in plan.trained_convs] == [3, 5]
    assert plan.convs[5].kept_channels == max(1, graph.convs()[5].in_ch // 4) and not plan.convs[3].updates_weight
    for edit, says in (({"model": "mcunet-5fps"}, '"model": "graph"'), ({"bias": {"last": 99}}, "0 to"),
                       ({"weights": [{"layer": 1, "ratio": 0.3}]}, "ratio"),
                       ({"weights": [{"layer": 0, "ratio": 1}]}, "not its bias"),
                       ({"bias": {"layers": ["nope"]}}, "not a conv")):
        path.write_text(json.dumps({**doc, **edit}))
        with pytest.raises(SchemeError, match=says) as err:
            graph_plan(graph, str(path))
        assert "\n" not in str(err.value)


def test_a_ratio_trains_only_the_first_input_channels(models, digits, tmp_path):
    model = load_graph_model(models["resnet_like"])
    doc = {"format": "mcutrain-scheme", "version": 1, "model": "graph", "name": "quarter",
           "bias": {"last": 2}, "weights": [{"layer": 5, "ratio": 0.25}]}
    scheme = tmp_path / "quarter.json"
    scheme.write_text(json.dumps(doc))
    out = tmp_path / "t.safetensors"
    try:
        finetune(FinetuneConfig(model="", data="digits", scheme=str(scheme), epochs=1, lr=0.1, out=str(out)),
                 progress=False, model=model, dataset=digits, keep_failed=True)
    except TrainingFailed:
        pass
    before, after = model.graph.convs()[5], load_graph_model(out).graph.convs()[5]
    kept = max(1, before.in_ch // 4)
    assert not np.array_equal(after.weight[:, :kept], before.weight[:, :kept])
    np.testing.assert_array_equal(after.weight[:, kept:], before.weight[:, kept:])
