"""A fine-tune that does not learn (issue 12: lr 1e6 ended at 10% with the model written) fails: exit 3,
one line naming why and what to do, ``--json`` says why, and no model unless ``--keep-failed``."""

import json

import pytest

from mcutrain.cli.main import main
from mcutrain.errors import TrainingFailed
from mcutrain.quant.model_file import load_qmodel
from mcutrain.train.finetune import FinetuneConfig, finetune
from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_digits_models(tmp_path_factory.mktemp("digits"))[1])


def _finetune(model, out, *extra):
    return main(["finetune", model, "--data", "digits", "--scheme", "full", "--epochs", "1", "--quiet",
                 "--train-subset", "400", "--out", str(out), "--json", *extra])


def test_a_huge_learning_rate_fails_with_exit_3_and_writes_nothing(model, tmp_path, capsys):
    out = tmp_path / "never.safetensors"
    code = _finetune(model, out, "--lr", "1e6")
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 3 and not out.exists()
    assert r["failed"] is True and r["out"] is None and r["diverged"] is False  # finite, just useless
    assert r["health"]["failed"] is True and r["health"]["classes"] == 10
    assert r["health"]["final_loss"] > 100 * r["health"]["chance_loss"]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mcutrain finetune: error: training failed to learn: ")
    assert r["health"]["reason"] in err[0] and f"nothing was written to {out}" in err[0]
    assert "lower --lr (now 1e+06)" in err[0]


def test_keep_failed_writes_the_model_and_still_exits_3(model, tmp_path, capsys):
    out = tmp_path / "kept.safetensors"
    code = _finetune(model, out, "--lr", "1e6", "--keep-failed")
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 3 and r["failed"] is True and r["out"] == str(out)
    assert load_qmodel(out).provenance["finetune"]["lr"] == 1e6
    assert f"the model was written to {out} anyway (--keep-failed)" in captured.err


def test_a_normal_run_passes_with_its_health(model, tmp_path, capsys):
    out = tmp_path / "good.safetensors"
    code = _finetune(model, out, "--lr", "0.02")
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and out.exists() and r["out"] == str(out)
    assert r["failed"] is False and r["health"]["ok"] is True and r["health"]["reason"] == "learned"
    assert r["health"]["val_n"] > 0 and r["health"]["val_accuracy"] == r["val_accuracy"]


def test_a_diverged_run_is_never_written_even_with_keep_failed(model, tmp_path, capsys):
    """The fp32 twin at lr 1e6 becomes NaN: a non-finite model is never a file."""
    out = tmp_path / "nan.safetensors"
    code = _finetune(model, out, "--lr", "1e6", "--float", "--keep-failed")
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 3 and not out.exists() and r["diverged"] and r["failed"] and r["out"] is None
    assert "training diverged in epoch 1" in captured.err


def test_without_an_output_a_failed_run_is_returned_not_raised(model):
    """The analysis' runs write nothing: they get the judgement in the result and go on."""
    r = finetune(FinetuneConfig(model=model, data="digits", scheme="full", epochs=1, lr=1e6), progress=False)
    assert r["failed"] and not r["health"]["ok"] and r["out"] is None


def test_the_library_raises_with_the_result_when_an_output_was_asked_for(model, tmp_path):
    out = tmp_path / "never.safetensors"
    cfg = FinetuneConfig(model=model, data="digits", scheme="full", epochs=1, lr=1e6, out=str(out))
    with pytest.raises(TrainingFailed, match="training failed to learn") as failed:
        finetune(cfg, progress=False)
    assert failed.value.exit_code == 3 and failed.value.result["failed"] and not out.exists()


def test_zero_epochs_trains_nothing_and_is_not_a_failure(model, tmp_path):
    out = tmp_path / "same.safetensors"
    r = finetune(FinetuneConfig(model=model, data="digits", scheme="full", epochs=0, out=str(out)), progress=False)
    assert not r["failed"] and r["health"]["steps"] == 0 and out.exists()
