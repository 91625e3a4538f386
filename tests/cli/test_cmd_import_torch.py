"""`mcutrain import FILE.py:build` (PyTorch in), called directly: run_torch_import and its arguments."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from mcutrain.cli.cmd_import_torch import add_torch_import_arguments, import_torch, run_torch_import
from mcutrain.data import sources
from mcutrain.errors import McutrainError
from mcutrain.models.float_graph import load_float_graph, run_float
from tests.models.torch_models import plain_cnn


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mcutrain import")
    add_torch_import_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def user_model(tmp_path) -> tuple[str, Path]:
    """A user's file (the plain CNN's source) and a state dict saved from a model built by it."""
    shutil.copy(Path(plain_cnn.__file__), tmp_path / "my_model.py")
    torch.manual_seed(4)
    torch.save(plain_cnn.build(10).state_dict(), tmp_path / "state.pt")
    return f"{tmp_path / 'my_model.py'}:build", tmp_path / "state.pt"


def test_import_writes_the_float_graph(tmp_path, user_model):
    spec, weights = user_model
    args = parse([spec, "--weights", str(weights), "--input-shape", "3,32,32", "--mean", "0.485,0.456,0.406",
                  "--std", "0.229,0.224,0.225", "--out", str(tmp_path / "m.mcf"), "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_torch_import(args) == 0
    payload = json.loads(out.getvalue())
    assert payload["head"] == "kept" and payload["num_classes"] == 10 and "int8_accuracy" not in payload
    graph = load_float_graph(tmp_path / "m.mcf")
    assert graph.preprocessing.mean == (0.485, 0.456, 0.406) and graph.input_shape == (3, 32, 32)
    model = plain_cnn.build(10)
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(run_float(graph, x), model.eval()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not sources.NAMED["digits"].available(), reason="digits (scikit-learn) not installed")
def test_import_with_data_quantizes_and_replaces_the_head(tmp_path, user_model):
    spec, weights = user_model
    args = parse([spec, "--weights", str(weights), "--input-shape", "3,32,32", "--data", "digits",
                  "--num-classes", "10", "--calibration-batches", "2", "--out", str(tmp_path / "m.mcf")])
    result = import_torch(args)
    assert result.qgraph is not None and result.qgraph.nodes[-1].kind == "fully_connected"
    assert result.payload["n"] == 269 and 0.0 <= result.payload["agreement"] <= 1.0
    assert load_float_graph(tmp_path / "m.mcf").classes == tuple(str(i) for i in range(10))
    five = import_torch(parse([spec, "--input-shape", "3,32,32", "--num-classes", "5", "--out",
                               str(tmp_path / "five.mcf")]))
    assert five.payload["head"] == "replaced" and load_float_graph(tmp_path / "five.mcf").num_outputs == 5
    with pytest.raises(McutrainError, match="--num-classes 5, but the data has 10 classes"):
        import_torch(parse([spec, "--input-shape", "3,32,32", "--num-classes", "5", "--data", "digits",
                            "--out", str(tmp_path / "x.mcf")]))


@pytest.mark.parametrize("extra,needle", [
    (["--mean", "0.5,0.5,0.5"], "--mean and --std go together"),
    (["--mean", "0.5,0.5", "--std", "0.2,0.2"], "need 3 values"),
    (["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--offset", "3"], "not both"),
    (["--scale", "2"], "--scale in [1e-6, 1]"),
    (["--input-shape", "3,16,16"], "fails on an input of shape [1, 3, 16, 16]"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, user_model, extra, needle):
    spec, weights = user_model
    argv = [spec, "--input-shape", "3,32,32", "--out", str(tmp_path / "m.mcf")] + extra
    with pytest.raises(McutrainError) as err:
        import_torch(parse(argv))
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "m.mcf").exists()


def test_input_shape_is_checked_by_the_parser():
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parse(["m.py:build", "--input-shape", "2,8,8", "--out", "x"])


def test_arguments_beside_the_import_commands_own(tmp_path, user_model):
    """shared=False: the import command declares PATH, --classes, --out; --input-shape is checked at run time."""
    parser = argparse.ArgumentParser(prog="mcutrain import")
    parser.add_argument("path")
    parser.add_argument("--classes")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--out")
    add_torch_import_arguments(parser, shared=False)
    spec, _ = user_model
    with pytest.raises(McutrainError, match="--input-shape C,H,W is required"):
        import_torch(parser.parse_args([spec, "--out", str(tmp_path / "m.mcf")]))
    result = import_torch(parser.parse_args([spec, "--input-shape", "3,32,32", "--classes", "cat,dog,fish",
                                             "--out", str(tmp_path / "m.mcf")]))
    assert result.payload["head"] == "replaced"
    assert load_float_graph(tmp_path / "m.mcf").classes == ("cat", "dog", "fish")
