"""The API's wrappers of the commands that keep their own code (``search``, ``import``) give what the
commands give: the same document, the same files; a .tflite loads into a printable `Model`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mcutrain
from helpers.cli import run_command
from helpers.search import synthetic_contrib
from mcutrain.cli import cmd_import, cmd_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))

from graph_models import plain_cnn  # noqa: E402

VOLATILE = {"seconds", "out", "plot"}  # wall time and the paths the two runs were told to write


def test_search_scheme_is_the_search_command(tmp_path):
    doc = synthetic_contrib("tiny", 15, {13: {1.0: 0.02}, 14: {0.25: 0.01, 1.0: 0.015}}, {1: 0.004, 15: 0.01}).doc
    contrib = tmp_path / "contrib.json"
    contrib.write_text(json.dumps(doc))
    argv = ["search", "tiny", "--contrib", str(contrib), "--budget", "8KB", "--population", "4", "--generations",
            "2", "--out", str(tmp_path / "cli.json"), "--quiet", "--json"]
    _, text = run_command(cmd_search, argv)
    cli = json.loads(text)
    found = mcutrain.search_scheme("tiny", contrib, "8KB", tmp_path / "api.json", population=4, generations=2,
                                   quiet=True)
    api = found.to_dict()
    assert {k: v for k, v in api.items() if k not in VOLATILE} == {k: v for k, v in cli.items() if k not in VOLATILE}
    assert found.peak_sram_bytes <= 8 * 1024 and found.out == str(tmp_path / "api.json")
    assert json.loads((tmp_path / "api.json").read_text()) == json.loads((tmp_path / "cli.json").read_text())
    assert "predicted gain" in str(found)


def test_tflite_import_and_load(tmp_path):
    from mcutrain.models.tflite.writer import write_tflite

    source = tmp_path / "cnn.tflite"
    write_tflite(plain_cnn(), source)
    _, text = run_command(cmd_import, ["import", str(source), "--out", str(tmp_path / "cli.safetensors"), "--json"])
    result = mcutrain.import_model(source, tmp_path / "api.safetensors")
    assert {**result.to_dict(), "out": ""} == {**json.loads(text), "out": ""}
    assert (tmp_path / "api.safetensors").read_bytes() == (tmp_path / "cli.safetensors").read_bytes()
    model = mcutrain.load_model(source)
    saved = mcutrain.load_model(result.out)
    assert model.kind == saved.kind == "int8-graph" and model.layers() == saved.layers()
    assert sum(r["macs"] for r in model.layers()) == result["macs"]
    assert f"{result['macs']:,} MACs" in str(model)
