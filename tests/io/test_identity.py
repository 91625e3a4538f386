"""Content identities: a tensor hash that sees names, dtypes, shapes and bytes; an int8 model identity
that survives a header-only rewrite of its file and changes with anything the model computes with."""

from dataclasses import replace

import numpy as np
import pytest

from mcutrain.io.identity import (RECIPE_KEYS, qmodel_identity, quantization_recipe, short,
                                  tensors_sha256)
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.quant.qmodel import QTensor
from tests.helpers.models import quantized

BASE = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int8)}


@pytest.mark.parametrize("changed", [
    {"a2": BASE["a"], "b": BASE["b"]},                                   # a name
    {"a": BASE["a"].astype(np.float64), "b": BASE["b"]},                 # a dtype
    {"a": BASE["a"].reshape(3, 2), "b": BASE["b"]},                      # a shape, same bytes
    {"a": BASE["a"] + np.float32(1e-6), "b": BASE["b"]},                 # the bytes
    {"a": BASE["a"]},                                                    # a tensor less
])
def test_tensor_hash_sees_every_part(changed):
    assert tensors_sha256(changed) != tensors_sha256(BASE)


def test_tensor_hash_ignores_order_and_memory_layout():
    reordered = {"b": BASE["b"], "a": np.asfortranarray(BASE["a"])}
    big_endian = {"a": BASE["a"].astype(">f4"), "b": BASE["b"]}
    assert tensors_sha256(reordered) == tensors_sha256(big_endian) == tensors_sha256(BASE)


def test_int8_identity_survives_a_rewrite_and_sees_the_model(tmp_path):
    q, _ = quantized("tiny", 32)
    ident = qmodel_identity(q)
    assert ident.startswith("tiny:") and short(ident) == ident[:len("tiny:") + 12]
    save_qmodel(tmp_path / "a.safetensors", q)
    noted = replace(q, provenance={**q.provenance, "note": "rewritten"})
    save_qmodel(tmp_path / "b.safetensors", noted)
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "b.safetensors").read_bytes()
    assert qmodel_identity(load_qmodel(tmp_path / "a.safetensors")) == ident
    assert qmodel_identity(load_qmodel(tmp_path / "b.safetensors")) == ident
    y = q.first_conv.y
    other_scale = q.with_convs([replace(q.first_conv, y=QTensor(y.scale * (1 + 1e-9), y.zero))] + q.convs()[1:],
                               q.classifier)
    assert qmodel_identity(other_scale) != ident
    weight = q.first_conv.weight.copy()
    weight.flat[0] ^= 1
    assert qmodel_identity(q.with_convs([replace(q.first_conv, weight=weight)] + q.convs()[1:],
                                        q.classifier)) != ident
    assert qmodel_identity(replace(q, resolution=48)) != ident


def test_recipe_needs_every_key():
    full = {k: 1 for k in RECIPE_KEYS} | {"range_bits": 12}
    assert quantization_recipe(full) == {k: 1 for k in RECIPE_KEYS}
    for k in RECIPE_KEYS:
        assert quantization_recipe({key: v for key, v in full.items() if key != k}) is None
    assert quantization_recipe({"imported_from": "x.pkl"}) is None
