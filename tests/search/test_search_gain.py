"""predicted_gain, contrib.json validation and run selection, on hand-made data (no training)."""

import json

import pytest

from mcutrain.errors import McutrainError
from mcutrain.models.zoo import get_spec
from mcutrain.search import AnalysisConfig, bias_gain, contrib_from_doc, load_contrib, plan_runs, predicted_gain
from mcutrain.search.grid import default_bias_grid, select_bias_grid, select_layers, select_ratios
from mcutrain.sparse import Scheme

N = 15  # convs of `tiny`


def _doc(**changes) -> dict:
    doc = {"format": "mcutrain-contrib", "version": 1, "model": {"arch": "tiny", "n_convs": N},
           "baseline": 0.5,
           "bias": {"1": 0.01, "2": 0.02, "4": 0.06, "15": 0.10},
           "weight": {"14": {"0.125": 0.001, "1.0": 0.004}, "13": {"0.5": 0.01}, "11": {"1.0": -0.02}}}
    doc.update(changes)
    return doc


def _scheme(k: int, weights=()) -> Scheme:
    return Scheme("tiny", "hand", tuple(range(N - k, N)), tuple(weights))


def test_gain_is_bias_plus_sum_of_weights():
    c = contrib_from_doc(_doc())
    assert predicted_gain(c, _scheme(2)) == pytest.approx(0.02)
    assert predicted_gain(c, _scheme(2, [(14, 1.0), (13, 0.5)])) == pytest.approx(0.02 + 0.004 + 0.01)
    assert predicted_gain(c, _scheme(4, [(11, 1.0)])) == pytest.approx(0.06 - 0.02)
    assert predicted_gain(c, _scheme(0)) == 0.0  # the classifier only is the baseline


def test_bias_gain_interpolates_between_grid_points():
    c = contrib_from_doc(_doc())
    assert bias_gain(c, 3) == pytest.approx(0.04)  # between k=2 (0.02) and k=4 (0.06)
    assert bias_gain(c, 9) == pytest.approx(0.06 + (9 - 4) / (15 - 4) * 0.04)
    assert bias_gain(c, 1) == pytest.approx(0.01)
    short = contrib_from_doc(_doc(bias={"1": 0.01, "2": 0.03}, weight={"14": {"1.0": 0.0}}))
    assert bias_gain(short, 7) == pytest.approx(0.03)  # beyond the grid: the deepest measured value
    assert predicted_gain(short, Scheme("tiny", "list", (3, 9), ())) == pytest.approx(0.03)  # 2 layers = k 2


def test_gain_refuses_what_was_not_measured():
    c = contrib_from_doc(_doc())
    with pytest.raises(McutrainError, match="conv 12 at 0.5"):
        predicted_gain(c, _scheme(3, [(12, 0.5)]))
    with pytest.raises(McutrainError, match="conv 14 at 0.25"):
        predicted_gain(c, _scheme(3, [(14, 0.25)]))
    with pytest.raises(McutrainError, match="for 'mcunet-5fps'"):
        predicted_gain(c, Scheme("mcunet-5fps", "x", (), ()))
    assert (14, 0.125) in c.weight_options() and len(c.weight_options()) == 4


@pytest.mark.parametrize("changes, message", [
    ({"format": "mcutrain-scheme"}, "not a contribution analysis"),
    ({"version": 3}, "version 3"),  # versions 1 and 2 are read
    ({"bias": {"16": 0.1, "1": 0.0, "2": 0.0, "4": 0.0}}, "integer 1..15"),
    ({"weight": {"14": {"0.3": 0.1}}}, "ratio '0.3'"),
    ({"weight": {"10": {"1.0": 0.1}}}, r"bias runs k = model.n_convs - layer = \[5\] \(model.n_convs is 15\)"),
    ({"baseline": 1.5}, "baseline"),
    ({"bias": {"1": "x"}}, r"bias\[1\]"),
    ({"model": {}}, r"'model.n_convs' must be an integer in \[1, 3073\], got None"),
    ({"model": []}, "'model' must be an object"),
    ({"data": {"num_classes": 10**9}}, r"'data.num_classes' must be an integer in \[2, 10000\]"),
    ({"data": {"val_used": 0}}, r"'data.val_used' must be an integer in \[1, "),
    ({"version": True}, "version True is not supported"),
    ({"extra": 1}, "unknown key"),
])
def test_bad_documents_are_refused(changes, message):
    with pytest.raises(McutrainError, match=message):
        contrib_from_doc(_doc(**changes))


def test_load_contrib_names_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(version=7)))
    with pytest.raises(McutrainError, match=f"{path}: .*version 7"):
        load_contrib(path)
    path.write_text(json.dumps(_doc()))
    assert load_contrib(path).weight[13] == {0.5: 0.01}
    with pytest.raises(McutrainError, match="no such file"):
        load_contrib(tmp_path / "missing.json")


def test_selections():
    spec = get_spec("tiny")
    assert select_layers(None, spec) == tuple(range(7, 15))
    assert select_layers("last:3", spec) == (12, 13, 14)
    assert select_layers("3..5,blocks.4.depthwise,14", spec) == (3, 4, 5, 13, 14)
    assert select_layers((1, "first_conv"), spec) == (0, 1)
    assert select_ratios("1/8,0.5,1") == (0.125, 0.5, 1.0) and len(select_ratios(None)) == 4
    assert default_bias_grid(42) == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 42)
    assert select_bias_grid("1..3,9", N) == (1, 2, 3, 9)
    bad = [(select_ratios, "0.3"), (select_bias_grid, "16"), (select_bias_grid, "1,,2"),
           (select_layers, "blocks.9.depthwise"), (select_layers, "5..3"), (select_layers, "last:0")]
    for select, text in bad:
        with pytest.raises(McutrainError):
            select(text) if select is select_ratios else select(text, N if select is select_bias_grid else spec)


def test_plan_adds_the_bias_runs_the_weight_runs_need():
    plan = plan_runs(AnalysisConfig("m", "digits", "o", layers="9,14", ratios="1", bias_grid="3"), get_spec("tiny"))
    assert plan.bias_k == (1, 3, 6)
    labels = [r.label for r in plan.runs]
    assert labels == ["last-layer", "b1", "b3", "b6", "w9@1+b6", "w14@1+b1"]
