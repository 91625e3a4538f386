"""`mcutrain export`: a graph file -> .tflite that LiteRT runs with mcutrain's outputs, bit for bit.

Also: import -> export -> import is the identity on weights and quantization; files of other kinds
are refused with one line saying what works, by export and by every command that trains.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mcutrain.io.container import KIND_HINTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))

from graph_models import CLASSIFIERS, SHARED_MODELS, random_input, shared_model  # noqa: E402

from mcutrain.cli.main import main  # noqa: E402
from mcutrain.models.tflite.reader import read_tflite  # noqa: E402
from mcutrain.models.tflite.writer import write_tflite  # noqa: E402
from mcutrain.quant.from_tflite import graph_from_tflite, load_tflite_graph  # noqa: E402
from mcutrain.quant.graph_file import GraphModel, load_graph_model, save_graph_model  # noqa: E402
from mcutrain.quant.graph_forward import graph_forward  # noqa: E402

SEEDS = (0, 1, 2)


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _litert_output(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """The model output of LiteRT's reference kernels (no delegate) on one NCHW int8 input."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def _graph_file(tmp_path: Path, name: str, new_head: tuple[str, ...] | None = None) -> Path:
    """A graph file of a synthetic classifier, imported through the CLI from its .tflite."""
    tfl = tmp_path / f"{name}.tflite"
    write_tflite(CLASSIFIERS[name](), tfl)
    out = tmp_path / f"{name}.safetensors"
    argv = ["import", str(tfl), "--out", str(out)] + (["--classes", ",".join(new_head)] if new_head else [])
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("new_head", [None, ("a", "b")])  # every synthetic classifier has 3+ classes
def test_exported_file_runs_in_litert_with_our_outputs(tmp_path, capsys, name, new_head):
    pytest.importorskip("ai_edge_litert")
    model_file = _graph_file(tmp_path, name, new_head)
    capsys.readouterr()
    out = tmp_path / "trained.tflite"
    code, text, err = _run(capsys, ["export", str(model_file), "--format", "tflite", "--out", str(out)])
    assert code == 0 and err == "" and f"wrote {out} (tflite, sha256 " in text
    graph = load_graph_model(model_file).graph
    if new_head:  # a zero head would compare zeros: give it weights, as training will
        assert load_graph_model(model_file).provenance["head"] == "replaced"
        graph = _with_random_head(graph, seed=4)
        save_graph_model(model_file, GraphModel(graph, new_head))
        assert main(["export", str(model_file), "--out", str(out)]) == 0
    for seed in SEEDS:
        x = random_input(graph, seed)
        ours = graph_forward(graph, x)[graph.output]
        assert np.array_equal(_litert_output(out, x), ours)


def _with_random_head(graph, seed: int):
    from dataclasses import replace

    from mcutrain.quant.graph import QGraph
    from mcutrain.quant.graph_head import classifier_node

    index, node, _ = classifier_node(graph)
    rng = np.random.default_rng(seed)
    p = node.params
    weight = rng.integers(-127, 128, p.weight.shape).astype(np.int8)
    bias = rng.integers(-5000, 5000, p.bias.shape).astype(np.int32)
    nodes = list(graph.nodes)
    nodes[index] = replace(node, params=replace(p, weight=weight, bias=bias))
    return QGraph(graph.tensors, tuple(nodes), graph.input, graph.output, graph.provenance).validate()


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_import_export_import_is_the_identity(tmp_path, capsys, name):
    first = load_graph_model(_graph_file(tmp_path, name))
    out = tmp_path / "again.tflite"
    assert main(["export", str(tmp_path / f"{name}.safetensors"), "--out", str(out)]) == 0
    assert main(["import", str(out), "--out", str(tmp_path / "again.safetensors")]) == 0
    again = load_graph_model(tmp_path / "again.safetensors")
    assert again.graph == first.graph == CLASSIFIERS[name]()  # every weight, bias, scale and zero point


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_models_export_to_identical_integers_and_litert_outputs(tmp_path, capsys, name):
    pytest.importorskip("ai_edge_litert")
    path = shared_model(name)
    model_file, out = tmp_path / "m.safetensors", tmp_path / "exported.tflite"
    assert main(["import", str(path), "--out", str(model_file)]) == 0
    assert main(["export", str(model_file), "--out", str(out)]) == 0
    original, exported = load_tflite_graph(path), graph_from_tflite(read_tflite(out))
    assert exported == original  # frozen channels are mcutrain's: not in either .tflite
    assert main(["import", str(out), "--out", str(tmp_path / "again.safetensors")]) == 0
    assert load_graph_model(tmp_path / "again.safetensors").graph == load_graph_model(model_file).graph
    for seed in SEEDS:
        x = random_input(original, seed)
        assert np.array_equal(_litert_output(out, x), _litert_output(path, x))
        assert np.array_equal(_litert_output(out, x), graph_forward(exported, x)[exported.output])


def test_json_report_and_deterministic_bytes(tmp_path, capsys):
    model_file = _graph_file(tmp_path, "resnet", ("x", "y"))
    capsys.readouterr()
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    code, text, _ = _run(capsys, ["export", str(model_file), "--out", str(a), "--json"])
    r = json.loads(text)
    assert code == 0 and r["out"] == str(a) and r["format"] == "tflite" and r["source"] == "resnet.tflite"
    assert r["head"] == "replaced" and r["classes"] == ["x", "y"] and r["operators"] == 9 and r["softmax"] is False
    assert main(["export", str(model_file), "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    import hashlib

    assert r["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()


def test_export_overwrites_atomically_and_leaves_no_temporary_files(tmp_path, capsys):
    model_file = _graph_file(tmp_path, "mlp_head")
    out = tmp_path / "sub" / "m.tflite"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert main(["export", str(model_file), "--out", str(out)]) == 0
    assert out.read_bytes()[4:8] == b"TFL3" and [p.name for p in out.parent.iterdir()] == ["m.tflite"]


def _zoo_model(tmp_path: Path) -> Path:
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.random_model import random_qmodel

    path = tmp_path / "zoo.safetensors"
    save_qmodel(path, random_qmodel("tiny", 16, 3, seed=0)[0])
    return path


def test_other_model_files_are_refused_with_what_works(tmp_path, capsys):
    out = tmp_path / "x.tflite"
    code, _, err = _run(capsys, ["export", str(_zoo_model(tmp_path)), "--out", str(out)])
    assert code == 2 and err.count("\n") == 1
    assert "export of mcutrain zoo models is not supported yet; imported TFLite graphs" in err
    cnn = tmp_path / "cnn.tflite"
    write_tflite(CLASSIFIERS["plain_cnn"](), cnn)
    code, _, err = _run(capsys, ["export", str(cnn), "--out", str(out)])
    assert code == 2 and "a TFLite model, not an mcutrain file; import it first" in err
    assert not out.exists()


def test_help_says_params_needs_the_program(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "With --params saved.bin --program DIR" in text and "--program is required with --params" in text


@pytest.mark.parametrize("argv", [  # finetune, eval (tests/train/test_finetune_graph.py), compile and run
    # (tests/cli/test_cli_graph_compile.py), analyze and search (tests/search/test_search_graph.py) take graph files
    ["quantize", "{m}", "--data", "npz:{d}", "--out", "{o}"],
    ["demo", "--checkpoint", "{m}"],
    ["zoo", "--model", "{m}"],
])
def test_training_commands_refuse_a_graph_file_saying_what_works(tmp_path, capsys, argv):
    model_file = _graph_file(tmp_path, "plain_cnn")
    capsys.readouterr()
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 12, 10, 1), np.uint8), y=np.arange(8) % 4)
    out = tmp_path / "out.safetensors"
    argv = [a.format(m=model_file, d=data, o=out) for a in argv]
    code, _, err = _run(capsys, argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.rstrip().endswith(KIND_HINTS["int8-graph"])
    assert not out.exists()



def test_an_output_that_is_a_folder_or_unwritable_is_one_line(tmp_path, capsys):
    model_file = _graph_file(tmp_path, "mlp_head")
    capsys.readouterr()
    folder = tmp_path / "folder"
    folder.mkdir()
    for argv in (["export", str(model_file), "--out", str(folder)],
                 ["import", str(tmp_path / "mlp_head.tflite"), "--out", str(folder)]):
        code, _, err = _run(capsys, argv)
        assert code == 2 and err.count("\n") == 1 and f"--out {folder}: is a folder" in err
    assert list(folder.iterdir()) == []
    code, _, err = _run(capsys, ["export", str(model_file), "--out", "/proc/no/such/m.tflite"])
    assert code == 2 and err.count("\n") == 1 and "cannot write /proc/no/such/m.tflite" in err
