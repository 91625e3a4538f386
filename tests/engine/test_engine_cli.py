"""`mcutrain compile`: the JSON keys users script against, the report files, clear errors."""

import json

import pytest

from mcutrain.cli import cmd_compile
from mcutrain.engine.memory import ENGINE_STATE_BYTES
from mcutrain.quant.model_file import save_qmodel
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import SchemeError
from tests.helpers.cli import run_command

KEYS = {"peak_sram_bytes", "arena_bytes", "trainable_sram_bytes", "flash_bytes", "inference_peak_bytes", "ops"}


def test_zoo_name_compiles_and_writes_the_report(tmp_path):
    code, out = run_command(cmd_compile, ["compile", "tiny", "--scheme", "last-k:6", "--resolution", "32",
                                          "--report", str(tmp_path / "rep"), "--json"])
    r = json.loads(out)
    assert code == 0 and KEYS <= set(r)
    assert r["peak_sram_bytes"] == r["arena_bytes"] + r["trainable_sram_bytes"] + ENGINE_STATE_BYTES
    assert 0 < r["inference_peak_bytes"] <= r["arena_bytes"]
    files = {p.split("/")[-1] for p in r["report_files"]}
    assert files == {"graph.txt", "timeline.txt", "inference_timeline.txt", "report.json", "memory.png"}
    assert (tmp_path / "rep" / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timeline = (tmp_path / "rep" / "timeline.txt").read_text()
    assert "forward" in timeline and "backward" in timeline and "legend" in timeline
    assert "# --- update ---" in (tmp_path / "rep" / "graph.txt").read_text()


def test_model_file_and_more_training_needs_more_memory(tmp_path):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, random_qmodel("tiny", 32)[0])
    sizes = {}
    for scheme in ("last-layer", "full"):
        code, out = run_command(cmd_compile, ["compile", str(path), "--scheme", scheme, "--json"])
        sizes[scheme] = json.loads(out)
    assert sizes["last-layer"]["trainable_sram_bytes"] < sizes["full"]["trainable_sram_bytes"]
    assert sizes["last-layer"]["ops"] < sizes["full"]["ops"]


def test_scheme_for_another_model_is_refused():
    with pytest.raises(SchemeError, match="paper-99kb"):
        run_command(cmd_compile, ["compile", "tiny", "--scheme", "paper-99kb"])
