"""Learning rates nobody tunes (train/lr_auto.py): the derived rate, its grid, and ``--lr auto``."""

import json
import math

import numpy as np
import pytest
import torch

from mcutrain.data import Preprocessing, load_dataset
from mcutrain.quant.model_file import load_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.train import lr_auto
from mcutrain.train.finetune import FinetuneConfig, finetune
from mcutrain.train.lr_auto import HeadCurvature
from mcutrain.cli.main import main
from tests.helpers.digits_model import make_digits_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_digits_models(tmp_path_factory.mktemp("digits"))


@pytest.mark.parametrize("lr", [1e-6, 3.3e-4, 0.01, 0.07, 1.0, 5.0])
def test_snap_is_a_quarter_octave_grid_point_within_a_ninth(lr):
    s = lr_auto.snap(lr)
    assert abs(4 * math.log2(s) - round(4 * math.log2(s))) < 1e-9  # on the grid
    assert abs(math.log2(s / lr)) <= 0.125 + 1e-12  # the nearest grid point: within half a step
    assert lr_auto.snap(s) == s
    assert lr_auto.snap(lr * (1 + 1e-12)) == s or abs(4 * math.log2(lr) % 1 - 0.5) < 1e-9  # last bits do not matter


def test_per_sample_rate_follows_the_linear_scaling_rule():
    assert lr_auto.per_sample_lr(0.32, batch_size=32, momentum=0.9) == lr_auto.snap(0.1)  # 0.32 * 10 / 32
    assert lr_auto.per_sample_lr(0.5, batch_size=1, momentum=0.0) == 0.5


def _choice(lr: float, candidates: dict[float, float], chance: float = 0.2) -> lr_auto.LrChoice:
    return lr_auto.LrChoice(lr, lr, HeadCurvature(1.0, 9), 30, tuple(sorted(candidates.items())), 0.0, chance)


def test_engine_rate_is_one_octave_above_linear_scaling_unless_twice_the_choice_failed():
    linear = lr_auto.per_sample_lr(0.25, batch_size=32, momentum=0.9)
    learned = _choice(0.25, {0.25: 0.8, 0.5: 0.6})  # twice the choice was worse, but learned
    assert lr_auto.engine_lr(learned, batch_size=32, momentum=0.9) == 2 * linear
    assert lr_auto.snap(2 * linear) == 2 * linear  # still on the grid
    at_the_cliff = _choice(0.25, {0.125: 0.7, 0.25: 0.8, 0.5: 0.19})  # twice the choice failed
    assert lr_auto.engine_lr(at_the_cliff, batch_size=32, momentum=0.9) == linear
    top_of_the_search = _choice(0.25, {0.125: 0.7, 0.25: 0.8})  # never probed: accuracy was still rising
    assert lr_auto.engine_lr(top_of_the_search, batch_size=32, momentum=0.9) == 2 * linear


def test_derived_rate_is_inverse_to_the_curvature_and_grows_with_momentum():
    a = lr_auto.derived_lr(HeadCurvature(100.0, 256), momentum=0.9)
    assert lr_auto.derived_lr(HeadCurvature(400.0, 256), momentum=0.9) == a / 4  # 2 octaves: exact on the grid
    assert lr_auto.derived_lr(HeadCurvature(100.0, 256), momentum=0.0) < a
    assert lr_auto.device_lr(HeadCurvature(100.0, 256)) == lr_auto.device_lr(HeadCurvature(200.0, 256)) * 2
    assert lr_auto.derived_lr(HeadCurvature(100.0, 256), optimizer="adam") == lr_auto.ADAM_RATE


def test_head_curvature_is_the_largest_eigenvalue_of_the_feature_moment(models):
    q = load_qmodel(models[1])
    train = load_dataset("digits", seed=0).train
    prep = Preprocessing.from_dict(q.preprocessing)
    got = lr_auto.head_curvature(q, train, q.resolution, prep, seed=3)
    # Independently: the float features through the whole simulation, dequantized at the head.
    net = Int8Net(q).eval()
    subset = train.subset(lr_auto.HEAD_SAMPLES, 3 + 7)
    from mcutrain.data.loader import BatchLoader
    x = torch.cat([net.features(net.quantize_input(b)) for b, _ in
                   BatchLoader(subset, 32, q.resolution, shuffle=False, preprocessing=prep)]).double()
    feats = (x.numpy() - q.classifier.x.zero) * q.classifier.x.scale
    want = np.linalg.eigvalsh(feats.T @ feats / len(feats))[-1]
    assert got.samples == len(subset) == lr_auto.HEAD_SAMPLES
    assert got.lambda_max == pytest.approx(want, rel=1e-9)
    assert got.lambda_max > 0


def _search(scores: dict, **chance) -> tuple[float, list]:
    seen = []

    def probe(lr, steps):
        seen.append(lr)
        return scores[lr]

    choice = lr_auto.choose_lr(1.0, 30, probe, curvature=HeadCurvature(1.0, 9), clock=lambda: 0.0, **chance)
    assert choice.as_dict()["candidates"] == [{"lr": lr, "val_accuracy": scores[lr]} for lr in sorted(seen)]
    return choice.lr, seen


def test_auto_climbs_while_larger_rates_do_better():
    assert _search({1.0: 0.5, 2.0: 0.6, 4.0: 0.7}) == (4.0, [1.0, 2.0, 4.0])  # stops at 4x
    assert _search({1.0: 0.5, 2.0: 0.6, 4.0: 0.1}) == (2.0, [1.0, 2.0, 4.0])


def test_auto_descends_when_twice_the_rate_is_worse():
    assert _search({1.0: 0.5, 2.0: 0.1, 0.5: 0.6, 0.25: 0.4}) == (0.5, [1.0, 2.0, 0.5, 0.25])
    assert _search({1.0: 0.5, 2.0: 0.1, 0.5: 0.4}) == (1.0, [1.0, 2.0, 0.5])
    assert _search({1.0: 0.5, 2.0: 0.5, 0.5: 0.4}) == (1.0, [1.0, 2.0, 0.5])  # a tie keeps the lower rate


def test_auto_treats_probes_at_chance_as_failed_and_keeps_descending():
    # 10 classes, 500 validation samples: chance's band reaches 12.7%; 11% > 9.8% is noise, not a gain
    scores = {1.0: 0.098, 2.0: 0.11, 0.5: 0.096, 0.25: 0.60, 0.125: 0.65, 0.0625: 0.62}
    assert _search(scores, classes=10, val_n=500) == (0.125, [1.0, 2.0, 0.5, 0.25, 0.125, 0.0625])
    assert _search({1.0: 0.098, 2.0: 0.11, 4.0: 0.2}) == (4.0, [1.0, 2.0, 4.0])  # without the band it climbs


def test_auto_stops_at_the_bottom_of_its_range_when_everything_fails():
    scores = {2.0 ** k: 0.1 for k in range(-6, 2)}
    lr, seen = _search(scores, classes=10, val_n=500)
    assert lr == 2.0 ** lr_auto.AUTO_DOWN and len(seen) == 8


@pytest.mark.parametrize("run_steps, want", [(0, 1), (7, 7), (30, 30), (10_000, 30)])
def test_probes_are_thirty_steps_or_the_whole_run(run_steps, want):
    assert lr_auto.probe_steps(run_steps) == want
    assert lr_auto.probe_steps(10_000, batch_size=1) == lr_auto.PROBE_SAMPLES  # batch 1: 300 samples


def _auto_cfg(models, tmp_path, **kw):
    base = dict(model=str(models[1]), data="faces", scheme="last-k:4", out=str(tmp_path / "o.safetensors"),
                epochs=2, batch_size=32, lr="auto", seed=0, train_subset=400)
    base.update(kw)
    return FinetuneConfig(**base)


def test_finetune_lr_auto_chooses_a_candidate_records_it_and_learns(models, tmp_path):
    r = finetune(_auto_cfg(models, tmp_path), progress=False)
    auto = r["config"]["lr_auto"]
    assert r["config"]["lr"] == auto["lr"] in [c["lr"] for c in auto["candidates"]]
    assert 3 <= len(auto["candidates"]) <= 4 and auto["probe_steps"] == 10  # the whole run: 2 epochs of 5 batches
    best = max(c["val_accuracy"] for c in auto["candidates"])
    assert [c["val_accuracy"] for c in auto["candidates"] if c["lr"] == auto["lr"]] == [best]
    recorded = load_qmodel(r["out"]).provenance["finetune"]
    assert recorded["lr_auto"] == json.loads(json.dumps(auto))  # the model file says how its rate was chosen
    assert lr_auto.recorded_curvature(load_qmodel(r["out"])).lambda_max == auto["head_lambda_max"]
    assert r["accuracy"] > r["accuracy_before"] + 0.1  # a new 2-class head, from chance


def test_finetune_lr_auto_is_reproducible(models, tmp_path):
    a = finetune(_auto_cfg(models, tmp_path, out=""), progress=False)
    b = finetune(_auto_cfg(models, tmp_path, out=""), progress=False)
    assert a["config"]["lr_auto"]["candidates"] == b["config"]["lr_auto"]["candidates"]
    assert a["accuracy"] == b["accuracy"]


def _cli(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_takes_auto_and_refuses_other_words(models, tmp_path, capsys):
    code, out, err = _cli(capsys, ["finetune", str(models[1]), "--data", "faces", "--scheme", "last-layer",
                                   "--epochs", "1", "--lr", "auto", "--quiet", "--json",
                                   "--out", str(tmp_path / "m.safetensors")])
    assert code == 0, err
    assert json.loads(out)["config"]["lr_auto"]["lr"] == json.loads(out)["config"]["lr"]
    with pytest.raises(SystemExit) as exc:
        main(["finetune", str(models[1]), "--data", "digits", "--scheme", "last-layer", "--lr", "automatic",
              "--out", str(tmp_path / "n.safetensors")])
    assert exc.value.code == 2 and "argument --lr: must be a number" in capsys.readouterr().err
    assert not (tmp_path / "n.safetensors").exists()


def test_compile_lr_auto_uses_data_then_the_record_then_the_fallback(models, tmp_path, capsys):
    trained = tmp_path / "t.safetensors"
    r = finetune(_auto_cfg(models, tmp_path, out=str(trained), epochs=1, data="digits"), progress=False)
    q = load_qmodel(models[1])
    base = ["compile", "--scheme", "last-layer", "--json"]
    code, out, err = _cli(capsys, base + [str(models[1]), "--data", "digits"])
    assert code == 0, err
    record = json.loads(out)["lr_auto"]["batch32"]
    choice = _choice(record["lr"], {c["lr"]: c["val_accuracy"] for c in record["candidates"]}, record["chance_band"])
    assert json.loads(out)["lr"] == lr_auto.engine_lr(choice, batch_size=32, momentum=0.9) and "--lr auto" in err
    assert record["derived_lr"] == lr_auto.derived_lr(lr_auto.model_head_curvature(q, load_dataset("digits",
                                                                                                    seed=0).train, 0))
    code, out, err = _cli(capsys, base + [str(trained)])
    assert code == 0, err
    assert json.loads(out)["lr"] == lr_auto.device_lr(HeadCurvature(r["config"]["lr_auto"]["head_lambda_max"], 0))
    code, out, err = _cli(capsys, base + [str(models[1])])
    assert code == 0 and json.loads(out)["lr"] == lr_auto.FALLBACK_DEVICE_LR
    code, out, err = _cli(capsys, base + [str(models[1]), "--lr", "0.125"])
    assert code == 0 and json.loads(out)["lr"] == 0.125
