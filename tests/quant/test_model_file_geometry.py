"""Model files of int8 models with general conv geometry and a non-square, 1-channel input (issue 13)."""

import numpy as np
import pytest

from mcutrain.errors import CheckpointError
from mcutrain.quant.model_file import KIND, load_qmodel, save_qmodel
from tests.helpers.files import tamper, version_and_meta
from tests.helpers.geometry import general_qmodel


@pytest.fixture(scope="module")
def mixed():
    return general_qmodel("mixed")


@pytest.mark.parametrize("variant", ["mixed", "wide", "zoo_hw"])
def test_general_geometry_round_trips(tmp_path, variant):
    q = general_qmodel(variant)
    save_qmodel(tmp_path / "m.safetensors", q)
    back = load_qmodel(tmp_path / "m.safetensors")
    assert back.input_hw == q.input_hw and back.input_channels == q.input_channels
    for a, b in zip(q.convs(), back.convs(), strict=True):
        assert (a.kernel_hw, a.strides, a.padding, a.general_geometry) == (b.kernel_hw, b.strides, b.padding,
                                                                           b.general_geometry)
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.w_scale, b.w_scale)


def test_only_general_convs_carry_geometry_keys(tmp_path, mixed):
    save_qmodel(tmp_path / "m.safetensors", mixed)
    _, meta = version_and_meta(tmp_path / "m.safetensors", KIND)
    general = {c.name for c in mixed.convs() if c.general_geometry}
    assert {c["name"] for c in meta["convs"] if "kernel_hw" in c} == general
    assert meta["convs"][0]["in_ch"] == 1 and meta["input_hw"] == [20, 28]
    assert meta["convs"][0]["pad"] == [1, 2, 1, 1] and meta["convs"][0]["stride_w"] == 1


FORGED = {
    "kernel too big": (lambda m, t: m["convs"][0].__setitem__("kernel_hw", [12, 3]), r"first_conv\.kernel_hw\[0\]"),
    "partial geometry": (lambda m, t: m["convs"][0].pop("pad"), r"kernel_hw, stride_w and pad together"),
    "stride_w 3": (lambda m, t: m["convs"][0].__setitem__("stride_w", 3), r"first_conv\.stride_w"),
    "pad not below kernel": (lambda m, t: m["convs"][0].__setitem__("pad", [5, 0, 0, 0]), r"padding below the kernel"),
    "in_ch 2": (lambda m, t: m["convs"][0].__setitem__("in_ch", 2), r"first_conv\.in_ch: 2"),
    "in_ch on a block conv": (lambda m, t: m["convs"][1].__setitem__("in_ch", 1), r"convs\[1\]\.in_ch: unknown"),
    "input too small": (lambda m, t: m.__setitem__("input_hw", [4, 28]), r"input_hw\[0\]"),
    "residual shapes": (lambda m, t: m["convs"][1].update(kernel_hw=[3, 3], stride_w=1, pad=[0, 0, 0, 0]),
                        r"blocks\.0\.add: joins 10x28 and 8x26"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_geometry_is_refused_by_name(tmp_path, mixed, case):
    change, message = FORGED[case]
    path = tmp_path / "m.safetensors"
    save_qmodel(path, mixed)
    tamper(path, KIND, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_qmodel(path)
    assert "\n" not in str(err.value)
