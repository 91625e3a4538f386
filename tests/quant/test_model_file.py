"""The int8 model file: exact round trip; wrong, corrupt or tampered files are refused by name."""

import numpy as np
import pytest

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.quant.model_file import KIND, load_qmodel, save_qmodel
from tests.helpers import int8_numpy
from tests.helpers.files import tamper, version_and_meta
from tests.helpers.models import int8_input, quantized


@pytest.fixture(scope="module")
def qmodel():
    return quantized("tiny", 32)[0]


def test_round_trip_is_exact(tmp_path, qmodel):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    back = load_qmodel(path)
    for a, b in zip(qmodel.convs(), back.convs()):
        assert a.name == b.name and a.x == b.x and a.y == b.y and (a.qmin, a.qmax) == (b.qmin, b.qmax)
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.requant[0], b.requant[0])
    x = int8_input(2, 32)
    assert np.array_equal(int8_numpy.forward(qmodel, x)[0], int8_numpy.forward(back, x)[0])


def _conv(m, name):
    return next(c for c in m["convs"] if c["name"] == name)


def _rescale(m, old: dict, scale: float) -> None:
    """Give every record of one activation tensor (its writer and all its readers) another scale: a
    forgery the chain check cannot see, so that what is tested is the range or multiplier rule."""
    old = dict(old)

    def walk(node):
        if isinstance(node, dict):
            if node == old:
                node["scale"] = scale
            else:
                for v in node.values():
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(m)


def _set_w_scale(t, name, value):
    t[f"{name}.w_scale"] = np.full_like(t[f"{name}.w_scale"], value)


# (forgery of meta / tensors with a valid checksum, the one-line message it must give)
FORGED = {
    "tensor dtype": (lambda m, t: t.__setitem__("blocks.1.depthwise.weight",
                                                t["blocks.1.depthwise.weight"].astype(np.int16)),
                     "blocks.1.depthwise.weight is int16"),
    "tensor missing": (lambda m, t: t.pop("classifier.bias"), "tensor classifier.bias is missing"),
    "tensor extra": (lambda m, t: t.__setitem__("blocks.9.depthwise.weight", np.zeros(3, np.int8)),
                     r"tensor blocks\.9\.depthwise\.weight is not part of tiny"),
    "negative scale": (lambda m, t: _conv(m, "blocks.0.pointwise2")["y"].__setitem__("scale", -1.0),
                       r"blocks\.0\.pointwise2\.y\.scale: -1\.0 is not a finite number in \[1e-09, 10000\]"),
    "nan scale": (lambda m, t: m["pool"]["y"].__setitem__("scale", float("nan")),
                  r"pool\.y\.scale: nan is not a finite number in \[1e-09, 10000\]"),
    "zero point": (lambda m, t: m["convs"][0]["x"].__setitem__("zero", 300),
                   r"first_conv\.x\.zero: 300 is not an integer in \[-128, 127\]"),
    "bool zero point": (lambda m, t: m["convs"][0]["y"].__setitem__("zero", True),
                        r"first_conv\.y\.zero: True is not an integer in \[-128, 127\]"),
    "unknown arch": (lambda m, t: m.__setitem__("arch", "resnet"), "unknown model 'resnet'"),
    "arch type": (lambda m, t: m.__setitem__("arch", ["tiny"]), r"arch: \['tiny'\] is not a string"),
    "add missing": (lambda m, t: m["adds"].__setitem__(0, None), "blocks.0: residual add missing"),
    "conv clamp": (lambda m, t: _conv(m, "blocks.1.pointwise1").__setitem__("qmin", 127),
                   r"blocks\.1\.pointwise1: clamp range \[127, 127\] is not inside int8"),
    "resolution true": (lambda m, t: m.__setitem__("resolution", True),
                        r"resolution: True is not an integer in \[8, 1024\]"),
    "resolution 100000": (lambda m, t: m.__setitem__("resolution", 100000),
                          r"resolution: 100000 is not an integer in \[8, 1024\]"),
    "resolution string": (lambda m, t: m.__setitem__("resolution", "32"),
                          r"resolution: '32' is not an integer in \[8, 1024\]"),
    "resolution 0": (lambda m, t: m.__setitem__("resolution", 0), r"resolution: 0 is not an integer"),
    "num_classes true": (lambda m, t: m.__setitem__("num_classes", True),
                         r"num_classes: True is not an integer in \[2, 10000\]"),
    "num_classes vs classes": (lambda m, t: m.__setitem__("num_classes", 4), r"classes: 3 names, num_classes is 4"),
    "duplicate classes": (lambda m, t: m.__setitem__("classes", ["0", "0", "1"]), "classes: names must be distinct"),
    "class name type": (lambda m, t: m["classes"].__setitem__(1, 7),
                        r"classes\[1\]: 7 is not a printable string of 1 to 256 characters"),
    "preprocessing offset 1e30": (lambda m, t: m["preprocessing"].__setitem__("offset", 1e30),
                                  r"preprocessing\.offset: 1e\+30 is not a finite number in \[0, 255\]"),
    "preprocessing offset 100": (lambda m, t: m["preprocessing"].__setitem__("offset", 100.0),
                                 r"preprocessing\.offset: 100, must be 128 for an int8 model"),
    "preprocessing scale": (lambda m, t: m["preprocessing"].__setitem__("scale", 0.5),
                            r"preprocessing\.scale: 0\.5 must equal input\.scale"),
    "preprocessing extra key": (lambda m, t: m["preprocessing"].__setitem__("mean", 0.5),
                                r"preprocessing\.mean: unknown field \(allowed: offset, scale\)"),
    "input zero": (lambda m, t: (m["input"].__setitem__("zero", 5), m["convs"][0]["x"].__setitem__("zero", 5)),
                   r"input\.zero: 5, must be 0"),
    "classifier x scale 1e30": (lambda m, t: m["classifier"]["x"].__setitem__("scale", 1e30),
                                r"classifier\.x\.scale: 1e\+30 is not a finite number in \[1e-09, 10000\]"),
    "classifier x with pool y 1e30": (lambda m, t: _rescale(m, m["pool"]["y"], 1e30),
                                      r"(classifier\.x|pool\.y)\.scale: 1e\+30 is not a finite number"),
    "add y out of the chain": (lambda m, t: m["adds"][0]["y"].__setitem__("scale", m["adds"][0]["y"]["scale"] * 1.106),
                               r"blocks\.1\.pointwise1\.x: \(scale .*\) must equal blocks\.0\.add\.y"),
    "add clamp outside int8": (lambda m, t: m["adds"][2].__setitem__("qmin", -200),
                               r"blocks\.2\.add\.qmin: -200 is not an integer in \[-128, 127\]"),
    "add clamp empty": (lambda m, t: m["adds"][2].__setitem__("qmax", -128),
                        r"blocks\.2\.add: clamp range \[-128, -128\] is not inside int8"),
    "frozen 99999": (lambda m, t: _conv(m, "blocks.1.depthwise").__setitem__("frozen_channels", [99999]),
                     r"blocks\.1\.depthwise\.frozen_channels\[0\]: 99999 is not an integer in \[0, \d+\]"),
    "frozen unsorted": (lambda m, t: _conv(m, "blocks.1.depthwise").__setitem__("frozen_channels", [2, 1]),
                        r"blocks\.1\.depthwise\.frozen_channels: channel indices must be strictly increasing"),
    "frozen not a list": (lambda m, t: _conv(m, "blocks.1.depthwise").__setitem__("frozen_channels", 3),
                          r"blocks\.1\.depthwise\.frozen_channels: 3 is not a list"),
    "degenerate not frozen": (lambda m, t: t["blocks.1.depthwise.w_scale"].__setitem__(2, 0.0),
                              r"blocks\.1\.depthwise\.frozen_channels: channel 2 has w_scale 0 < 1e-08 and "
                              r"must be frozen"),
    "w_scale nan": (lambda m, t: t["blocks.2.pointwise2.w_scale"].__setitem__(0, np.nan),
                    r"blocks\.2\.pointwise2\.w_scale: 1 scales outside \[0, 10000\] or not finite"),
    "classifier w_scale zero": (lambda m, t: t["classifier.w_scale"].__setitem__(0, 0.0),
                                r"classifier\.w_scale: 1 scales outside \(0, 10000\]"),
    "weight -128": (lambda m, t: t["blocks.0.depthwise.weight"].__setitem__((0, 0, 0, 0), -128),
                    r"blocks\.0\.depthwise\.weight: -128 is outside the symmetric range"),
    "conv multiplier over 2^30": (
        lambda m, t: (_rescale(m, m["convs"][0]["y"], 1e-8), _set_w_scale(t, "first_conv", 1e4)),
        r"first_conv: requantization multiplier x\.scale \* w_scale / y\.scale = 7\.8\d*e\+09 \(channel 0\) "
        r"must be below 2\^30"),
    "pool multiplier over 2^30": (
        lambda m, t: (_rescale(m, m["pool"]["y"], 1e-9), _rescale(m, m["pool"]["x"], 1e3)),
        r"pool: multiplier x\.scale / \(y\.scale \* positions\) = 6\.25e\+10 must be below 2\^30"),
    "stride": (lambda m, t: _conv(m, "blocks.1.depthwise").__setitem__("stride", 3),
               r"blocks\.1\.depthwise\.stride: 3 is not an integer in \[1, 2\]"),
    "groups 0": (lambda m, t: _conv(m, "blocks.1.depthwise").__setitem__("groups", 0),
                 r"blocks\.1\.depthwise\.groups: 0 is not an integer in \[1, \d+\]"),
    "conv name": (lambda m, t: m["convs"][1].__setitem__("name", "x"),
                  r"convs\[1\]\.name: conv 'x' found where the architecture has 'blocks\.0\.depthwise'"),
    "conv count": (lambda m, t: m["convs"].pop(), r"convs: 14 entries, expected 15"),
    "conv unknown key": (lambda m, t: m["convs"][0].__setitem__("act", "relu"), r"convs\[0\]\.act: unknown field"),
    "unknown meta key": (lambda m, t: m.__setitem__("resolutions", 32), r"resolutions: unknown field \(allowed: "),
    "spec in a version 1 file": (lambda m, t: m.__setitem__("spec", {}), r"spec: unknown field"),
    "provenance": (lambda m, t: m.__setitem__("provenance", [1]), r"provenance: \[1\] is not an object"),
    "pool missing y": (lambda m, t: m["pool"].pop("y"), r"pool\.y: missing"),
    "adds count": (lambda m, t: m["adds"].append(None), r"adds: 6 entries, expected 5"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_fields_are_refused_by_name(tmp_path, qmodel, case):
    change, message = FORGED[case]
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    tamper(path, KIND, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_qmodel(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_flipped_bit_anywhere_in_a_model_file_is_refused(tmp_path, qmodel):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    blob = path.read_bytes()
    n = 8 + int.from_bytes(blob[:8], "little")
    # every 29th byte of the header, ~100 bytes spread over the data, and the first and last bytes
    positions = sorted(set(range(0, n, 29)) | set(range(n, len(blob), max(1, (len(blob) - n) // 100)))
                       | {0, 7, n - 1, n, len(blob) - 1})
    for i in positions:
        bad = bytearray(blob)
        bad[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load_qmodel(path)
    assert len(positions) > 400


def test_what_would_be_refused_is_not_written(tmp_path, qmodel):
    from dataclasses import replace

    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=r"refusing to write .*m\.safetensors: resolution: 4096 is not an "
                                              r"integer in \[8, 1024\]"):
        save_qmodel(path, replace(qmodel, resolution=4096))
    assert not path.exists()


def test_the_paper_chain_and_limits_hold_for_every_real_model(qmodel):
    """The rules are those every model mcutrain makes already obeys (quantized, imported: see
    tests/quant/test_import.py), so they refuse forgeries, not real files."""
    from mcutrain.quant.model_file import check_qmodel

    assert check_qmodel(qmodel) is qmodel


def test_float_checkpoint_is_not_an_int8_model(tmp_path):
    path = tmp_path / "c.safetensors"
    write_container(path, "float-checkpoint", 1, {}, {"x": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match="expected 'int8-model'"):
        load_qmodel(path)


# ---- the architecture travels with the int8 file -------------------------------------------------


def test_zoo_models_are_written_name_only_as_version_1(tmp_path, qmodel):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    version, meta = version_and_meta(path, KIND)
    assert version == 1 and "spec" not in meta and meta["arch"] == "tiny"


@pytest.mark.parametrize("name", ["my-tiny", "tiny"])  # "tiny": a zoo name with other layers
def test_custom_architectures_are_embedded_and_the_file_is_the_truth(tmp_path, name):
    from mcutrain.models import spec_from_json, spec_to_json
    from mcutrain.models.zoo import forget_loaded_specs, zoo_spec
    from tests.helpers.arch import custom_doc

    spec = spec_from_json(custom_doc(name), embedded=True)
    q = quantized(spec, 16)[0]
    path = tmp_path / "m.safetensors"
    save_qmodel(path, q)
    version, meta = version_and_meta(path, KIND)
    assert version == 2 and meta["spec"] == spec_to_json(spec)
    forget_loaded_specs()  # a fresh process knows only the zoo
    back = load_qmodel(path)
    assert back.spec == spec and (name != "tiny" or back.spec != zoo_spec("tiny"))
    x = int8_input(2, 16)
    assert np.array_equal(int8_numpy.forward(q, x)[0], int8_numpy.forward(back, x)[0])
    tamper(path, KIND, lambda m, t: m["spec"]["blocks"][1].__setitem__("stride", 1))
    # the stored convs are checked against the embedded spec, as against a zoo spec
    with pytest.raises(CheckpointError, match=r"m\.safetensors: blocks\.1\.depthwise: stride/groups 2/16, "
                                              r"architecture has 1/16"):
        load_qmodel(path)


def test_a_version_2_file_must_carry_its_architecture(tmp_path):
    from mcutrain.models import spec_from_json
    from tests.helpers.arch import custom_doc

    path = tmp_path / "m.safetensors"
    save_qmodel(path, quantized(spec_from_json(custom_doc()), 16)[0])
    tamper(path, KIND, lambda m, t: m.pop("spec"))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: version 2 file without its architecture"):
        load_qmodel(path)


# ---- through the CLI: exit 2, one line naming the field, no traceback, no hang --------------------

CLI_CASES = ["resolution true", "resolution 100000", "preprocessing offset 1e30", "classifier x scale 1e30",
             "classifier x with pool y 1e30", "add clamp outside int8", "frozen 99999", "conv multiplier over 2^30",
             "pool multiplier over 2^30", "add y out of the chain"]


@pytest.mark.parametrize("command", ["compile", "finetune"])
@pytest.mark.parametrize("case", CLI_CASES)
def test_compile_and_finetune_refuse_forged_model_files(tmp_path, capsys, qmodel, command, case):
    from mcutrain.cli.main import main

    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    tamper(path, KIND, FORGED[case][0])
    argv = [command, str(path), "--scheme", "last-layer"]
    if command == "finetune":
        argv += ["--data", "npz:/nonexistent.npz", "--out", str(tmp_path / "out.safetensors"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mcutrain {command}: error: {path}: ")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_header_bit_flip_32_to_33_is_refused_through_compile(tmp_path, capsys, qmodel):
    """The tester's case: '2' -> '3' is one flipped bit (0x32 -> 0x33) in the resolution."""
    from mcutrain.cli.main import main

    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    blob = path.read_bytes()
    field = b'\\"resolution\\": 32'
    assert blob.count(field) == 1
    path.write_bytes(blob.replace(field, b'\\"resolution\\": 33'))
    assert main(["compile", str(path), "--scheme", "last-layer"]) == 2
    assert capsys.readouterr().err == (f"mcutrain compile: error: {path}: the file does not match its "
                                       f"checksum (corrupt file)\n")
