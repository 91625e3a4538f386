"""`mcutrain search`: JSON fields, a scheme file `load_scheme` reads, the plot, the below-minimum error."""

import json

import pytest

from helpers.cli import run_command
from helpers.search import synthetic_contrib
from mcutrain.cli import cmd_search
from mcutrain.cli.main import main
from mcutrain.sparse import load_scheme

N = 15


@pytest.fixture()
def contrib_file(tmp_path):
    doc = synthetic_contrib("tiny", N, {13: {1.0: 0.02}, 14: {0.25: 0.01, 1.0: 0.015}}, {1: 0.004, 15: 0.01}).doc
    path = tmp_path / "contrib.json"
    path.write_text(json.dumps(doc))
    return path


def test_search_json_fields_and_files(tmp_path, contrib_file):
    out = tmp_path / "scheme.json"
    code, text = run_command(cmd_search, ["search", "tiny", "--contrib", str(contrib_file), "--budget", "8KB",
                                          "--population", "4", "--generations", "2", "--out", str(out),
                                          "--quiet", "--json"])
    r = json.loads(text)
    assert code == 0
    assert {"predicted_gain", "peak_sram_bytes", "budget_bytes", "scheme"} <= set(r)
    assert r["budget_bytes"] == 8 * 1024 and r["peak_sram_bytes"] <= r["budget_bytes"]
    assert r["resolution"] == 32  # from contrib.json
    scheme = load_scheme(str(out), "tiny")
    assert scheme.name == r["scheme"]["name"] == "searched-8KB"
    assert r["evaluations"] == r["random_evaluations"] == 8
    assert (tmp_path / "scheme.png").read_bytes()[:4] == b"\x89PNG"


def test_search_below_minimum_is_a_clear_error(tmp_path, contrib_file, capsys):
    code = main(["search", "tiny", "--contrib", str(contrib_file), "--budget", "1KB", "--out",
                 str(tmp_path / "s.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "1024 bytes (1.0 KB) is below the smallest feasible scheme of tiny" in err
    assert "classifier only needs" in err and not (tmp_path / "s.json").exists()


def test_search_refuses_an_unreadable_budget(tmp_path, contrib_file, capsys):
    code = main(["search", "tiny", "--contrib", str(contrib_file), "--budget", "lots", "--out",
                 str(tmp_path / "s.json"), "--quiet"])
    assert code == 2 and "--budget: cannot read 'lots'" in capsys.readouterr().err
