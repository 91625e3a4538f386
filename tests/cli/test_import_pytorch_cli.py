"""PyTorch in through the CLI: `import FILE.py:build` -> `quantize` -> `export --format tflite` -> LiteRT."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mcutrain.cli.main import main
from mcutrain.data import sources
from mcutrain.quant.graph_file import load_graph_model
from mcutrain.quant.graph_forward import graph_forward
from tests.cli.test_export import _litert_output
from tests.models.torch_models import plain_cnn


def _json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv + ["--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.skipif(not sources.NAMED["digits"].available(), reason="digits (scikit-learn) not installed")
def test_pytorch_model_to_tflite_that_litert_runs_with_our_outputs(tmp_path):
    pytest.importorskip("ai_edge_litert")
    shutil.copy(Path(plain_cnn.__file__), tmp_path / "my_model.py")
    torch.manual_seed(1)
    torch.save(plain_cnn.build(10).state_dict(), tmp_path / "state.pt")
    imported = _json(["import", f"{tmp_path / 'my_model.py'}:build", "--weights", str(tmp_path / "state.pt"),
                      "--input-shape", "3,32,32", "--out", str(tmp_path / "float.mcf")])
    assert imported["head"] == "kept" and imported["num_classes"] == 10
    quantized = _json(["quantize", str(tmp_path / "float.mcf"), "--data", "digits", "--calibration-batches", "2",
                       "--out", str(tmp_path / "int8.safetensors")])
    assert quantized["n"] == 269 and 0.0 <= quantized["int8_accuracy"] <= 1.0
    model = load_graph_model(tmp_path / "int8.safetensors")
    assert model.provenance["format"] == "pytorch" and model.provenance["calibration_batches"] == 2
    _json(["export", str(tmp_path / "int8.safetensors"), "--format", "tflite", "--out", str(tmp_path / "m.tflite")])
    x = np.random.default_rng(0).integers(-128, 128, (1, 3, 32, 32), dtype=np.int8)
    assert np.array_equal(_litert_output(tmp_path / "m.tflite", x), graph_forward(model.graph, x)[model.graph.output])


def test_training_commands_send_a_float_graph_to_quantize(tmp_path, capsys):
    shutil.copy(Path(plain_cnn.__file__), tmp_path / "my_model.py")
    assert main(["import", f"{tmp_path / 'my_model.py'}:build", "--input-shape", "3,32,32",
                 "--out", str(tmp_path / "float.mcf")]) == 0
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "float.mcf"), "--data", "digits", "--scheme", "bias-only",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "mcutrain quantize" in err and "\n" not in err and not (tmp_path / "x").exists()
