"""An int8 model's identity sees its general conv geometry and its H x W input (issue 13), and zoo models
keep the identity they had (no geometry entries for the zoo's convs)."""

from dataclasses import replace

from mcutrain.io.identity import qmodel_identity, qmodel_parameters
from tests.helpers.geometry import general_qmodel
from tests.helpers.models import quantized


def _with_first(q, **changes):
    return q.with_convs([replace(q.first_conv, **changes)] + q.convs()[1:], q.classifier)


def test_padding_strides_and_input_size_change_the_identity():
    q = general_qmodel("mixed")
    ident = qmodel_identity(q)
    top, bottom, left, right = q.first_conv.padding
    assert qmodel_identity(_with_first(q, pad=(bottom, top, left, right))) != ident
    assert qmodel_identity(_with_first(q, stride_w=2)) != ident
    assert qmodel_identity(replace(q, input_hw=(20, 27))) != ident


def test_zoo_models_have_no_geometry_entries():
    q, _ = quantized("tiny", 32)
    params = qmodel_parameters(q)
    assert "input_hw" not in params and all(len(c) == 8 for c in params["convs"])
