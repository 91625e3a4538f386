"""`mcutrain export --params saved.bin --program DIR`: a device's mct_save snapshot -> .tflite.

A small VWW-like graph is compiled for the host, trained a few steps on the C engine and saved with
``mct_save``; the export carries exactly the library's parameters (read back from the library) and
LiteRT's reference kernels run it with ``graph_forward``'s outputs of the updated graph bit for bit. A
snapshot ``mct_restore`` would refuse (one byte flipped, truncated, another program's) is refused with
the check that failed, in one line, exit 2, nothing written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcutrain.cli.main import main
from mcutrain.codegen.host import HostEngine, build, damaged_snapshots, read_manifest
from mcutrain.codegen.samples import int8_samples
from mcutrain.codegen.snapshot import SnapshotError, graph_parameters, layout_of, read_snapshot
from mcutrain.codegen.targets import read_target
from mcutrain.data import load_dataset
from mcutrain.models.tflite.reader import read_tflite
from mcutrain.quant.from_tflite import graph_from_tflite
from mcutrain.quant.graph_file import GraphModel, load_graph_model, save_graph_model
from mcutrain.quant.graph_forward import graph_forward
from mcutrain.quant.graph_head import new_graph_head
from tests.helpers.trainable_graphs import VwwLike, trainable_graph

STEPS = 12


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """A graph file, the host program compiled from it, and the snapshot of a few training steps."""
    digits = load_dataset("digits")
    root = tmp_path_factory.mktemp("device")
    model = root / "vww_like.mct"
    save_graph_model(model, GraphModel(new_graph_head(trainable_graph(VwwLike, digits), digits.classes),
                                       tuple(digits.classes)))
    program = root / "host"
    assert main(["compile", str(model), "--scheme", "last-k:2", "--lr", "0.05", "--target", "host",
                 "--out", str(program)]) == 0
    target = read_target(program)
    images, labels = int8_samples(digits.train, STEPS, seed=0, resolution=target["resolution"],
                                  preprocessing=target["preprocessing"], input_scale=target["input"]["scale"],
                                  input_zero=target["input"]["zero"])
    engine = HostEngine(build(program))
    for x, y in zip(images, labels):
        engine.train_step(x, int(y))
    saved = root / "saved.bin"
    saved.write_bytes(engine.save())
    return {"model": model, "program": program, "saved": saved, "parameters": engine.parameters(), "root": root}


def _export(capsys, device, out, params=None, extra=()):
    argv = ["export", str(device["model"]), "--params", str(params or device["saved"]),
            "--program", str(device["program"]), "--out", str(out), *extra]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _litert_output(path, x_nchw: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def test_export_carries_the_device_parameters_and_runs_in_litert(tmp_path, capsys, device):
    out = tmp_path / "trained.tflite"
    code, text, err = _export(capsys, device, out, extra=("--json",))
    assert code == 0 and err == ""
    report = json.loads(text)
    assert report["step"] == STEPS and report["params"] == str(device["saved"])
    assert report["trained"] == ["conv2d_3.weight", "conv2d_3.bias", "conv2d_4.weight", "conv2d_4.bias",
                                 "classifier.weight", "classifier.bias"]
    exported = graph_from_tflite(read_tflite(out))
    ours = {name: value for name, (_, _, value) in graph_parameters(exported).items()}
    library = device["parameters"]
    assert sorted(ours) == sorted(library)
    for name, value in library.items():
        assert ours[name].dtype == value.dtype and np.array_equal(ours[name], value), name
    original = graph_parameters(load_graph_model(device["model"]).graph)
    changed = [n for n in report["trained"] if not np.array_equal(original[n][2], library[n])]
    assert "classifier.weight" in changed and "conv2d_4.bias" in changed  # training moved them
    pytest.importorskip("ai_edge_litert")
    shape = exported.tensor[exported.input].shape
    for seed in range(3):
        x = np.random.default_rng(seed).integers(-128, 128, (1,) + tuple(shape[1:])).astype(np.int8)
        assert np.array_equal(_litert_output(out, x), graph_forward(exported, x)[exported.output])


def _flipped(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize("damage, message", [
    (lambda d: _flipped(d, 0), "not a snapshot of this format (magic or version)"),
    (lambda d: _flipped(d, 4), "not a snapshot of this format (magic or version)"),
    (lambda d: _flipped(d, 40), "checksum mismatch"),
    (lambda d: _flipped(d, len(d) - 1), "checksum mismatch"),
    (lambda d: d[:-7], "wrong length"),
    (lambda d: d[:20], "wrong length"),
    (lambda d: d + b"\xff", "wrong length"),
])
def test_a_damaged_snapshot_is_refused_and_nothing_written(tmp_path, capsys, device, damage, message):
    bad, out = tmp_path / "bad.bin", tmp_path / "t.tflite"
    bad.write_bytes(damage(device["saved"].read_bytes()))
    code, text, err = _export(capsys, device, out, params=bad)
    assert code == 2 and text == "" and err.count("\n") == 1
    assert f"snapshot refused: {message}" in err and "nothing was written" in err
    assert not out.exists()


def test_another_programs_snapshot_is_refused(tmp_path, capsys, device):
    other = tmp_path / "other"
    assert main(["compile", str(device["model"]), "--scheme", "bias-only", "--lr", "0.01", "--target",
                 "host", "--out", str(other)]) == 0
    capsys.readouterr()
    theirs = tmp_path / "theirs.bin"
    theirs.write_bytes(HostEngine(build(other)).save())
    out = tmp_path / "t.tflite"
    code, _, err = _export(capsys, device, out, params=theirs)
    assert code == 2 and err.count("\n") == 1 and "snapshot refused: a snapshot of another model" in err
    assert not out.exists()


def test_a_program_of_another_model_and_missing_flags_are_refused(tmp_path, capsys, device):
    graph = load_graph_model(device["model"]).graph
    moved = graph_parameters(graph)
    index, _, bias = moved["conv2d_0.bias"]
    from dataclasses import replace

    nodes = list(graph.nodes)
    nodes[index] = replace(nodes[index], params=replace(nodes[index].params, bias=bias + 1))
    edited = tmp_path / "edited.mct"
    save_graph_model(edited, GraphModel(replace(graph, nodes=tuple(nodes)), load_graph_model(device["model"]).classes))
    out = tmp_path / "t.tflite"
    code = main(["export", str(edited), "--params", str(device["saved"]), "--program", str(device["program"]),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "was not compiled from" in err and not out.exists()
    code = main(["export", str(device["model"]), "--params", str(device["saved"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--params and --program go together" in err and not out.exists()


def test_a_zoo_model_with_params_gets_the_zoo_refusal(tmp_path, capsys, device):
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.random_model import random_qmodel

    zoo, out = tmp_path / "zoo.safetensors", tmp_path / "t.tflite"
    save_qmodel(zoo, random_qmodel("tiny", 16, 3, seed=0)[0])
    code = main(["export", str(zoo), "--params", str(device["saved"]), "--program", str(device["program"]),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "export of mcutrain zoo models is not supported yet" in err and not out.exists()


def _code_of(data: bytes, program) -> int:
    manifest = read_manifest(program)
    try:
        read_snapshot(data, layout_of(manifest, str(program)), manifest["model_id"])
    except SnapshotError as err:
        return err.code
    return 0


def test_the_checks_give_mct_restores_codes(device):
    """The host's checks and the C library's mct_restore agree on every damage host.py plants."""
    saved = device["saved"].read_bytes()
    engine = HostEngine(build(device["program"]))
    cases = [saved] + damaged_snapshots(saved)
    codes = [_code_of(bad, device["program"]) for bad in cases]
    assert codes == [engine.restore_code(bad) for bad in cases]
    assert codes[0] == 0 and set(codes[1:]) == {-1, -2, -4}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, 10**6), mask=st.integers(1, 255))
def test_any_flipped_byte_is_refused(device, at, mask):
    damaged = bytearray(device["saved"].read_bytes())
    damaged[at % len(damaged)] ^= mask
    assert _code_of(bytes(damaged), device["program"]) in (-1, -2, -3, -4)
