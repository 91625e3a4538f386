"""Contribution analysis end to end on the digits `tiny` model: document, cache, resume, workers, CLI."""

import json
import shutil

import pytest

from mcutrain.cli import cmd_analyze
from mcutrain.errors import McutrainError
from mcutrain.search import AnalysisConfig, analyze, load_contrib, runs_path
from mcutrain.search import runs as runs_module
from tests.helpers.cli import run_command

# 7 runs: baseline, bias k = 1, 2, and conv 13 / 14 at ratios 1/8 and 1 (each ~0.1 s).
SETTINGS = dict(data="digits", epochs=1, train_subset=300, eval_subset=0, lr=0.1, layers="13,14",
                ratios="1/8,1", bias_grid="1,2")
N_RUNS = 7
TABLES = ("baseline", "bias", "weight", "accuracy")


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "contrib.json"
    return out, analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)


SUMMARY_TIME_KEY = "seconds"  # wall time is reported, never asserted on


def _cached_copy(reference, tmp_path):
    """A fresh output whose run cache is the reference's (as if contrib.json had been deleted)."""
    out = tmp_path / "contrib.json"
    shutil.copy(runs_path(reference[0]), runs_path(out))
    return out


def _no_training(*_args, **_kw):
    raise AssertionError("finetune was called although every run is cached")


def test_document_structure(reference):
    out, doc = reference
    c = load_contrib(out)
    assert doc["format"] == "mcutrain-contrib" and doc["metric"] == "val_accuracy"
    assert c.arch == "tiny" and c.n_convs == 15
    assert doc["grid"] == {"bias_k": [1, 2], "layers": [13, 14], "ratios": [0.125, 1.0]}
    assert sorted(c.bias) == [1, 2] and sorted(c.weight) == [13, 14]
    assert all(sorted(row) == [0.125, 1.0] for row in c.weight.values())
    acc = doc["accuracy"]
    assert doc["bias"]["2"] == pytest.approx(acc["bias"]["2"] - doc["baseline"])
    # dAcc_W[i, r] is over the bias-only run with k = n - i (conv 13: k = 2)
    assert doc["weight"]["13"]["1.0"] == pytest.approx(acc["weight"]["13"]["1.0"] - acc["bias"]["2"])
    assert doc["runs"] == doc["runs_new"] == N_RUNS
    assert doc["settings"]["train_subset"] == 300 and "validation" in doc["note"]
    assert doc["data"]["train_used"] == 300 and doc["data"]["val_used"] > 0
    lines = runs_path(out).read_text().splitlines()
    assert json.loads(lines[0])["type"] == "header" and len(lines) == 1 + N_RUNS
    assert all("test" not in json.dumps(json.loads(line).get("record", {})) for line in lines[1:])


def test_resume_from_cache_runs_nothing(reference, tmp_path, monkeypatch):
    out = _cached_copy(reference, tmp_path)
    monkeypatch.setattr(runs_module, "finetune", _no_training)
    doc = analyze(AnalysisConfig(model=reference[1]["model"]["path"], out=str(out), **SETTINGS), progress=False)
    assert doc["runs_new"] == 0 and all(doc[k] == reference[1][k] for k in TABLES)
    # a smaller selection is answered from the same cache
    smaller = dict(SETTINGS, layers="14", ratios="1")
    doc = analyze(AnalysisConfig(model=reference[1]["model"]["path"], out=str(out), **smaller), progress=False)
    assert doc["weight"] == {"14": {"1.0": reference[1]["weight"]["14"]["1.0"]}}


def test_killed_analysis_resumes_without_redoing_finished_runs(reference, tmp_path, monkeypatch):
    real, calls = runs_module.finetune, []

    def dies_after_three(*args, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the kill
        calls.append(1)
        return real(*args, **kw)

    cfg = AnalysisConfig(model=reference[1]["model"]["path"], out=str(tmp_path / "contrib.json"), **SETTINGS)
    monkeypatch.setattr(runs_module, "finetune", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        analyze(cfg, progress=False)
    cache = runs_path(cfg.out)
    assert len(cache.read_text().splitlines()) == 1 + 3 and not (tmp_path / "contrib.json").exists()
    with open(cache, "a") as f:
        f.write('{"type": "run", "key": "torn')  # killed in mid-write: no newline, not a finished run

    restarted = []
    monkeypatch.setattr(runs_module, "finetune", lambda *a, **kw: restarted.append(1) or real(*a, **kw))
    doc = analyze(cfg, progress=False)
    assert len(restarted) == N_RUNS - 3 and doc["runs_new"] == N_RUNS - 3
    assert all(doc[k] == reference[1][k] for k in TABLES)
    assert all(json.loads(line) for line in cache.read_text().splitlines())


def test_changed_setting_is_refused_by_name(reference, tmp_path, monkeypatch):
    out = _cached_copy(reference, tmp_path)
    monkeypatch.setattr(runs_module, "finetune", _no_training)
    cfg = AnalysisConfig(model=reference[1]["model"]["path"], out=str(out), **dict(SETTINGS, lr=0.05))
    with pytest.raises(McutrainError, match=r"lr: cache 0\.1, now 0\.05"):
        analyze(cfg, progress=False)
    cfg = AnalysisConfig(model=reference[1]["model"]["path"], out=str(out), **dict(SETTINGS, train_subset=200))
    with pytest.raises(McutrainError, match="train_subset"):
        analyze(cfg, progress=False)


def test_two_workers_give_the_same_results(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module, "_run_here", _no_training)  # the runs must go to the workers
    cfg = AnalysisConfig(model=reference[1]["model"]["path"], out=str(tmp_path / "c.json"), workers=2, **SETTINGS)
    doc = analyze(cfg, progress=False)
    assert doc["workers"] == 2 and doc["runs_new"] == N_RUNS
    assert all(doc[k] == reference[1][k] for k in TABLES)
    assert len(runs_path(cfg.out).read_text().splitlines()) == 1 + N_RUNS


def test_cli_json_summary(reference, tmp_path, monkeypatch):
    out = _cached_copy(reference, tmp_path)
    monkeypatch.setattr(runs_module, "finetune", _no_training)
    code, text = run_command(cmd_analyze, [
        "analyze", reference[1]["model"]["path"], "--data", "digits", "--out", str(out), "--epochs", "1",
        "--subset", "300", "--eval-subset", "0", "--lr", "0.1", "--layers", "13..14", "--ratios", "1/8,1",
        "--bias-grid", "1,2", "--quiet", "--json"])
    summary = json.loads(text)
    assert code == 0 and summary["runs"] == N_RUNS and summary["runs_new"] == 0
    assert summary["baseline"] == reference[1]["baseline"]
    assert summary["best_bias"]["k"] in (1, 2)
    top = summary["top_weights"]
    assert len(top) == 4 and [t["dacc"] for t in top] == sorted((t["dacc"] for t in top), reverse=True)
    assert {"layer", "name", "ratio", "dacc"} <= set(top[0]) and SUMMARY_TIME_KEY in summary
    assert load_contrib(out).baseline == reference[1]["baseline"]


def test_bad_selection_is_a_user_error(reference, tmp_path):
    cfg = AnalysisConfig(model=reference[1]["model"]["path"], out=str(tmp_path / "c.json"),
                         **dict(SETTINGS, layers="15"))
    with pytest.raises(McutrainError, match="layer 15 does not exist"):
        analyze(cfg, progress=False)
