"""Property: any valid scheme survives JSON, and its plan keeps every weight layer bias-updated."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.models.specs import ALL_SPECS
from mcutrain.sparse import ALLOWED_RATIOS, Scheme, resolve, scheme_from_json, scheme_to_json
from mcutrain.sparse.scheme import backbone_convs


@st.composite
def valid_schemes(draw):
    """A model, a set of bias layers (a suffix or any subset), and weights on some of those layers."""
    spec = draw(st.sampled_from(ALL_SPECS))
    n = len(backbone_convs(spec))
    if draw(st.booleans()):
        k = draw(st.integers(0, n))
        bias = list(range(n - k, n))
    else:
        bias = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    weighted = draw(st.lists(st.sampled_from(bias), unique=True)) if bias else []
    ratios = [(i, draw(st.sampled_from(ALLOWED_RATIOS))) for i in weighted]
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
    name = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn"]),
                   max_size=20).filter(str.isprintable)  # a name is a title line (scheme._name)
    return spec, Scheme(spec.name, draw(name), tuple(bias), tuple(ratios), draw(text))


@settings(max_examples=150, deadline=None)
@given(valid_schemes())
def test_valid_schemes_round_trip_through_json_and_resolve_keeps_weights_bias_updated(case):
    spec, scheme = case
    text = json.dumps(scheme_to_json(scheme, spec))
    assert scheme_from_json(json.loads(text), spec) == scheme
    plan = resolve(scheme, spec)
    ratios = dict(scheme.weight_ratios)
    for conv in plan.convs:
        assert conv.bias == (conv.index in scheme.bias_layers)
        assert conv.weight_ratio == ratios.get(conv.index, 0.0)
        if conv.updates_weight:
            assert conv.bias
            assert 1 <= conv.kept_channels <= conv.channels
        else:
            assert conv.kept_channels == 0
    assert plan.classifier is True
