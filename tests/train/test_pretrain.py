"""Pretraining: it learns, it is reproducible from a seed, and a killed run resumes exactly."""

import numpy as np
import pytest

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
