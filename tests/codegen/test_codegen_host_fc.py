"""The generated C of imported graphs with hidden fully connected layers (``quant.graph.FcConv``: a 1x1
conv with LiteRT's double rescale, ``mct_fc_forward``): the host build trains like the NumPy executor
(logits bit for bit before and after, every op output equal op by op), its forward equals the reference
``graph_forward`` (LiteRT's arithmetic), and the Cortex-M7 firmware under QEMU equals the host build bit
for bit (test_codegen_cortex_m7's rule)."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
import graph_models as gm  # noqa: E402

from mcutrain.codegen import HostEngine, build_host, generate  # noqa: E402
from mcutrain.codegen.check import op_by_op, side_by_side  # noqa: E402
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available  # noqa: E402
from mcutrain.codegen.host import build  # noqa: E402
from mcutrain.engine.compile import compile_training  # noqa: E402
from mcutrain.engine.frontend import engine_names  # noqa: E402
from mcutrain.quant.graph import hidden_fully_connected  # noqa: E402
from mcutrain.quant.graph_forward import graph_forward  # noqa: E402
from mcutrain.quant.graph_head import classifier_node  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402

STEPS = 4
MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")


@lru_cache(maxsize=None)
def _graph(name: str):
    return gm.CLASSIFIERS[name]()


@lru_cache(maxsize=None)
def _program(name: str, scheme: str = "full"):
    g = _graph(name)
    return compile_training(g, graph_plan(g, scheme), lr=0.1, seed=3)


def _data(name: str, n: int, seed: int = 0):
    g = _graph(name)
    classes = g.tensor[g.nodes[classifier_node(g)[0]].output].shape[1]
    images = np.concatenate([gm.random_input(g, seed + i) for i in range(n)])
    return images, np.arange(n) % classes


@pytest.mark.parametrize("scheme", ["full", "last-k:1"])  # last-k:1: the first hidden layer frozen
def test_training_steps_match_the_numpy_executor(tmp_path, scheme):
    name = "fc_stack"
    program = _program(name, scheme)
    # float64 (audit) accumulators: this test holds the C to the NumPy executor bit for bit (max_lsb 0,
    # bias_error 0); the default float32 mode is held to a tolerance (test_codegen_accumulate*.py).
    generate(program, tmp_path, accumulate="float64")
    assert "mct_fc_forward(" in (tmp_path / "model.c").read_text()
    images, labels = _data(name, STEPS)
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] == 0 and d["bias_error"] == 0 and d["loss_rel_error"] <= 1e-6
    assert d["moved"] >= 10


def test_every_op_output_matches_the_executor_and_hidden_layers_the_litert_reference(tmp_path):
    g, program = _graph("fc_stack"), _program("fc_stack")
    generate(program, tmp_path)
    library = build(tmp_path, trace=True)
    assert op_by_op(program, library, _data("fc_stack", 1, seed=9)[0][0], 2) == {}
    engine, stage = HostEngine(library), program.inference
    names = engine_names(g)
    hidden = [n for n in g.nodes[:classifier_node(g)[0]] if n.kind == "fully_connected"]
    seen: dict[str, np.ndarray] = {}

    def hook(which: int, index: int) -> None:
        for name in stage.graph.ops[index].outputs if which == 1 else ():
            at, size = stage.offset(name), stage.graph.tensor(name).nbytes
            seen[name] = engine.arena()[at:at + size].copy()

    engine.set_trace(hook)
    values = []
    for image in _data("fc_stack", 3, seed=20)[0]:
        engine.predict(image)
        ref = graph_forward(g, image[None])
        for node in hidden:
            got = seen[names[node.output]].view(np.int8).reshape(ref[node.output].shape)
            assert np.array_equal(got, ref[node.output]), node.name
            values.append(got.ravel())
    assert len(hidden) == 2 and len(np.unique(np.concatenate(values))) > 5


@pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")
def test_cortex_m7_firmware_equals_the_host_build_bit_for_bit(tmp_path):
    program = _program("fc_stack")
    generate(program, tmp_path)
    report = build_firmware(tmp_path)
    images, labels = _data("fc_stack", 4)
    classes = int(labels.max()) + 1
    run = run_qemu(tmp_path / report["elf"], images[:3], labels[:3], images[3:], labels[3:],
                   classes=_graph("fc_stack").tensor[_graph("fc_stack").output].shape[1])
    engine = HostEngine(build_host(tmp_path))
    before = np.concatenate([engine.predict(x) for x in images[3:]])
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images[:3], labels[:3])], np.float32)
    after = np.concatenate([engine.predict(x) for x in images[3:]])
    print(f"hidden FC graph: {run.train_instructions.mean():.0f} instructions per step, {classes} labels used")
    assert run.losses.tobytes() == losses.tobytes()
    assert run.logits["before"].tobytes() == before.tobytes()
    assert run.logits["after"].tobytes() == after.tobytes()


def test_a_device_snapshot_exports_the_hidden_layers_as_fully_connected(tmp_path):
    from mcutrain.codegen.snapshot import device_trained_graph, graph_parameters

    g, program = _graph("fc_stack"), _program("fc_stack")
    generate(program, tmp_path / "host")
    engine = HostEngine(build_host(tmp_path / "host"))
    images, labels = _data("fc_stack", STEPS)
    for x, y in zip(images, labels):
        engine.train_step(x, int(y))
    (tmp_path / "saved.bin").write_bytes(engine.save())
    trained, applied = device_trained_graph(g, (tmp_path / "saved.bin").read_bytes(), tmp_path / "host", "m")
    names, device = engine_names(g), engine.parameters()
    assert applied["step"] == STEPS
    for i in sorted(hidden_fully_connected(g)):
        node, before = trained.nodes[i], g.nodes[i]
        assert node.kind == "fully_connected" and node.params.weight.shape == before.params.weight.shape
        weight = device[f"{names[node.output]}.weight"]
        assert np.array_equal(node.params.weight, weight[:, :, 0, 0])
        assert not np.array_equal(node.params.weight, before.params.weight)  # it trained
        assert node.params.bias is not None or not device[f"{names[node.output]}.bias"].any()
    again = {n: v for n, (_, _, v) in graph_parameters(trained).items()}
    assert all(np.array_equal(again[n], device[n]) for n in again)

