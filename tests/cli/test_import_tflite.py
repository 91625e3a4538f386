"""`mcutrain import MODEL.tflite`: the graph file it writes, its head choices, its report and its refusals."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))

from graph_models import conv_only, plain_cnn, resnet, shared_model  # noqa: E402

from mcutrain.cli.main import main  # noqa: E402
from mcutrain.models.tflite import writer  # noqa: E402
from mcutrain.models.tflite.writer import write_tflite  # noqa: E402
from mcutrain.quant.from_tflite import load_tflite_graph  # noqa: E402
from mcutrain.quant.graph_file import load_graph_model  # noqa: E402
from mcutrain.quant.graph import QGraph  # noqa: E402
from mcutrain.quant.graph_head import HEAD_LOGIT_SCALE, classifier_node  # noqa: E402
from mcutrain.quant.import_tflite import freeze_degenerate  # noqa: E402


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cnn_file(tmp_path):
    path = tmp_path / "cnn.tflite"
    write_tflite(plain_cnn(), path)  # 4 classes, softmax
    return path


def test_import_keeps_the_models_own_head_and_records_provenance(tmp_path, capsys, cnn_file):
    out = tmp_path / "m.safetensors"
    code, text, err = _run(capsys, ["import", str(cnn_file), "--out", str(out)])
    assert code == 0 and err == ""
    model = load_graph_model(out)
    assert model.graph == plain_cnn() and model.classes == ("0", "1", "2", "3")
    assert model.provenance == {"source": "cnn.tflite", "format": "tflite", "head": "kept",
                                "sha256": hashlib.sha256(cnn_file.read_bytes()).hexdigest()}
    assert model.graph.describe() in text  # the graph's table, line for line
    assert "ops: conv2d 1, maxpool 1, depthwise_conv2d 1, mean 1, fully_connected 1, softmax 1" in text
    assert "head kept: the model's 4-class classifier (0, 1, 2, 3)" in text
    assert "input: 12x10x1 int8 = round(x / 0.00392157) - 128" in text
    assert text.rstrip().endswith(f"wrote {out}")


@pytest.mark.parametrize("argv,head,classes", [
    (["--num-classes", "4"], "kept", ("0", "1", "2", "3")),
    (["--classes", "a,b,c,d"], "kept", ("a", "b", "c", "d")),
    (["--num-classes", "4", "--new-head"], "replaced", ("0", "1", "2", "3")),
    (["--num-classes", "3"], "replaced", ("0", "1", "2")),
    (["--classes", "cat, dog"], "replaced", ("cat", "dog")),
])
def test_head_options(tmp_path, capsys, cnn_file, argv, head, classes):
    out = tmp_path / "m.safetensors"
    code, text, _ = _run(capsys, ["import", str(cnn_file), *argv, "--out", str(out)])
    assert code == 0
    model = load_graph_model(out)
    assert model.classes == classes and model.provenance["head"] == head
    _, fc, _ = classifier_node(model.graph)
    assert fc.params.weight.shape[0] == len(classes)
    assert (not fc.params.weight.any()) == (head == "replaced")
    if head == "replaced":
        assert f"head replaced: new zero-initialised int8 classifier, {len(classes)} classes" in text
        assert f"logits int8 at scale {HEAD_LOGIT_SCALE:g}, zero point 0" in text


def test_json_report(tmp_path, capsys, cnn_file):
    out = tmp_path / "m.safetensors"
    code, text, _ = _run(capsys, ["import", str(cnn_file), "--classes", "x,y", "--out", str(out), "--json"])
    r = json.loads(text)
    assert code == 0 and r["out"] == str(out) and r["source"] == "cnn.tflite" and r["format"] == "tflite"
    assert r["head"] == "replaced" and r["num_classes"] == 2 and r["classes"] == ["x", "y"]
    assert r["op_counts"] == {"conv2d": 1, "maxpool": 1, "depthwise_conv2d": 1, "mean": 1, "fully_connected": 1,
                              "softmax": 1}
    assert r["nodes"] == 6 and len(r["layers"]) == 6 and r["layers"][4]["output"] == [1, 2]
    assert r["input"] == {"scale": plain_cnn().tensor["input_0"].q.scale, "zero": -128, "height": 12, "width": 10,
                          "channels": 1}
    assert r["weights"] == sum(layer["weights"] for layer in r["layers"]) > 0
    assert r["head_logit_scale"] == HEAD_LOGIT_SCALE and r["softmax"] is True


def test_format_is_detected_from_the_flatbuffer_identifier(tmp_path, capsys, cnn_file):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(cnn_file.read_bytes())
    code, _, _ = _run(capsys, ["import", str(renamed), "--out", str(tmp_path / "m.safetensors")])
    assert code == 0 and load_graph_model(tmp_path / "m.safetensors").graph == plain_cnn()
    other = tmp_path / "model.dat"
    other.write_bytes(b"\0" * 64)
    with pytest.raises(SystemExit) as exc:
        main(["import", str(other), "--out", str(tmp_path / "n.safetensors")])
    assert exc.value.code == 2 and "--format is required" in capsys.readouterr().err


def test_unsupported_operator_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(writer._OPS, "maxpool", "L2_POOL_2D")  # an operator mcutrain does not map
    path = tmp_path / "l2.tflite"
    write_tflite(plain_cnn(), path)
    out = tmp_path / "m.safetensors"
    code, text, err = _run(capsys, ["import", str(path), "--out", str(out)])
    assert code == 2 and text == "" and not out.exists()
    assert err.count("\n") == 1 and "operator 1 (L2_POOL_2D; inputs [" in err and "unsupported operator" in err


@pytest.mark.parametrize("blob,message", [
    (b"", "flatbuffer|empty|too short|bytes"),
    (b"\x10\x00\x00\x00TFL3" + b"\xff" * 40, "corrupt|flatbuffer|offset|outside"),
])
def test_corrupt_files_are_one_line_exit_2(tmp_path, capsys, blob, message):
    import re

    path = tmp_path / "bad.tflite"
    path.write_bytes(blob)
    code, _, err = _run(capsys, ["import", str(path), "--out", str(tmp_path / "m.safetensors")])
    assert code == 2 and err.count("\n") == 1 and err.startswith("mcutrain import: error: ")
    assert re.search(message, err, re.IGNORECASE), err


def test_a_new_head_on_a_model_without_a_classifier_is_refused(tmp_path, capsys):
    path = tmp_path / "conv.tflite"
    write_tflite(conv_only(), path)
    code, _, err = _run(capsys, ["import", str(path), "--num-classes", "3", "--out", str(tmp_path / "m.safetensors")])
    assert code == 2 and "ends in mean 'mean_2', not in a fully connected classifier" in err
    code, _, err = _run(capsys, ["import", str(path), "--num-classes", "1", "--out", str(tmp_path / "m.safetensors")])
    assert code == 2 and "a classifier needs 2 to 10000" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_resnet_with_a_per_tensor_head_imports(tmp_path, capsys):
    path = tmp_path / "resnet.tflite"
    write_tflite(resnet(), path)
    code, text, _ = _run(capsys, ["import", str(path), "--out", str(tmp_path / "m.safetensors")])
    assert code == 0 and "ops: conv2d 4, add 2, avgpool 1, reshape 1, fully_connected 1" in text
    assert load_graph_model(tmp_path / "m.safetensors").graph == resnet()


@pytest.mark.parametrize("name,classes,frozen", [("vww_96_int8", 2, 793), ("pretrainedResnet_quant", 10, 0)])
def test_shared_models_import(tmp_path, capsys, name, classes, frozen):
    path = shared_model(name)
    out = tmp_path / "m.safetensors"
    code, text, _ = _run(capsys, ["import", str(path), "--out", str(out)])
    model = load_graph_model(out)
    assert code == 0 and model.graph == freeze_degenerate_graph(load_tflite_graph(path))
    assert len(model.classes) == classes and f"head kept: the model's {classes}-class classifier" in text
    counted = sum(len(n.params.frozen_channels) for n in model.graph.nodes if n.kind == "conv2d")
    assert counted == frozen and (f"{frozen} degenerate channels (w_scale < 1e-8) frozen: %" in text
                                  if frozen else "no degenerate channels" in text)
    code, text, _ = _run(capsys, ["import", str(path), "--classes", "a,b,c", "--out", str(out)])
    assert code == 0 and load_graph_model(out).classes == ("a", "b", "c") and "head replaced" in text



def freeze_degenerate_graph(graph: QGraph) -> QGraph:
    return QGraph(graph.tensors, freeze_degenerate(graph.nodes), graph.input, graph.output)


def test_degenerate_channels_are_frozen_and_nothing_else_changes(tmp_path, capsys):
    from dataclasses import replace

    graph = plain_cnn()
    conv = graph.nodes[2]  # the depthwise conv: channels 1 and 4 pruned to a scale of 1e-11
    w_scale = conv.params.w_scale.copy()
    w_scale[[1, 4]] = 1e-11
    nodes = list(graph.nodes)
    nodes[2] = replace(conv, params=replace(conv.params, w_scale=w_scale))
    path = tmp_path / "pruned.tflite"
    write_tflite(QGraph(graph.tensors, tuple(nodes), graph.input, graph.output), path)
    out = tmp_path / "m.safetensors"
    code, text, _ = _run(capsys, ["import", str(path), "--out", str(out)])
    model = load_graph_model(out)
    assert code == 0 and "2 degenerate channels (w_scale < 1e-8) frozen: %2 2" in text
    assert [n.params.frozen_channels for n in model.graph.nodes if n.kind == "conv2d"] == [(), (1, 4)]
    unfrozen = tuple(replace(n, params=replace(n.params, frozen_channels=())) if n.kind == "conv2d" else n
                     for n in model.graph.nodes)
    assert QGraph(model.graph.tensors, unfrozen, model.graph.input, model.graph.output) == load_tflite_graph(path)
