"""`mcutrain compile` / `mcutrain run` on an imported int8 graph file (issue 13 items 1 and 5).

A small VWW-like graph (grey non-square input, depthwise-separable blocks, avgpool, flatten) made the
way a user makes it, with a fresh zero head for digits: compiled for the host it trains (held-out
accuracy up) and its losses equal the NumPy reference executor's bit for bit (``--accumulate float64``);
the Cortex-M7 firmware under QEMU gives the host's losses bit for bit. (The samples `run` feeds:
tests/codegen/test_codegen_samples_graph.py.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcutrain.cli import cmd_compile, cmd_run
from mcutrain.codegen.firmware import tools_available
from mcutrain.codegen.samples import int8_samples
from mcutrain.codegen.targets import read_target
from mcutrain.data import load_dataset
from mcutrain.errors import McutrainError
from mcutrain.quant.graph_file import GraphModel, save_graph_model
from mcutrain.quant.graph_head import new_graph_head
from tests.helpers.cli import run_command
from tests.helpers.trainable_graphs import VwwLike, trainable_graph

M7_TOOLS = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
LR = 0.003


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def graph_file(digits, tmp_path_factory):
    """The pretrained VWW-like graph with a new zero head for digits, as a graph model file."""
    graph = trainable_graph(VwwLike, digits, pretrain_epochs=3)
    path = tmp_path_factory.mktemp("graph") / "vww_like.mct"
    save_graph_model(path, GraphModel(new_graph_head(graph, digits.classes), tuple(digits.classes)))
    return str(path)


def _compile(model: str, target: str, out, scheme: str = "last-k:2", *extra: str) -> dict:
    code, text = run_command(cmd_compile, ["compile", model, "--scheme", scheme, "--lr", str(LR),
                                           "--target", target, "--out", str(out), "--json", *extra])
    assert code == 0
    return json.loads(text)


def _run(folder, steps: int, evaluate: int) -> dict:
    code, text = run_command(cmd_run, ["run", str(folder), "--data", "digits", "--steps", str(steps),
                                       "--eval", str(evaluate), "--json"])
    assert code == 0
    return json.loads(text)


def test_host_build_trains_and_equals_the_numpy_executor(tmp_path, graph_file, digits):
    # float64 (audit) accumulators: the losses are compared with the NumPy executor's bit for bit below
    # (the default float32 mode is held to a tolerance: tests/codegen/test_codegen_accumulate*.py).
    compiled = _compile(graph_file, "host", tmp_path / "host", "last-k:2", "--accumulate", "float64")
    assert compiled["model"] == "vww_like.mct" and compiled["resolution"] == [13, 9]
    assert compiled["peak_sram_bytes"] > 0 and compiled["flash_bytes"] > 0
    r = _run(tmp_path / "host", 600, 200)
    assert r["accuracy"]["after"] >= r["accuracy"]["before"] + 0.2, r["accuracy"]
    # The same samples through the NumPy executor of the program compile built: the same losses.
    from mcutrain.codegen import compile_for_codegen
    from mcutrain.engine.executor import Executor
    from mcutrain.quant.graph_file import load_graph_model
    from mcutrain.sparse.builtin import graph_plan

    target = read_target(tmp_path / "host")
    images, labels = int8_samples(digits.train, 20, seed=0, resolution=target["resolution"],
                                  preprocessing=target["preprocessing"], input_scale=target["input"]["scale"],
                                  input_zero=target["input"]["zero"])
    graph = load_graph_model(graph_file).graph
    executor = Executor(compile_for_codegen(graph, graph_plan(graph, "last-k:2"), lr=LR, seed=0))
    losses = np.array([executor.train_step(x, int(y)) for x, y in zip(images, labels)], np.float32)
    assert losses.tobytes() == np.array(r["losses"][:20], np.float32).tobytes()


def test_a_graph_takes_its_own_resolution(graph_file):
    with pytest.raises(McutrainError, match="takes its own input size, 13x9"):
        run_command(cmd_compile, ["compile", graph_file, "--scheme", "bias-only", "--resolution", "32"])
    with pytest.raises(McutrainError, match="imported graph"):
        run_command(cmd_compile, ["compile", graph_file, "--scheme", "paper-99kb"])


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"Cortex-M7 runs need the cross tools: {M7_TOOLS}")
def test_cortex_m7_firmware_equals_the_host_bit_for_bit(tmp_path, graph_file):
    compiled = _compile(graph_file, "cortex-m7", tmp_path / "m7")
    assert compiled["target"]["strict"]["fits"]
    _compile(graph_file, "host", tmp_path / "host")
    m7, host = _run(tmp_path / "m7", 4, 3), _run(tmp_path / "host", 4, 3)
    print(f"vww_like graph on the Cortex-M7: {m7['instructions_per_step']:,} instructions per step, "
          f"SRAM {m7['sram_bytes']:,} B, Flash {m7['flash_bytes']:,} B")
    assert np.array(m7["losses"], np.float32).tobytes() == np.array(host["losses"], np.float32).tobytes()
    assert m7["accuracy"] == host["accuracy"] and m7["instructions_per_step"] > 0
