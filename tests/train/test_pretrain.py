"""Pretraining: it learns, it is reproducible from a seed, a killed run resumes exactly, a run that
blows up writes nothing, and identical runs write identical files."""

import json

import numpy as np
import pytest
import torch

import mcutrain.train.pretrain as pretrain_mod
from mcutrain.errors import McutrainError
from mcutrain.io.container import read_container
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.pretrain import PretrainConfig, cosine_lr, pretrain, run_paths


def _cfg(tmp_path, name="run", **kw):
    base = dict(model="tiny", data="digits", out=str(tmp_path / name / "c.safetensors"), epochs=2,
                batch_size=32, lr=0.05, resolution=16, seed=3)
    base.update(kw)
    return PretrainConfig(**base)


def _weights(path):
    _, tensors = read_container(path, "float-checkpoint", (1,))
    return tensors


def _quiet(_msg):
    pass


def test_learns_well_above_chance(tmp_path):
    summary = pretrain(_cfg(tmp_path, epochs=4), progress=False, log=_quiet)
    assert summary["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    model, info = load_checkpoint(summary["checkpoint"])
    assert (info.model, info.num_classes, info.resolution) == ("tiny", 10, 16)
    assert info.training["config"]["seed"] == 3
    lines = run_paths(summary["checkpoint"])["metrics"].read_text().splitlines()
    assert len(lines) == 4


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = pretrain(_cfg(tmp_path, "a"), progress=False, log=_quiet)["checkpoint"]
    b = pretrain(_cfg(tmp_path, "b"), progress=False, log=_quiet)["checkpoint"]
    c = pretrain(_cfg(tmp_path, "c", seed=4), progress=False, log=_quiet)["checkpoint"]
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not np.array_equal(wa["classifier.weight"], wc["classifier.weight"])


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = pretrain(_cfg(tmp_path, "straight", epochs=3), progress=False, log=_quiet)["checkpoint"]

    real = pretrain_mod._train_one_epoch

    def killed_in_epoch_3(model, optimizer, loader, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, optimizer, loader, epoch, *args)

    cfg = _cfg(tmp_path, "killed", epochs=3)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False, log=_quiet)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", real)
    messages = []
    resumed = pretrain(cfg, resume=True, progress=False, log=messages.append)["checkpoint"]
    assert any("resuming after epoch 2/3" in m for m in messages)
    ws, wr = _weights(straight), _weights(resumed)
    assert all(np.array_equal(ws[k], wr[k]) for k in ws)
    assert len(run_paths(resumed)["metrics"].read_text().splitlines()) == 3


def test_existing_run_needs_resume_or_force_and_same_settings(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    pretrain(cfg, progress=False, log=_quiet)
    with pytest.raises(McutrainError, match="--resume to continue it or --force"):
        pretrain(cfg, progress=False, log=_quiet)
    changed = _cfg(tmp_path, epochs=1, lr=0.2)
    with pytest.raises(McutrainError, match=r"lr: saved 0.05 vs now 0.2"):
        pretrain(changed, resume=True, progress=False, log=_quiet)
    pretrain(changed, force=True, progress=False, log=_quiet)


@pytest.mark.parametrize("bad, message", [({"epochs": 0}, "--epochs"), ({"lr": 0.0}, "--lr"),
                                          ({"model": "vgg"}, "unknown model")])
def test_bad_settings(tmp_path, bad, message):
    with pytest.raises(McutrainError, match=message):
        pretrain(_cfg(tmp_path, **bad), progress=False, log=_quiet)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    lrs = [cosine_lr(s, 1000, 0.1) for s in range(1000)]
    assert lrs[0] < lrs[29] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[30:], lrs[31:]))
    assert lrs[-1] < 1e-5


# ---- blow-ups and reproducible files (issue 11) ----------------------------------------------


def _files(cfg):
    return run_paths(cfg.out)


def test_a_diverging_run_writes_nothing(tmp_path):
    cfg = _cfg(tmp_path, epochs=1, lr=1e6)
    with pytest.raises(pretrain_mod.TrainingDiverged, match=r"diverged in epoch 1/1 \(the loss became nan"):
        pretrain(cfg, progress=False, log=_quiet)
    assert not any(p.exists() for p in _files(cfg).values())


def test_weights_blown_up_in_the_last_step_are_not_written(tmp_path, monkeypatch):
    """The loss of every step was finite, the update after the last one was not: still refused."""
    real = pretrain_mod._train_one_epoch

    def poisoned(model, *args):
        stats = real(model, *args)
        with torch.no_grad():
            model.classifier.weight[0, 0] = float("inf")
        return stats

    cfg = _cfg(tmp_path, epochs=1)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", poisoned)
    with pytest.raises(pretrain_mod.TrainingDiverged, match=r"1 of \d+ tensors are not finite, first classifier.weight"):
        pretrain(cfg, progress=False, log=_quiet)
    assert not any(p.exists() for p in _files(cfg).values())


def test_a_later_epoch_that_diverges_keeps_the_last_finite_epoch_only_when_asked(tmp_path, monkeypatch):
    real = pretrain_mod._train_one_epoch

    def nan_in_epoch_2(model, optimizer, loader, epoch, *args):
        stats = real(model, optimizer, loader, epoch, *args)
        if epoch == 1:
            with torch.no_grad():
                model.classifier.bias[0] = float("nan")
        return stats

    cfg = _cfg(tmp_path, epochs=2)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", nan_in_epoch_2)
    # --keep-failed: the last finite epoch stays
    with pytest.raises(pretrain_mod.TrainingDiverged, match="epoch 2/2 .*last finished epoch stays in"):
        pretrain(cfg, progress=False, log=_quiet, keep_failed=True)
    weights = _weights(cfg.out)
    assert all(np.isfinite(v).all() for v in weights.values())
    assert len(run_paths(cfg.out)["metrics"].read_text().splitlines()) == 1
    # without it a failed run keeps no checkpoint and no state; the metrics file says what happened
    with pytest.raises(pretrain_mod.TrainingDiverged, match="epoch 2/2 .*no checkpoint was kept") as failed:
        pretrain(cfg, force=True, progress=False, log=_quiet)
    files = _files(cfg)
    assert not files["checkpoint"].exists() and not files["state"].exists()
    assert len(files["metrics"].read_text().splitlines()) == 1
    assert failed.value.exit_code == 3 and failed.value.result["health"]["failed"] is True


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -float("inf"), -0.1, 0.0, 1e39, 1e-50, True, "0.1"])
def test_learning_rates_must_be_finite_positive_float32(tmp_path, lr):
    cfg = _cfg(tmp_path, lr=lr)
    with pytest.raises(McutrainError, match=r"--lr must be (a finite number > 0|a number)"):
        pretrain(cfg, progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()


def test_identical_runs_write_identical_files_timings_only_in_metrics(tmp_path):
    """1 thread (conftest), tiny model, tiny data: the checkpoint and the state are byte-identical;
    seconds and images/s are in the log and the metrics file only."""
    cfg, logs = _cfg(tmp_path, epochs=2), []
    pretrain(cfg, progress=False, log=logs.append)
    a = _files(cfg)
    first = {kind: a[kind].read_bytes() for kind in ("checkpoint", "state", "metrics")}
    pretrain(cfg, force=True, progress=False, log=_quiet)  # the same command again, in the same place
    for kind in ("checkpoint", "state"):
        assert a[kind].read_bytes() == first[kind], kind
    meta, _ = read_container(a["checkpoint"], "float-checkpoint", (1,))
    last = meta["training"]["last_epoch"]
    assert last["epoch"] == 2 and "seconds" not in last and "images_per_s" not in last
    assert b"seconds" not in a["checkpoint"].read_bytes() and b"images_per_s" not in a["state"].read_bytes()
    lines = [json.loads(line) for line in a["metrics"].read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(r["seconds"] > 0 and r["images_per_s"] > 0 for r in lines)
    assert {k: v for k, v in lines[-1].items() if k not in ("seconds", "images_per_s")} == last
    assert all(" img/s, " in m for m in logs)


def test_a_resumed_run_rewrites_the_metrics_of_the_epochs_it_redoes(tmp_path, monkeypatch):
    real = pretrain_mod._train_one_epoch

    def killed_in_epoch_2(model, optimizer, loader, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, optimizer, loader, epoch, *args)

    cfg = _cfg(tmp_path, epochs=2)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False, log=_quiet)
    monkeypatch.setattr(pretrain_mod, "_train_one_epoch", real)
    metrics = run_paths(cfg.out)["metrics"]
    first = metrics.read_text().splitlines()
    assert len(first) == 1
    # A line of the epoch the resume redoes (as an older version appended before its state) and a torn one.
    metrics.write_text(first[0] + '\n{"epoch": 2, "stale": true}\n{"epoch": 3, "tor')
    pretrain(cfg, resume=True, progress=False, log=_quiet)
    lines = metrics.read_text().splitlines()
    assert lines[0] == first[0]
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert "stale" not in lines[1]
