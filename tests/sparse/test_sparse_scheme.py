"""Scheme data, validation errors, the JSON format, loading/saving, and the resolved plan."""

import json

import pytest

from mcutrain.errors import McutrainError
from mcutrain.models import conv_shapes, get_spec
from mcutrain.sparse import (
    Scheme,
    SchemeError,
    load_scheme,
    resolve,
    save_scheme,
    scheme_from_json,
    scheme_to_json,
    validate,
)
from mcutrain.sparse.scheme import conv_names, kept_channels, layer_index

MCUNET = get_spec("mcunet-5fps")  # 42 convs
TINY = get_spec("tiny")  # 15 convs


def doc(**changes):
    """A valid mcunet-5fps document, with ``changes`` applied (None deletes a key)."""
    base = {"format": "mcutrain-scheme", "version": 1, "model": "mcunet-5fps", "name": "t",
            "bias": {"last": 22}, "weights": [{"layer": 21, "ratio": 1}, {"layer": 24, "ratio": 0.25}],
            "description": "d"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def error_of(document, spec=MCUNET) -> str:
    with pytest.raises(SchemeError) as info:
        scheme_from_json(document, spec)
    return str(info.value)


# --- the data type --------------------------------------------------------------------------------

def test_scheme_sorts_layers_so_equal_schemes_compare_equal():
    a = Scheme("tiny", "s", (14, 12, 13), ((14, 1.0), (12, 0.5)))
    b = Scheme("tiny", "s", (12, 13, 14), ((12, 0.5), (14, 1.0)))
    assert a == b and hash(a) == hash(b)
    assert a.bias_layers == (12, 13, 14) and a.weight_layers == (12, 14)


def test_scheme_error_is_a_user_error():
    assert issubclass(SchemeError, McutrainError)


def test_conv_21_of_mcunet_is_block7_pointwise1():
    assert conv_names(MCUNET)[21] == "blocks.7.pointwise1"
    assert len(conv_names(MCUNET)) == len(conv_shapes(MCUNET, 128)) == 42


# --- validation -----------------------------------------------------------------------------------

def test_valid_scheme_passes():
    validate(Scheme("tiny", "ok", (10, 11, 12), ((11, 0.125), (12, 1.0))), TINY, resolution=32)


@pytest.mark.parametrize("bias, weights, needle", [
    ((15,), (), "layer 15 does not exist in tiny; use a conv index 0..14"),
    ((-1,), (), "layer -1 does not exist"),
    ((14,), ((14, 0.3),), "layer 14 (blocks.4.pointwise2) has ratio 0.3"),
    ((14,), ((14, 0.0),), "leave the layer out of the weights"),
    ((14,), ((14, 2.0),), "one of 1/8, 1/4, 1/2, 1"),
    ((13,), ((12, 1.0),), "layer 12 (blocks.4.pointwise1) updates its weight but not its bias"),
    ((13, 13), (), "bias layers: layer 13 (blocks.4.depthwise) is listed 2 times"),
    ((13,), ((13, 1.0), (13, 0.5)), "weights: layer 13 (blocks.4.depthwise) is listed 2 times"),
])
def test_validate_names_the_problem(bias, weights, needle):
    with pytest.raises(SchemeError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        validate(Scheme("tiny", "bad", bias, weights), TINY)


def test_validate_refuses_a_scheme_for_another_model():
    with pytest.raises(SchemeError, match="is for model 'mcunet-5fps'; it cannot be used with model 'tiny'"):
        validate(Scheme("mcunet-5fps", "x", (), ()), TINY)


@pytest.mark.parametrize("resolution", [0, -8, 1.5, True])
def test_validate_refuses_bad_resolution(resolution):
    with pytest.raises(SchemeError, match="resolution must be a positive integer"):
        validate(Scheme("tiny", "x", (), ()), TINY, resolution=resolution)


def test_weight_without_bias_suggests_the_last_k_that_would_cover_it():
    msg = str(pytest.raises(SchemeError, validate, Scheme("mcunet-5fps", "x", (30,), ((21, 1.0),)), MCUNET).value)
    assert "blocks.7.pointwise1" in msg and "at least 21" in msg


# --- JSON -----------------------------------------------------------------------------------------

def test_json_document_is_read_with_last_k_and_names():
    scheme = scheme_from_json(doc(weights=[{"layer": "blocks.7.pointwise1", "ratio": 1},
                                           {"layer": 24, "ratio": 0.25}]), MCUNET)
    assert scheme.bias_layers == tuple(range(20, 42))
    assert scheme.weight_ratios == ((21, 1.0), (24, 0.25))
    assert (scheme.model, scheme.name, scheme.description) == ("mcunet-5fps", "t", "d")


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "nul\x00", "esc\x1b[2J"])
def test_a_name_is_printable_text_on_one_line(name):
    """It is a title line (the CLI, reports, the generated C's first comment)."""
    document = doc()
    document["name"] = name
    with pytest.raises(McutrainError, match="'name' must be printable text on one line"):
        scheme_from_json(document, MCUNET)


def test_json_round_trip_uses_last_k_for_a_suffix_and_layers_otherwise():
    suffix = scheme_from_json(doc(), MCUNET)
    assert scheme_to_json(suffix)["bias"] == {"last": 22}
    listed = scheme_from_json(doc(bias={"layers": [21, 24, "blocks.13.pointwise1"]}, weights=[]), MCUNET)
    out = scheme_to_json(listed)
    assert out["bias"] == {"layers": [21, 24, 39]}
    for scheme in (suffix, listed):
        assert scheme_from_json(json.loads(json.dumps(scheme_to_json(scheme))), MCUNET) == scheme


def test_optional_keys_default_to_no_weights_and_empty_description():
    scheme = scheme_from_json(doc(weights=None, description=None), MCUNET)
    assert scheme.weight_ratios == () and scheme.description == ""


@pytest.mark.parametrize("changes, needle", [
    ({"format": "something"}, "not an mcutrain scheme"),
    ({"version": 2}, "version 2 is not supported"),
    ({"version": True}, "version True is not supported"),
    ({"weigths": []}, "unknown key(s) 'weigths'"),
    ({"model": "tiny"}, "is for model 'tiny'; it cannot be used with model 'mcunet-5fps'"),
    ({"name": 3}, "'name' must be a string"),
    ({"bias": None}, "'bias' must be"),
    ({"bias": {"last": 2, "layers": [1]}}, "'bias' must be"),
    ({"bias": {"last": -1}}, "bias.last: must be an integer from 0 to 42"),
    ({"bias": {"last": 43}}, "bias.last: must be an integer from 0 to 42"),
    ({"bias": {"last": 2.0}}, "bias.last: must be an integer"),
    ({"bias": {"layers": "21"}}, "bias.layers must be a list"),
    ({"bias": {"layers": [42]}}, "layer 42 does not exist in mcunet-5fps; use a conv index 0..41"),
    ({"bias": {"layers": ["blocks.7.pointwse1"]}}, "did you mean 'blocks.7.pointwise1'"),
    ({"bias": {"layers": ["blocks.0.pointwise1"]}}, "blocks.B.pointwise1 (B in 1..13)"),
    ({"bias": {"layers": [21, "blocks.7.pointwise1"]}, "weights": []}, "layer 21 (blocks.7.pointwise1) is listed 2 times"),
    ({"bias": {"layers": [True]}}, "a layer must be a conv index or name"),
    ({"weights": {"layer": 21}}, "'weights' must be a list"),
    ({"weights": [{"layer": 21}]}, "each weights entry must be"),
    ({"weights": [{"layer": 21, "ratio": "1/8"}]}, "layer 21 (blocks.7.pointwise1) has ratio '1/8'"),
    ({"weights": [{"layer": 21, "ratio": 0.3}]}, "has ratio 0.3"),
    ({"weights": [{"layer": 21, "ratio": 0}]}, "leave the layer out of the weights"),
    ({"weights": [{"layer": 19, "ratio": 1}]}, "layer 19 (blocks.6.depthwise) updates its weight but not its bias"),
])
def test_bad_documents_are_refused_with_a_message_saying_why(changes, needle):
    assert needle in error_of(doc(**changes))


def test_a_document_must_be_an_object():
    assert "must be a JSON object" in error_of([1, 2])


# --- files ----------------------------------------------------------------------------------------

def test_save_then_load_gives_the_same_scheme(tmp_path):
    scheme = scheme_from_json(doc(), MCUNET)
    path = tmp_path / "sub" / "s.json"
    save_scheme(path, scheme)
    assert json.loads(path.read_text())["format"] == "mcutrain-scheme"
    assert load_scheme(str(path), "mcunet-5fps") == scheme
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_save_refuses_an_invalid_scheme_and_writes_nothing(tmp_path):
    path = tmp_path / "s.json"
    with pytest.raises(SchemeError, match="updates its weight but not its bias"):
        save_scheme(path, Scheme("tiny", "x", (), ((3, 1.0),)))
    assert not path.exists()


def test_load_scheme_errors_name_the_file(tmp_path):
    with pytest.raises(SchemeError, match="no such scheme file"):
        load_scheme(str(tmp_path / "missing.json"), "tiny")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SchemeError, match="broken.json: not a JSON file"):
        load_scheme(str(broken), "tiny")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc()))
    with pytest.raises(SchemeError, match=r"other.json: scheme 't' is for model 'mcunet-5fps'"):
        load_scheme(str(other), "tiny")


def test_load_scheme_reads_builtin_names_and_refuses_unknown_ones():
    assert load_scheme("paper-99kb", "mcunet-5fps").weight_layers == (21, 24, 27, 30, 36, 39)
    with pytest.raises(SchemeError, match="no built-in scheme 'paper-1kb' for tiny; available: full"):
        load_scheme("paper-1kb", "tiny")


# --- resolved plan --------------------------------------------------------------------------------

def test_kept_channels_floor_but_at_least_one():
    assert kept_channels(48, 0.25) == 12
    assert kept_channels(3, 0.125) == 1  # floor(0.375) = 0, raised to 1
    assert kept_channels(20, 0.125) == 2  # floor(2.5)
    assert kept_channels(20, 0.0) == 0


def test_resolve_gives_one_entry_per_conv_with_ratio_counting_input_or_depthwise_channels():
    plan = resolve(Scheme("tiny", "s", (0, 11, 12, 13), ((0, 0.125), (12, 0.5), (13, 0.25))), TINY)
    assert [c.index for c in plan.convs] == list(range(15)) and plan.classifier is True
    first, pw1, dw, pw2 = plan.convs[0], plan.convs[12], plan.convs[13], plan.convs[14]
    assert (first.kind, first.channels, first.kept_channels) == ("normal", 3, 1)
    assert (pw1.name, pw1.kind, pw1.channels, pw1.kept_channels) == ("blocks.4.pointwise1", "pointwise", 16, 8)
    assert (dw.kind, dw.channels, dw.kept_channels) == ("depthwise", 32, 8)
    assert (pw2.bias, pw2.weight_ratio, pw2.kept_channels, pw2.trained) == (False, 0.0, 0, False)
    assert plan.convs[11].bias and not plan.convs[11].updates_weight


def test_plan_facts_for_a_compiler():
    plan = resolve(Scheme("tiny", "s", (10, 12, 13, 14), ((12, 1.0),)), TINY)
    assert plan.lowest_trained_conv == 10
    assert [i for i in range(15) if plan.needs_output_grad(i)] == [10, 11, 12, 13, 14]
    assert [i for i in range(15) if plan.needs_input_grad(i)] == [11, 12, 13, 14]
    assert [i for i in range(15) if plan.saves_input(i)] == [12]
    assert [c.index for c in plan.trained_convs] == [10, 12, 13, 14]


def test_classifier_only_plan_needs_no_backbone_gradient():
    plan = resolve(Scheme("tiny", "s", (), ()), TINY)
    assert plan.lowest_trained_conv is None and plan.classifier
    assert not any(plan.needs_output_grad(i) or plan.needs_input_grad(i) for i in range(15))


def test_resolve_validates_first():
    with pytest.raises(SchemeError, match="updates its weight but not its bias"):
        resolve(Scheme("tiny", "s", (), ((12, 1.0),)), TINY)


def test_layer_index_accepts_index_and_name_equally():
    assert layer_index("blocks.4.depthwise", TINY, "w") == layer_index(13, TINY, "w") == 13
    assert layer_index("first_conv", TINY, "w") == 0


# --- limits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, needle", [
    ({"name": "x" * 129}, "'name' has 129 characters, over the limit of 128: 'xxx"),
    ({"description": "d" * 4097}, "'description' has 4097 characters, over the limit of 4096"),
    ({"bias": {"layers": list(range(42)) * 2}}, "bias.layers: 84 entries, but mcunet-5fps has only 42 convs"),
    ({"weights": [{"layer": 41, "ratio": 1}] * 43}, "weights: 43 entries, but mcunet-5fps has only 42 convs"),
])
def test_limits_are_stated(changes, needle):
    assert needle in error_of(doc(**changes))


def test_huge_values_give_a_bounded_message():
    message = error_of(doc(bias={"layers": ["x" * 1_000_000]}))
    assert "has no conv named 'xxx" in message and len(message) < 1000


def test_a_deeply_nested_scheme_file_is_refused_without_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"format": "mcutrain-scheme", "weights": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(SchemeError) as err:
        load_scheme(str(path), "tiny")
    assert str(err.value) == f"{path}: JSON nested 200001 levels deep, over the limit of 64 levels"
