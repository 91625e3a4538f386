"""The paper's 15 schemes as DESIGN.md section 5 lists them, and the baselines for any model."""

import pytest

from mcutrain.errors import ModelError
from mcutrain.models import get_spec
from mcutrain.sparse import SchemeError, builtin_aliases, builtin_names, get_builtin, resolve, validate
from mcutrain.sparse.builtin import PAPER_ROWS
from mcutrain.sparse.scheme import conv_names

PAPER_MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
PAPER_NAMES = {
    "mcunet-5fps": ["paper-49kb", "paper-74kb", "paper-99kb", "paper-124kb", "paper-148kb"],
    "mbv2-w0.35": ["paper-49kb", "paper-73kb", "paper-99kb", "paper-123kb", "paper-138kb"],
    "proxyless-w0.3": ["paper-49kb", "paper-74kb", "paper-98kb", "paper-120kb", "paper-148kb"],
}
ALL_PAPER = [(m, n) for m in PAPER_MODELS for n in PAPER_NAMES[m]]
N_CONVS = {"mcunet-5fps": 42, "mbv2-w0.35": 51, "proxyless-w0.3": 60, "tiny": 15}


def test_names_per_model():
    for model in PAPER_MODELS:
        assert builtin_names(model) == PAPER_NAMES[model] + ["full", "last-layer", "bias-only"]
    assert builtin_names("tiny") == ["full", "last-layer", "bias-only"]
    assert sum(len(rows) for rows in PAPER_ROWS.values()) == 15


@pytest.mark.parametrize("model, name", ALL_PAPER)
def test_paper_scheme_validates_and_its_weights_lie_in_the_bias_updated_suffix(model, name):
    spec = get_spec(model)
    scheme = get_builtin(name, model)
    validate(scheme, spec, resolution=128)
    n = N_CONVS[model]
    k = len(scheme.bias_layers)
    assert scheme.bias_layers == tuple(range(n - k, n))
    assert all(n - k <= i < n for i in scheme.weight_layers)
    assert all(r in (0.125, 0.25, 0.5, 1.0) for _, r in scheme.weight_ratios)
    plan = resolve(scheme, spec)
    assert all(c.bias for c in plan.convs if c.updates_weight)


# Hand-copied from DESIGN.md section 5 AFTER dropping ratio-0 layers: (n_bias, {layer: ratio}).
EXPECTED = {
    ("mcunet-5fps", "paper-49kb"): (20, {24: .25, 27: .5, 30: .5}),
    ("mcunet-5fps", "paper-74kb"): (21, {21: 1, 24: 1, 27: .5, 30: 1}),
    ("mcunet-5fps", "paper-99kb"): (22, {21: 1, 24: 1, 27: 1, 30: 1, 36: .125, 39: .25}),
    ("mcunet-5fps", "paper-124kb"): (24, {21: .25, 24: 1, 27: 1, 30: 1, 33: .5, 39: .5}),
    ("mcunet-5fps", "paper-148kb"): (23, {21: 1, 24: 1, 27: 1, 30: 1, 36: 1, 39: .5}),
    ("mbv2-w0.35", "paper-49kb"): (16, {36: 1, 39: 1, 41: .25, 42: .125, 45: .125, 48: .125, 49: .125}),
    ("mbv2-w0.35", "paper-73kb"): (20, {32: .125, 33: .5, 36: .5, 39: 1, 41: .25, 42: .125, 45: .125, 48: 1}),
    ("mbv2-w0.35", "paper-99kb"): (25, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .125, 45: .5, 48: 1}),
    ("mbv2-w0.35", "paper-123kb"): (31, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .5, 45: 1, 48: 1}),
    ("mbv2-w0.35", "paper-138kb"): (34, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: 1, 45: 1, 48: 1}),
    ("proxyless-w0.3", "paper-49kb"): (21, {39: .25, 42: 1, 45: 1, 51: .125, 54: .25, 57: .25}),
    ("proxyless-w0.3", "paper-74kb"): (28, {33: .5, 36: .25, 39: 1, 42: 1, 45: 1, 51: .5, 54: .25, 57: .5}),
    ("proxyless-w0.3", "paper-98kb"): (25, {36: 1, 39: .5, 42: 1, 45: 1, 48: .25, 51: .5, 54: 1, 57: 1}),
    ("proxyless-w0.3", "paper-120kb"): (32, {36: 1, 39: 1, 42: 1, 45: 1, 48: .5, 51: 1, 54: 1, 57: 1}),
    ("proxyless-w0.3", "paper-148kb"): (45, {36: 1, 39: 1, 42: 1, 45: 1, 48: 1, 51: 1, 54: 1, 57: 1}),
}


@pytest.mark.parametrize("model, name", ALL_PAPER)
def test_paper_scheme_contents(model, name):
    scheme = get_builtin(name, model)
    n_bias, weights = EXPECTED[(model, name)]
    assert (scheme.model, scheme.name) == (model, name)
    assert len(scheme.bias_layers) == n_bias
    assert dict(scheme.weight_ratios) == weights
    assert scheme.description.startswith("MCUNetV3 paper scheme")


def test_paper_weight_layers_are_mostly_first_pointwise_convs_of_later_blocks():
    """The paper: the first 1x1 conv of a block contributes most. Of the 102 updated weight layers
    (ratio > 0) all but four are pointwise1; the four are mbv2 convs 32, 41 (pointwise2) and 49
    (depthwise), all at ratio <= 1/4, and none lies in the first half of its network."""
    others, total = [], 0
    for model, name in ALL_PAPER:
        names = conv_names(get_spec(model))
        scheme = get_builtin(name, model)
        assert min(scheme.weight_layers) >= N_CONVS[model] // 2
        total += len(scheme.weight_ratios)
        others += [(model, i, names[i], r) for i, r in scheme.weight_ratios if not names[i].endswith("pointwise1")]
    assert sorted(set(others)) == [("mbv2-w0.35", 32, "blocks.10.pointwise2", 0.125),
                                   ("mbv2-w0.35", 41, "blocks.13.pointwise2", 0.25),
                                   ("mbv2-w0.35", 49, "blocks.16.depthwise", 0.125)]
    assert len(others) == 4 and total == 102  # conv 41 appears in two schemes


def test_mcunet_conv_21_is_block7_pointwise1():
    assert conv_names(get_spec("mcunet-5fps"))[21] == "blocks.7.pointwise1"


def test_proxyless_paper_99kb_is_an_alias_of_its_98kb_scheme():
    assert builtin_aliases("proxyless-w0.3") == {"paper-99kb": "paper-98kb"}
    assert get_builtin("paper-99kb", "proxyless-w0.3") == get_builtin("paper-98kb", "proxyless-w0.3")
    assert builtin_aliases("mcunet-5fps") == {}


@pytest.mark.parametrize("model", list(N_CONVS))
def test_baselines(model):
    n = N_CONVS[model]
    full = get_builtin("full", model)
    assert full.bias_layers == tuple(range(n)) and full.weight_ratios == tuple((i, 1.0) for i in range(n))
    last = get_builtin("last-layer", model)
    assert last.bias_layers == () and last.weight_ratios == ()
    bias = get_builtin("bias-only", model)
    assert bias.bias_layers == tuple(range(n)) and bias.weight_ratios == ()
    k3 = get_builtin("last-k:3", model)
    assert k3.name == "last-k:3"
    assert k3.bias_layers == (n - 3, n - 2, n - 1) and k3.weight_ratios == tuple((i, 1.0) for i in range(n - 3, n))
    all_k = get_builtin(f"last-k:{n}", model)
    assert (all_k.bias_layers, all_k.weight_ratios) == (full.bias_layers, full.weight_ratios)
    assert get_builtin("last-k:0", model).bias_layers == ()
    for scheme in (full, last, bias, k3):
        validate(scheme, get_spec(model))


@pytest.mark.parametrize("name", ["last-k:16", "last-k:-1"])
def test_last_k_out_of_range(name):
    with pytest.raises(SchemeError, match=r"last-k:-?\d+: N: must be an integer from 0 to 15"):
        get_builtin(name, "tiny")


def test_unknown_name_lists_what_is_available():
    with pytest.raises(SchemeError) as info:
        get_builtin("paper-50kb", "proxyless-w0.3")
    msg = str(info.value)
    for expected in ["paper-49kb", "paper-98kb", "paper-99kb (= paper-98kb)", "full", "last-layer",
                     "bias-only", "last-k:N (N = 0..60)", ".json"]:
        assert expected in msg


def test_paper_schemes_do_not_exist_for_tiny_and_unknown_models_are_refused():
    with pytest.raises(SchemeError, match="no built-in scheme 'paper-49kb' for tiny"):
        get_builtin("paper-49kb", "tiny")
    with pytest.raises(ModelError, match="unknown model"):
        get_builtin("full", "resnet")
