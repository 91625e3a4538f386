import numpy as np
import pytest
import torch

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.models import build_model
from mcutrain.train.checkpoint import KIND, CheckpointInfo, load_checkpoint, save_checkpoint
from tests.helpers.files import tamper, version_and_meta

INFO = CheckpointInfo(model="tiny", num_classes=3, resolution=32, classes=("a", "b", "c"),
                      preprocessing={"offset": 128.0, "scale": 1 / 128}, dataset="npz:x")


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model("tiny", 3).eval()
    save_checkpoint(tmp_path / "c.safetensors", model, INFO)
    loaded, info = load_checkpoint(tmp_path / "c.safetensors")
    assert info == INFO
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded.eval()(x))


def test_missing_parameter_is_an_error_not_filled_in(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, lambda meta, tensors: tensors.pop("classifier.bias"))
    with pytest.raises(CheckpointError, match=r"missing: \['classifier.bias'\]"):
        load_checkpoint(path)


def test_wrong_shape_and_unknown_model(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, lambda meta, tensors: tensors.__setitem__("classifier.weight",
                                                                          np.zeros((3, 5), np.float32)))
    with pytest.raises(CheckpointError, match="classifier.weight has shape"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta.__setitem__("model", "alexnet"))
    with pytest.raises(CheckpointError, match="unknown model 'alexnet'"):
        load_checkpoint(path)


def test_other_kind_is_refused(tmp_path):
    path = tmp_path / "state.safetensors"
    write_container(path, "train-state", 1, {}, {"x": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="expected 'float-checkpoint'"):
        load_checkpoint(path)


# ---- the architecture travels with the checkpoint ------------------------------------------------

def _custom_model(name="my-tiny"):
    from mcutrain.models import spec_from_json
    from tests.helpers.arch import custom_doc

    torch.manual_seed(2)
    return build_model(spec_from_json(custom_doc(name), embedded=True), 3).eval()


def test_zoo_nets_are_still_written_name_only_as_version_1(tmp_path):
    # The format earlier mcutrain wrote and read: such files (and their sha256) are unchanged.
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    version, meta = version_and_meta(path, KIND)
    assert version == 1 and "spec" not in meta and meta["model"] == "tiny"
    assert load_checkpoint(path)[0].spec == build_model("tiny", 3).spec


def test_a_custom_architecture_is_embedded_as_version_2(tmp_path):
    from mcutrain.models import spec_to_json

    model = _custom_model()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, CheckpointInfo(**{**INFO.__dict__, "model": "my-tiny", "resolution": 16}))
    version, meta = version_and_meta(path, KIND)
    assert version == 2 and meta["spec"] == spec_to_json(model.spec)
    loaded, info = load_checkpoint(path)
    x = torch.randn(2, 3, 16, 16)
    assert loaded.spec == model.spec and info.model == "my-tiny" and torch.equal(model(x), loaded.eval()(x))


def test_an_embedded_spec_with_a_zoo_name_wins_over_the_zoo(tmp_path):
    model = _custom_model("tiny")  # a "tiny" with other layers than the zoo's
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, CheckpointInfo(**{**INFO.__dict__, "resolution": 16}))
    assert version_and_meta(path, KIND)[0] == 2
    assert load_checkpoint(path)[0].spec == model.spec != build_model("tiny", 3).spec


def test_bad_embedded_specs_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _custom_model(), CheckpointInfo(**{**INFO.__dict__, "model": "my-tiny"}))
    tamper(path, KIND, lambda meta, tensors: meta["spec"]["blocks"][3].__setitem__("kernel", 9))
    with pytest.raises(CheckpointError, match=r"c\.safetensors: embedded architecture: blocks\[3\]\.kernel: 9"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta["spec"]["blocks"][3].__setitem__("kernel", 3))
    load_checkpoint(path)  # repaired
    tamper(path, KIND, lambda meta, tensors: meta.__setitem__("model", "other"))
    with pytest.raises(CheckpointError, match=r"embedded architecture is 'my-tiny', the metadata names 'other'"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta.pop("spec"))
    with pytest.raises(CheckpointError, match=r"version 2 file without its architecture"):
        load_checkpoint(path)


def test_info_and_model_must_agree():
    with pytest.raises(ValueError, match="names 'tiny', the model is 'my-tiny'"):
        save_checkpoint("unused.safetensors", _custom_model(), INFO)


# ---- every field validated; non-finite weights refused -------------------------------------------


def _nan_in(name):
    def change(meta, tensors):
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = np.nan
    return change


FORGED = {
    "resolution true": (lambda m, t: m.__setitem__("resolution", True),
                        r"resolution: True is not an integer in \[8, 1024\]"),
    "resolution 100000": (lambda m, t: m.__setitem__("resolution", 100000),
                          r"resolution: 100000 is not an integer in \[8, 1024\]"),
    "resolution float": (lambda m, t: m.__setitem__("resolution", 32.0), r"resolution: 32\.0 is not an integer"),
    "num_classes string": (lambda m, t: m.__setitem__("num_classes", "3"),
                           r"num_classes: '3' is not an integer in \[2, 10000\]"),
    "classes count": (lambda m, t: m["classes"].pop(), r"classes: 2 names, num_classes is 3"),
    "classes empty name": (lambda m, t: m["classes"].__setitem__(0, ""),
                           r"classes\[0\]: '' is not a printable string of 1 to 256 characters"),
    "offset 1e30": (lambda m, t: m["preprocessing"].__setitem__("offset", 1e30),
                    r"preprocessing\.offset: 1e\+30 is not a finite number in \[0, 255\]"),
    "scale 0": (lambda m, t: m["preprocessing"].__setitem__("scale", 0),
                r"preprocessing\.scale: 0 is not a finite number in \[1e-06, 1\]"),
    "offset huge int": (lambda m, t: m["preprocessing"].__setitem__("offset", 10**400),
                        r"preprocessing\.offset: 1000000.*\.\.\. is not a finite number in \[0, 255\]"),
    "class name control character": (lambda m, t: m["classes"].__setitem__(2, "c\n"),
                                     r"classes\[2\]: 'c\\n' is not a printable string"),
    "scale bool": (lambda m, t: m["preprocessing"].__setitem__("scale", True),
                   r"preprocessing\.scale: True is not a finite number"),
    "preprocessing missing": (lambda m, t: m.pop("preprocessing"), r"preprocessing: missing"),
    "unknown key": (lambda m, t: m.__setitem__("epochs", 3), r"epochs: unknown field \(allowed: "),
    "model type": (lambda m, t: m.__setitem__("model", 5), r"model: 5 is not a string"),
    "training type": (lambda m, t: m.__setitem__("training", []), r"training: \[\] is not an object"),
    "training config type": (lambda m, t: m.__setitem__("training", {"config": 5}),
                             r"training\.config: 5 is not an object"),
    "split seed": (lambda m, t: m.__setitem__("training", {"config": {"seed": -1}}),
                   r"training\.config\.seed: -1 is not an integer in \[0, 9223372036854775807\]"),
    "nan weight": (_nan_in("blocks.2.depthwise.conv.weight"),
                   r"blocks\.2\.depthwise\.conv\.weight has 1 non-finite values \(NaN or infinity\)"),
    "inf bn": (lambda m, t: t.__setitem__("classifier.bias", np.full_like(t["classifier.bias"], np.inf)),
               r"classifier\.bias has 3 non-finite values"),
    "negative variance": (lambda m, t: t.__setitem__("first_conv.bn.running_var",
                                                     -t["first_conv.bn.running_var"]),
                          r"first_conv\.bn\.running_var has negative variances"),
    "huge weight": (lambda m, t: t.__setitem__("classifier.weight", np.full_like(t["classifier.weight"], 1e38)),
                    r"classifier\.weight has values of magnitude 1e\+38, over the limit of 1e\+12"),
    "float64 tensor": (lambda m, t: t.__setitem__("classifier.bias", t["classifier.bias"].astype(np.float64)),
                       r"classifier\.bias is float64, the architecture needs float32"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_fields_and_bad_tensors_are_refused_by_name(tmp_path, case):
    change, message = FORGED[case]
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_tensor_names_in_the_cases_exist():
    # the NaN cases must hit real tensors, or they would test nothing
    names = set(build_model("tiny", 3).state_dict())
    assert {"blocks.2.depthwise.conv.weight", "first_conv.bn.running_var", "classifier.bias"} <= names


def test_a_diverged_model_or_a_bad_info_is_not_written(tmp_path):
    path = tmp_path / "c.safetensors"
    model = build_model("tiny", 3)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"refusing to write .*c\.safetensors: classifier\.weight has 1 "
                                              r"non-finite values"):
        save_checkpoint(path, model, INFO)
    with pytest.raises(CheckpointError, match=r"refusing to write .*resolution: 2 is not an integer in \[8, 1024\]"):
        save_checkpoint(path, build_model("tiny", 3), CheckpointInfo(**{**INFO.__dict__, "resolution": 2}))
    assert not path.exists()


def test_the_bundled_backbone_loads_and_has_no_timings():
    from mcutrain.assets import DEFAULT_BACKBONE

    model, info = load_checkpoint(DEFAULT_BACKBONE)
    assert info.model == "mbv2-w0.35" and info.resolution == 64 and info.num_classes == 10
    last = info.training["last_epoch"]
    assert "seconds" not in last and "images_per_s" not in last and last["epoch"] == 12


# ---- through the CLI: exit 2, one line, no traceback -----------------------------------------------


@pytest.mark.parametrize("command", ["eval", "quantize"])
@pytest.mark.parametrize("case", ["resolution true", "offset 1e30", "nan weight", "split seed"])
def test_eval_and_quantize_refuse_forged_checkpoints(tmp_path, capsys, command, case):
    from mcutrain.cli.main import main

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, FORGED[case][0])
    argv = [command, str(path), "--data", "npz:/nonexistent.npz"]
    if command == "quantize":
        argv += ["--out", str(tmp_path / "q.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mcutrain {command}: error: {path}: ")
    assert not (tmp_path / "q.safetensors").exists()
