"""Caches and identity (issue 11 item 7): `analyze` never trusts a cached run it could not have
produced, and `search` refuses a contribution analysis made for another model, naming both."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from mcutrain.cli.main import main
from mcutrain.errors import McutrainError
from mcutrain.io.identity import qmodel_identity
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.search import AnalysisConfig, analyze, runs_path
from mcutrain.search import runs as runs_module
from mcutrain.search.cache import check_record
from mcutrain.search.contrib import check_analysis_model, load_contrib
from tests.helpers.digits_model import make_digits_models

# 3 runs: baseline, bias k = 1 and conv 14 at ratio 1 (each ~0.1 s).
SETTINGS = dict(data="digits", epochs=1, train_subset=200, eval_subset=0, lr=0.1, layers="14", ratios="1",
                bias_grid="1")
N_RUNS = 3


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    model = str(make_digits_models(folder)[1])
    out = folder / "contrib.json"
    return model, out, analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)


def _fresh_copy(analysed, tmp_path):
    model, out, _ = analysed
    copy = tmp_path / "contrib.json"
    shutil.copy(runs_path(out), runs_path(copy))
    return model, copy


def _edit_first_run(cache, edit) -> None:
    lines = cache.read_text().splitlines()
    entry = json.loads(lines[1])
    edit(entry["record"])
    lines[1] = json.dumps(entry)
    cache.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ run cache


def test_document_records_the_model_identity_and_recipe(analysed):
    model, _, doc = analysed
    q = load_qmodel(model)
    assert doc["model"]["identity"] == qmodel_identity(q)
    assert doc["model"]["recipe"]["source_tensors_sha256"] == q.provenance["source_tensors_sha256"]
    header = json.loads(runs_path(analysed[1]).read_text().splitlines()[0])
    assert header["version"] == 2 and header["identity"]["model_identity"] == qmodel_identity(q)


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.update(val_accuracy=7.5), "val_accuracy 7.5 is not an accuracy in [0, 1]"),
    (lambda r: r.update(val_accuracy=float("nan")), "val_accuracy nan"),
    (lambda r: r.update(val_accuracy="0.9"), "val_accuracy '0.9'"),
    (lambda r: r.pop("val_accuracy"), "val_accuracy None"),
    (lambda r: r.update(train_loss_per_epoch=[float("inf")]), "train_loss_per_epoch holds a non-finite loss"),
    (lambda r: r.update(seconds=-1), "seconds -1"),
])
def test_bad_cached_run_is_recomputed(analysed, tmp_path, monkeypatch, capsys, edit, why):
    """A cached accuracy of 7.5 once became a +7.05 contribution; now the run is trained again."""
    model, out = _fresh_copy(analysed, tmp_path)
    _edit_first_run(runs_path(out), edit)
    real, calls = runs_module.finetune, []
    monkeypatch.setattr(runs_module, "finetune", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    doc = analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)
    err = capsys.readouterr().err
    assert len(calls) == 1 and doc["runs_new"] == 1
    assert "1 cached run(s)" in err and "line 2: " + why in err and "recomputed" in err
    reference = analysed[2]
    assert all(doc[k] == reference[k] for k in ("baseline", "bias", "weight"))
    assert all(abs(v) <= 1 for v in doc["bias"].values())


def test_sound_cache_is_used_without_a_warning(analysed, tmp_path, monkeypatch, capsys):
    model, out = _fresh_copy(analysed, tmp_path)
    monkeypatch.setattr(runs_module, "finetune", lambda *a, **kw: pytest.fail("a cached run was trained"))
    doc = analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)
    assert doc["runs_new"] == 0 and "cached run" not in capsys.readouterr().err


def test_forged_run_spec_is_not_a_traceback(analysed, tmp_path, monkeypatch):
    model, out = _fresh_copy(analysed, tmp_path)
    with open(runs_path(out), "a") as f:
        f.write(json.dumps({"type": "run", "key": "x", "run": {"bias": "deep"}, "record": {}}) + "\n")
    monkeypatch.setattr(runs_module, "finetune", lambda *a, **kw: pytest.fail("a cached run was trained"))
    assert analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)["runs_new"] == 0


def test_record_checks():
    good = {"val_accuracy": 0.5, "diverged": False, "train_loss_per_epoch": [1.2, 0.9], "seconds": 0.2,
            "train_seconds": 0.1, "prefix_cached_blocks": 3}
    assert check_record(good) is None
    assert check_record({**good, "diverged": True, "train_loss_per_epoch": [1.2, float("nan")]}) is None
    assert "diverged" in check_record({**good, "diverged": 1})
    assert "prefix_cached_blocks" in check_record({**good, "prefix_cached_blocks": True})
    assert "train_loss_per_epoch" in check_record({**good, "train_loss_per_epoch": [10**400]})
    assert check_record([good]) == "the record is not an object"


# ---------------------------------------------------------------------------------------------- search


def _search(model, contrib, tmp_path, capsys) -> tuple[int, str]:
    code = main(["search", model, "--contrib", str(contrib), "--budget", "256KB", "--population", "4",
                 "--generations", "1", "--out", str(tmp_path / "scheme.json"), "--quiet"])
    return code, capsys.readouterr().err


def test_search_refuses_an_analysis_of_another_model(analysed, tmp_path, capsys):
    model, contrib, _ = analysed
    q = load_qmodel(model)
    bias = q.classifier.bias.copy()
    bias[0] += 1  # one integer of the classifier: another model
    other = tmp_path / "other.safetensors"
    save_qmodel(other, replace(q, classifier=replace(q.classifier, bias=bias)))
    code, err = _search(str(other), contrib, tmp_path, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "made for another model" in err and str(other) in err and model in err
    assert qmodel_identity(q)[len("tiny:"):][:12] in err
    assert not (tmp_path / "scheme.json").exists()


def test_search_accepts_the_same_model_with_another_header(analysed, tmp_path, capsys):
    model, contrib, _ = analysed
    q = load_qmodel(model)
    renamed = tmp_path / "renamed.safetensors"
    save_qmodel(renamed, replace(q, provenance={**q.provenance, "note": "copied elsewhere"}))
    code, err = _search(str(renamed), contrib, tmp_path, capsys)
    assert code == 0, err
    assert (tmp_path / "scheme.json").is_file()


def test_search_checks_a_zoo_name_by_architecture(analysed, tmp_path, capsys):
    _, contrib, _ = analysed
    code, err = _search("mcunet-5fps", contrib, tmp_path, capsys)
    assert code == 2 and "made for a tiny model" in err and "mcunet-5fps" in err
    code, err = _search("tiny", contrib, tmp_path, capsys)
    assert code == 0, err


def test_an_analysis_from_before_identities_is_checked_by_file_hash(analysed, tmp_path):
    model, contrib_path, _ = analysed
    contrib = load_contrib(contrib_path)
    old = dict(contrib.doc, model={k: v for k, v in contrib.doc["model"].items() if k not in ("identity", "recipe")})
    legacy = replace(contrib, doc=old)
    q = load_qmodel(model)
    check_analysis_model(legacy, q, model)  # the very file: accepted
    copy = tmp_path / "copy.safetensors"
    save_qmodel(copy, replace(q, provenance={"note": "other bytes"}))
    with pytest.raises(McutrainError, match="file sha256"):
        check_analysis_model(legacy, load_qmodel(copy), str(copy))
    assert np.array_equal(load_qmodel(copy).classifier.bias, q.classifier.bias)


@pytest.mark.parametrize("field, value, message", [
    ("identity", 5, "'model.identity' must be"),
    ("identity", "tiny:abc", "'model.identity' must be"),
    ("sha256", "not-a-hash", "'model.sha256' must be 64 hex digits"),
    ("recipe", [1], "'model.recipe' must be an object or null"),
])
def test_malformed_identity_fields_are_refused(analysed, tmp_path, capsys, field, value, message):
    model, contrib, _ = analysed
    doc = json.loads(contrib.read_text())
    doc["model"][field] = value
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    code, err = _search(model, forged, tmp_path, capsys)
    assert code == 2 and message in err and str(forged) in err and len(err.strip().splitlines()) == 1
