"""Schemes for an architecture of the user's: the baselines work, the paper's schemes do not apply."""

import pytest

from mcutrain.models import spec_from_json, zoo_spec
from mcutrain.models.zoo import remember_spec
from mcutrain.sparse import SchemeError, builtin_names, get_builtin, load_scheme, save_scheme
from tests.helpers.arch import custom_doc


def test_baselines_and_files_for_a_spec_that_is_in_no_zoo(tmp_path):
    spec = spec_from_json(custom_doc())
    assert builtin_names(spec) == ["full", "last-layer", "bias-only"]
    scheme = get_builtin("last-k:3", spec)
    assert scheme.model == "my-tiny" and scheme.bias_layers == (8, 9, 10)  # of 11 convs
    remember_spec(spec)  # as loading its model file does: save_scheme finds the spec by name
    save_scheme(tmp_path / "s.json", scheme)
    assert load_scheme(tmp_path / "s.json", spec) == scheme
    with pytest.raises(SchemeError, match=r"no built-in scheme 'paper-99kb' for my-tiny; available: full"):
        get_builtin("paper-99kb", spec)


def test_paper_schemes_only_for_the_paper_network_itself():
    assert "paper-99kb" in builtin_names(zoo_spec("mbv2-w0.35"))
    impostor = spec_from_json({**custom_doc(), "name": "mbv2-w0.35"}, embedded=True)
    assert builtin_names(impostor) == ["full", "last-layer", "bias-only"]
    with pytest.raises(SchemeError, match="no built-in scheme 'paper-99kb' for mbv2-w0.35"):
        get_builtin("paper-99kb", impostor)
