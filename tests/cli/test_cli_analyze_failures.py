"""`mcutrain analyze` records runs that failed to learn, says how many, and goes on; when every run
failed the contributions are noise: exit 3 (the document still records what happened)."""

import json

import pytest

from mcutrain.cli.main import main
from mcutrain.search import load_contrib
from tests.helpers.digits_model import make_digits_models

# 7 short runs (as tests/search/test_search_contrib.py): baseline, bias k = 1, 2, conv 13 / 14 at 1/8 and 1
GRID = ["--epochs", "1", "--subset", "300", "--eval-subset", "0", "--layers", "13,14", "--ratios", "1/8,1",
        "--bias-grid", "1,2", "--quiet", "--json"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_digits_models(tmp_path_factory.mktemp("digits"))[1])


def test_every_run_failing_is_recorded_and_exits_3(model, tmp_path, capsys):
    out = tmp_path / "contrib.json"
    code = main(["analyze", model, "--data", "digits", "--out", str(out), "--lr", "1e6", *GRID])
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 3 and r["failed_runs"] == r["runs"] == 7
    assert sorted(r["failed"]) == sorted(r["unstable"]) and len(r["failed"]) == 7
    doc = load_contrib(out).doc  # written, readable, and says which runs failed and why
    assert doc["failed"] == r["failed"] and all("training loss" in why for why in doc["failed"].values())
    err = captured.err.strip().splitlines()
    assert err[0].startswith("mcutrain analyze: warning: 7 of 7 run(s) failed to learn (")
    assert err[-1].startswith("mcutrain analyze: error: every one of the 7 runs failed to learn")


def test_a_healthy_analysis_reports_no_failed_runs(model, tmp_path, capsys):
    code = main(["analyze", model, "--data", "digits", "--out", str(tmp_path / "c.json"), "--lr", "0.1", *GRID])
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 0 and r["failed_runs"] == 0 and r["failed"] == {} and r["unstable"] == []
    assert "failed to learn" not in captured.err
