"""How the demo recognises its bundled contribution analysis: by the recipe of the int8 model (the float
checkpoint's tensor identity + the quantizer's version and calibration settings) and the task, which a
fresh machine reproduces; and the bundled analysis is really of the model the demo quantizes."""

import json

import pytest

from mcutrain.assets import DEFAULT_BACKBONE, DEFAULT_BACKBONE_DATA, DEFAULT_CONTRIB
from mcutrain.data import load_dataset, sources
from mcutrain.demo import DemoConfig, bundled_analysis_matches
from mcutrain.io.identity import qmodel_identity
from mcutrain.quant.quantize import quantize_model
from mcutrain.train.checkpoint import load_checkpoint

TASK = DemoConfig().task


@pytest.fixture(scope="module")
def bundled():
    if not DEFAULT_CONTRIB.is_file():
        pytest.skip("no bundled contribution analysis")
    return json.loads(DEFAULT_CONTRIB.read_text())


@pytest.fixture(scope="module")
def demo_int8():
    """The bundled backbone quantized exactly as `mcutrain demo` quantizes it (its _quantize stage)."""
    if not sources.NAMED[DEFAULT_BACKBONE_DATA].available():
        pytest.skip(f"{DEFAULT_BACKBONE_DATA} not installed")
    model, info = load_checkpoint(DEFAULT_BACKBONE)
    seed = int(info.training.get("config", {}).get("seed", 0))
    own = load_dataset(DEFAULT_BACKBONE_DATA, seed=seed)
    return quantize_model(model, info, own.train, seed=seed, calibration_data=DEFAULT_BACKBONE_DATA)


def test_bundled_analysis_is_recognised_and_is_of_this_very_model(bundled, demo_int8):
    assert bundled_analysis_matches(bundled, demo_int8.provenance, TASK)
    # not only the same recipe: the same int8 model, bit for bit, on this CPU (under any capability)
    assert bundled["model"]["identity"] == qmodel_identity(demo_int8)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"calibration_batches": 8}, {"calibration_batch_size": 32}, {"calibration_data": "mnist-5k"},
    {"quantizer": "mcutrain-ptq-minmax-v1"}, {"source_tensors_sha256": "0" * 64},
])
def test_another_recipe_is_not_the_bundled_analysis(bundled, demo_int8, change):
    assert not bundled_analysis_matches(bundled, {**demo_int8.provenance, **change}, TASK)


def test_another_task_or_an_unknown_recipe_is_not_the_bundled_analysis(bundled, demo_int8):
    assert not bundled_analysis_matches(bundled, demo_int8.provenance, "digits")
    assert not bundled_analysis_matches(bundled, {"imported_from": "model.pkl"}, TASK)  # no recipe
    old = dict(bundled, model={k: v for k, v in bundled["model"].items() if k != "recipe"})
    assert not bundled_analysis_matches(old, demo_int8.provenance, TASK)


def test_a_given_analysis_of_another_model_is_refused(tmp_path, demo_int8):
    """`--contrib FILE` is checked as `mcutrain search` checks it: by the int8 model's content identity."""
    from mcutrain.demo import choose_analysis, Progress
    from mcutrain.errors import McutrainError

    doc = json.loads(DEFAULT_CONTRIB.read_text()) if DEFAULT_CONTRIB.is_file() else pytest.skip("no bundled analysis")
    doc["model"]["identity"] = "mbv2-w0.35:" + "0" * 64
    other = tmp_path / "other.contrib.json"
    other.write_text(json.dumps(doc))
    cfg = DemoConfig(contrib=str(other), out=str(tmp_path))
    with pytest.raises(McutrainError, match=r"other\.contrib\.json was made for another model: mbv2-w0\.35:000000000000"):
        choose_analysis(tmp_path / "model-int8.safetensors", demo_int8, cfg, Progress(total=1), {})
    cfg = DemoConfig(contrib=str(DEFAULT_CONTRIB), out=str(tmp_path))  # the very model: accepted
    assert choose_analysis(tmp_path / "model-int8.safetensors", demo_int8, cfg, Progress(total=1), {}).arch == "mbv2-w0.35"
