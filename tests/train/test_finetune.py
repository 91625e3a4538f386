"""Fine-tuning (the simulation of on-device training): it learns, reproducibly, with any scheme."""

import json

import numpy as np
import pytest
import torch

from mcutrain.cli import cmd_finetune, cmd_quantize
from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_container
from mcutrain.quant.model_file import load_qmodel
from mcutrain.sparse import SchemeError
from mcutrain.train.finetune import FinetuneConfig, finetune
from tests.helpers.cli import run_command
from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_digits_models(tmp_path_factory.mktemp("digits"))


def _cfg(models, tmp_path, **kw):
    base = dict(model=str(models[1]), data="digits", scheme="full", out=str(tmp_path / "out.safetensors"),
                epochs=2, batch_size=32, lr=0.02, seed=0)
    base.update(kw)
    return FinetuneConfig(**base)


def test_full_update_with_qas_improves_accuracy(models, tmp_path):
    r = finetune(_cfg(models, tmp_path), progress=False)
    assert (1 - r["accuracy"]) < 0.7 * (1 - r["accuracy_before"])  # the error shrinks by 30% or more
    assert r["train_loss_per_epoch"][-1] < r["train_loss_per_epoch"][0]
    trained = load_qmodel(r["out"])
    assert trained.provenance["finetune"]["scheme"] == "full"


def test_same_seed_same_model_file(models, tmp_path):
    a = finetune(_cfg(models, tmp_path, out=str(tmp_path / "a.safetensors"), scheme="last-k:4"), progress=False)
    b = finetune(_cfg(models, tmp_path, out=str(tmp_path / "b.safetensors"), scheme="last-k:4"), progress=False)
    ta = read_container(a["out"], "int8-model", (1,))[1]
    tb = read_container(b["out"], "int8-model", (1,))[1]
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_scheme_decides_what_changes(models, tmp_path):
    r = finetune(_cfg(models, tmp_path, scheme="bias-only"), progress=False)
    before, after = load_qmodel(models[1]), load_qmodel(r["out"])
    for a, b in zip(before.convs(), after.convs()):
        assert np.array_equal(a.weight, b.weight), a.name  # bias-only never touches a conv weight
    assert any(not np.array_equal(a.bias, b.bias) for a, b in zip(before.convs(), after.convs()))
    assert not np.array_equal(before.classifier.weight, after.classifier.weight)


def test_float_twin_baseline_learns(models, tmp_path):
    r = finetune(_cfg(models, tmp_path, float=True, lr=0.01), progress=False)
    assert r["accuracy"] > r["accuracy_before"]
    assert load_qmodel(r["out"]).provenance["float_finetuned"] is True


def test_new_task_gets_a_new_zero_head(models, tmp_path):
    r = finetune(_cfg(models, tmp_path, data="faces", epochs=1), progress=False)
    out = load_qmodel(r["out"])
    assert out.num_classes == 2 and out.classes == ("non-face", "face")
    assert r["accuracy_before"] == pytest.approx(0.5, abs=0.01)  # zero head: every logit equal


@pytest.mark.parametrize("kw, error, message", [
    ({"scheme": "paper-99kb"}, SchemeError, "paper-99kb"),
    ({"optimizer": "lars"}, McutrainError, "unknown optimizer"),
    ({"model": "/nonexistent/m.safetensors"}, CheckpointError, "no such file"),
])
def test_bad_input(models, tmp_path, kw, error, message):
    with pytest.raises(error, match=message):
        finetune(_cfg(models, tmp_path, **kw), progress=False)


def test_cli_quantize_and_finetune_print_json(models, tmp_path):
    code, out = run_command(cmd_quantize, ["quantize", str(models[0]), "--data", "digits",
                                           "--out", str(tmp_path / "q.safetensors"), "--json"])
    q = json.loads(out)
    assert code == 0 and abs(q["float_accuracy"] - q["int8_accuracy"]) < 0.05
    code, out = run_command(cmd_finetune, ["finetune", str(tmp_path / "q.safetensors"), "--data", "digits",
                                           "--scheme", "last-layer", "--epochs", "1", "--quiet",
                                           "--out", str(tmp_path / "f.safetensors"), "--json"])
    r = json.loads(out)
    assert code == 0 and {"accuracy", "train_loss", "images_per_s"} <= set(r)


def test_prefix_cache_is_bit_identical_to_the_full_forward(models, tmp_path, monkeypatch):
    import mcutrain.train.finetune as ft

    cached = finetune(_cfg(models, tmp_path, out=str(tmp_path / "c.safetensors"), scheme="last-k:4"),
                      progress=False)
    assert cached["prefix_cached_blocks"] > 0
    monkeypatch.setattr(ft, "first_trained_block", lambda net, plan: None)
    full = finetune(_cfg(models, tmp_path, out=str(tmp_path / "f.safetensors"), scheme="last-k:4"),
                    progress=False)
    assert full["prefix_cached_blocks"] == 0
    tc = read_container(cached["out"], "int8-model", (1,))[1]
    tf = read_container(full["out"], "int8-model", (1,))[1]
    assert all(np.array_equal(tc[k], tf[k]) for k in tc)
    assert cached["accuracy"] == full["accuracy"] and cached["train_loss"] == full["train_loss"]


def test_divergence_is_reported_and_writes_nothing(models, tmp_path):
    out = tmp_path / "never.safetensors"
    r = finetune(_cfg(models, tmp_path, float=True, lr=1e6, out=""), progress=False)
    assert r["diverged"] and len(r["train_loss_per_epoch"]) == 1
    with pytest.raises(McutrainError, match="training diverged"):
        finetune(_cfg(models, tmp_path, float=True, lr=1e6, out=str(out)), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -1.0, 1e39])
def test_learning_rate_must_be_finite_and_positive(models, tmp_path, lr):
    out = tmp_path / "never.safetensors"
    with pytest.raises(McutrainError, match="--lr must be a finite number > 0"):
        finetune(_cfg(models, tmp_path, lr=lr, out=str(out)), progress=False)
    assert not out.exists()


def test_parameters_blown_up_after_the_last_finite_loss_are_not_written(models, tmp_path, monkeypatch):
    import mcutrain.train.finetune as finetune_mod

    real = finetune_mod._make_step

    def poisoning_step(net, model_fn, cfg):
        step = real(net, model_fn, cfg)

        def wrapped(x, y):
            loss = step(x, y)
            with torch.no_grad():
                next(p for p in net.parameters() if p.requires_grad).view(-1)[0] = float("nan")
            return loss

        return wrapped

    monkeypatch.setattr(finetune_mod, "_make_step", poisoning_step)
    out = tmp_path / "never.safetensors"
    with pytest.raises(McutrainError, match=r"training diverged in epoch 1 \(\d+ parameters are not finite, first "):
        finetune(_cfg(models, tmp_path, float=True, epochs=1, out=str(out)), progress=False)
    assert not out.exists()


def test_float_runs_record_no_qas_flag(models, tmp_path):
    """QAS does not apply to the fp32 twin: its run must not claim ``qas: true``."""
    r = finetune(_cfg(models, tmp_path, float=True, lr=0.01, epochs=1, scheme="last-layer"), progress=False)
    assert "qas" not in r["config"]
    provenance = load_qmodel(tmp_path / "out.safetensors").provenance["finetune"]
    assert "qas" not in provenance and provenance["float"] is True
    r = finetune(_cfg(models, tmp_path, epochs=1, scheme="last-layer", out=""), progress=False)
    assert r["config"]["qas"] is True


def test_no_qas_warns_with_the_factor_and_the_rate_that_works(models, tmp_path, capsys):
    from mcutrain.train.finetune import no_qas_warning

    q = load_qmodel(models[1])
    scales = np.concatenate([c.w_scale[c.w_scale > 0] for c in q.convs()]).astype(np.float64)
    factor = float(np.median(scales ** 2))
    text = no_qas_warning(q, _cfg(models, tmp_path, qas=False, lr=0.02))
    assert f"{factor:.1e}" in text and f"{0.02 / factor:.0e}" in text and factor < 1e-3
    assert no_qas_warning(q, _cfg(models, tmp_path)) is None  # QAS on: nothing to say
    code, _ = run_command(cmd_finetune, ["finetune", str(models[1]), "--data", "digits", "--scheme", "bias-only",
                                         "--epochs", "1", "--quiet", "--no-qas", "--lr", "0.02", "--out", str(tmp_path / "n.safetensors")])
    err = capsys.readouterr().err
    assert code == 0 and err.startswith("mcutrain finetune: warning: --no-qas: without QAS") and text in err


def test_a_watched_run_prints_validation_accuracy_per_epoch_and_at_the_end(models, tmp_path, capsys):
    """A person tunes on validation: each epoch's line and the summary show it; test only at the end."""
    code, out = run_command(cmd_finetune, ["finetune", str(models[1]), "--data", "digits", "--scheme", "last-layer",
                                           "--epochs", "2", "--lr", "0.02", "--out", str(tmp_path / "w.safetensors")])
    epochs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert code == 0 and [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("val acc" in line and "test" not in line for line in epochs)
    assert "validation accuracy" in out and out.startswith("test accuracy")
    quiet = finetune(_cfg(models, tmp_path, scheme="last-layer", epochs=2, out=""), progress=False)
    watched = finetune(_cfg(models, tmp_path, scheme="last-layer", epochs=2, out=""), progress=True)
    assert quiet["train_loss_per_epoch"] == watched["train_loss_per_epoch"]  # watching changes nothing
    assert len(watched["val_accuracy_per_epoch"]) == 2 and quiet["val_accuracy_per_epoch"] == []
