"""The public surface of ``mcutrain``: every name resolves and is documented, importing stays cheap,
results serialise to the CLI's JSON and print its text, models and programs print what they hold."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mcutrain
from mcutrain.cli import cmd_compile, cmd_scheme, cmd_zoo
from helpers.cli import run_command

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_resolves_and_is_documented():
    for name in mcutrain.__all__:
        value = getattr(mcutrain, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(value), f"mcutrain.{name} has no docstring"
    assert set(mcutrain.__all__) >= {"load_model", "pretrain", "quantize", "finetune", "analyze", "search_scheme",
                                     "compile", "generate_c", "run", "export", "import_model"}
    with pytest.raises(AttributeError):
        mcutrain.no_such_name  # noqa: B018


def test_the_two_lists_of_public_names_agree():
    """``mcutrain.__all__`` is written out (so ``import mcutrain`` need not load the API to know its
    names, and mypy and pdoc read it statically); it must be the API's list plus the version and errors."""
    from mcutrain import api

    assert set(mcutrain.__all__) == set(api.__all__) | {"__version__", "McutrainError", "TrainingFailed"}
    assert len(mcutrain.__all__) == len(set(mcutrain.__all__))


def test_import_mcutrain_loads_no_heavy_module():
    code = ("import sys, mcutrain; heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'mcutrain.api', "
            "'dataclasses') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_results_are_the_cli_json_and_text():
    code, text = run_command(cmd_zoo, ["zoo", "--model", "tiny", "--resolution", "32"])
    zoo = mcutrain.zoo(model=["tiny"], resolution=32)
    assert code == 0 and str(zoo) == text.rstrip("\n")
    _, as_json = run_command(cmd_zoo, ["zoo", "--model", "tiny", "--resolution", "32", "--json"])
    assert json.loads(as_json) == zoo.to_list() and zoo.to_json() == as_json.rstrip("\n")
    shown = mcutrain.scheme("last-k:2", "tiny")
    _, as_json = run_command(cmd_scheme, ["scheme", "show", "last-k:2", "--model", "tiny", "--json"])
    assert shown.to_json() == as_json.rstrip("\n") and shown["scheme"] == shown.name == "last-k:2"
    assert "kept channels" in str(shown) and shown.analytic_bytes > 0


def test_results_are_frozen_and_copies_are_independent():
    shown = mcutrain.scheme("bias-only", "tiny")
    with pytest.raises(AttributeError):
        shown.payload = {}  # type: ignore[misc]
    copy = shown.to_dict()
    copy["convs"].clear()
    assert shown["convs"]


def test_compiled_program_prints_memory_and_plots_its_timeline(tmp_path):
    program = mcutrain.compile("tiny", "bias-only", lr=0.01)
    _, text = run_command(cmd_compile, ["compile", "tiny", "--scheme", "bias-only", "--lr", "0.01"])
    assert str(program) == text.rstrip("\n") and "total SRAM" in str(program)
    assert program.peak_sram_bytes >= program.arena_bytes > 0 and program.folder is None
    png = program.plot_timeline(tmp_path / "memory.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "arena" in program.timeline()


def test_model_prints_like_the_zoo(tmp_path):
    arch = mcutrain.load_model("tiny", resolution=32)
    row = mcutrain.zoo(model=["tiny"], resolution=32)[0]
    summary = arch.summary()
    assert (summary["layers"], summary["weights"], summary["macs"]) == (row["convs"], row["backbone_weights"],
                                                                        row["macs"])
    text = str(arch)
    assert f"{row['backbone_weights']:,} weights" in text and f"{row['macs']:,} MACs" in text
    assert len(text.splitlines()) == 3 + row["convs"]


def test_load_model_from_a_checkpoint_a_module_and_a_saved_graph(tmp_path):
    torch = pytest.importorskip("torch")
    from mcutrain.assets import DEFAULT_BACKBONE

    backbone = mcutrain.load_model(DEFAULT_BACKBONE)
    assert (backbone.kind, backbone.name, backbone.resolution) == ("float-checkpoint", "mbv2-w0.35", 64)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    graph = mcutrain.load_model(net, example_input=torch.zeros(1, 1, 8, 8))
    assert graph.kind == "float-graph" and graph.path is None
    assert [r["weights"] for r in graph.layers()] == [36, 0, 0, 0, 12]
    with pytest.raises(mcutrain.McutrainError, match="save it first"):
        mcutrain.quantize(graph, "digits", tmp_path / "q.safetensors")
    saved = graph.save(tmp_path / "graph.safetensors")
    again = mcutrain.load_model(saved.path)
    assert again.kind == "float-graph" and again.layers() == graph.layers()


def test_user_errors_are_mcutrain_errors(tmp_path):
    with pytest.raises(mcutrain.McutrainError, match="go together"):
        mcutrain.compile("tiny", "bias-only", target="host")
    with pytest.raises(mcutrain.McutrainError):
        mcutrain.load_model(42)
    with pytest.raises(mcutrain.McutrainError, match="neither a .tflite"):
        mcutrain.import_model(tmp_path / "missing.bin", tmp_path / "out.safetensors")


def test_an_analysis_prints_the_contribution_of_every_candidate():
    from mcutrain.assets import DEFAULT_CONTRIB

    analysis = mcutrain.load_analysis(DEFAULT_CONTRIB)
    document = json.loads(Path(DEFAULT_CONTRIB).read_text())
    assert analysis.baseline == document["baseline"] and analysis["runs"] == document["runs"]
    assert analysis.bias_gains() == {int(k): v for k, v in document["bias"].items()}
    text = str(analysis).splitlines()
    names = document["model"]["conv_names"]
    for layer in document["weight"]:  # one row per candidate conv, with its name
        assert any(line.split()[:2] == [layer, names[int(layer)]] for line in text)
    assert len(analysis.weight_gains()) == sum(len(row) for row in document["weight"].values())
