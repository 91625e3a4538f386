"""Architectures as JSON: exact round trip, one clear error per kind of mistake, one entry point."""

import json
from pathlib import Path

import pytest

from mcutrain.errors import ModelError
from mcutrain.models import (
    BlockSpec,
    build_model,
    get_spec,
    model_names,
    read_spec_file,
    remember_spec,
    resolve_spec,
    spec_from_json,
    spec_to_json,
    write_spec_file,
    zoo_spec,
)
from mcutrain.models.zoo import forget_loaded_specs, spec_to_embed
from tests.helpers.arch import custom_doc, write_doc

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tiny-custom.json"


@pytest.mark.parametrize("name", model_names())
def test_every_zoo_spec_round_trips(name):
    spec = zoo_spec(name)
    doc = json.loads(json.dumps(spec_to_json(spec)))  # through real JSON text
    assert spec_from_json(doc) == spec


def test_file_round_trip_and_defaults(tmp_path):
    spec = spec_from_json(custom_doc())
    assert spec.stem_kernel == 5 and spec.blocks[2] == BlockSpec(12, None, 12, 7, 1) and spec.blocks[2].residual
    write_spec_file(tmp_path / "a.json", spec)
    assert read_spec_file(tmp_path / "a.json") == spec
    short = {"format": "mcutrain-arch", "version": 1, "name": "short", "stem_ch": 4,
             "blocks": [{"out_ch": 4, "kernel": 3, "stride": 1},
                        {"mid_ch": 8, "out_ch": 6, "kernel": 5, "stride": 2}]}
    s = spec_from_json(short)  # in_ch of a block defaults to the previous output; stem and input defaults
    assert (s.in_ch, s.stem_kernel, s.stem_stride, s.default_resolution) == (3, 3, 2, 128)
    assert s.blocks == (BlockSpec(4, None, 4, 3, 1), BlockSpec(4, 8, 6, 5, 2))


def test_the_documented_example_is_valid():
    spec = read_spec_file(EXAMPLE)
    assert spec.name == "tiny-custom" and len(spec.blocks) == 5
    assert build_model(str(EXAMPLE), 4).spec == spec


def _set(path: str, value):
    def change(doc):
        *keys, last = path.split(".")
        target = doc
        for k in keys:
            target = target[int(k)] if isinstance(target, list) else target[k]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


_DELETE = object()


@pytest.mark.parametrize("change, message", [
    (_set("blocks.3.kernel", 9), r"blocks\[3\]\.kernel: 9 is not supported \(3, 5 or 7\)"),
    (_set("blocks.1.in_ch", 9), r"blocks\[1\]\.in_ch: 9 does not chain: blocks\[0\]\.out_ch is 8"),
    (_set("blocks.0.in_ch", 16), r"blocks\[0\]\.in_ch: 16 does not chain: stem_ch is 8"),
    (_set("blocks.2.stride", 3), r"blocks\[2\]\.stride: 3 is not supported \(1 or 2\)"),
    (_set("blocks.1.mid_ch", 0), r"blocks\[1\]\.mid_ch: 0 must be at least 1"),
    (_set("blocks.1.out_ch", 2.5), r"blocks\[1\]\.out_ch: 2\.5 is not an integer"),
    (_set("blocks.1.out_ch", True), r"blocks\[1\]\.out_ch: True is not an integer"),
    (_set("blocks.1.out_ch", _DELETE), r"blocks\[1\]\.out_ch: missing"),
    (_set("blocks.1.groups", 2), r"blocks\[1\]: unknown key\(s\) 'groups'"),
    (_set("blocks.1", [8, 16, 12]), r"blocks\[1\]: must be an object"),
    (_set("blocks", []), r"blocks: must be a non-empty list"),
    (_set("stem_kernel", 4), r"stem_kernel: 4 is not supported \(must be odd: 3, 5 or 7\)"),
    (_set("stem_stride", 4), r"stem_stride: 4 is not supported \(1 or 2\)"),
    (_set("stem_ch", -8), r"stem_ch: -8 must be at least 1"),
    (_set("in_ch", 1), r"in_ch: 1 is not supported \(the data pipeline feeds 3-channel images"),
    (_set("default_resolution", 4), r"default_resolution: 4 must be at least 8"),
    (_set("name", "my net!"), r"name: 'my net!' is not a valid name"),
    (_set("name", "tiny"), r"name: 'tiny' is a zoo model with other layers"),
    (_set("se_ratio", 0.25), r"unknown key\(s\) 'se_ratio'"),
    (_set("stem_ch", _DELETE), r"stem_ch: missing"),
    (_set("format", "onnx"), r"not an mcutrain architecture: 'format' must be 'mcutrain-arch'"),
    (_set("version", 2), r"architecture format version 2 is not supported"),
])
def test_every_mistake_is_named(change, message):
    doc = custom_doc()
    change(doc)
    with pytest.raises(ModelError, match=message):
        spec_from_json(doc)


def test_a_zoo_name_is_fine_for_the_zoo_architecture_itself():
    assert spec_from_json(spec_to_json(zoo_spec("tiny"))) == zoo_spec("tiny")


def test_file_errors_name_the_file(tmp_path):
    doc = custom_doc()
    doc["blocks"][3]["kernel"] = 9
    bad = write_doc(tmp_path / "bad.json", doc)
    with pytest.raises(ModelError, match=r"bad\.json: blocks\[3\]\.kernel: 9"):
        resolve_spec(str(bad))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"broken\.json: not a JSON file"):
        read_spec_file(tmp_path / "broken.json")
    with pytest.raises(ModelError, match=r"nope\.json: no such architecture file"):
        resolve_spec(str(tmp_path / "nope.json"))
    with pytest.raises(ModelError, match=r"must be a JSON object, got list"):
        spec_from_json([1, 2])


def test_resolve_spec_takes_a_name_a_path_or_a_spec(tmp_path):
    assert resolve_spec("tiny") is zoo_spec("tiny")
    path = write_doc(tmp_path / "mine.json", custom_doc("mine"))
    spec = resolve_spec(str(path))
    assert spec.name == "mine" and resolve_spec(spec) is spec
    assert get_spec("mine") == spec  # what the name means in this process from now on
    with pytest.raises(ModelError, match=r"unknown model 'resnet50'; known models: .*tiny, or a path to an "
                                         r"architecture \.json file"):
        resolve_spec("resnet50")


def test_only_non_zoo_specs_are_embedded_and_a_loaded_spec_wins_by_name():
    assert spec_to_embed(zoo_spec("tiny")) is None
    other = spec_from_json({**custom_doc(), "name": "tiny"}, embedded=True)  # a file is the truth
    assert spec_to_embed(other) == spec_to_json(other)
    remember_spec(other)
    assert get_spec("tiny") == other and zoo_spec("tiny") != other
    remember_spec(zoo_spec("tiny"))
    assert get_spec("tiny") == zoo_spec("tiny")


def test_a_model_file_names_its_architecture(tmp_path):
    from mcutrain.errors import CheckpointError
    from mcutrain.io.container import write_container
    from mcutrain.train.checkpoint import CheckpointInfo, save_checkpoint

    spec = spec_from_json(custom_doc())
    info = CheckpointInfo(model=spec.name, num_classes=3, resolution=16, classes=("a", "b", "c"),
                          preprocessing={"offset": 128.0, "scale": 1 / 128})
    save_checkpoint(tmp_path / "c.safetensors", build_model(spec, 3), info)
    forget_loaded_specs()
    assert resolve_spec(str(tmp_path / "c.safetensors")) == spec
    write_container(tmp_path / "s.safetensors", "train-state", 1, {}, {})
    with pytest.raises(ModelError, match=r"s\.safetensors: a 'train-state' file has no architecture"):
        resolve_spec(str(tmp_path / "s.safetensors"))
    (tmp_path / "x.safetensors").write_bytes(b"\x05")
    with pytest.raises(CheckpointError, match=r"x\.safetensors: not an mcutrain file"):
        resolve_spec(str(tmp_path / "x.safetensors"))


# --- limits ---------------------------------------------------------------------------------------

from mcutrain.models import spec_file  # noqa: E402


def chain_doc(n_blocks: int, channels: int = 8, mid: int = 16, resolution: int = 32) -> dict:
    """A legal architecture of ``n_blocks`` residual blocks (what bench/compile_scaling.py writes)."""
    blocks = [{"in_ch": channels, "mid_ch": None, "out_ch": channels, "kernel": 3, "stride": 1}]
    blocks += [{"in_ch": channels, "mid_ch": mid, "out_ch": channels, "kernel": 3, "stride": 1}] * (n_blocks - 1)
    return {"format": "mcutrain-arch", "version": 1, "name": f"chain-{n_blocks}", "stem_ch": channels,
            "default_resolution": resolution, "blocks": blocks}


@pytest.mark.parametrize("change, message", [
    (_set("stem_ch", 10 ** 7), r"stem_ch: 10000000 is over the limit of 4096"),
    (_set("stem_ch", 10 ** 12), r"stem_ch: 1000000000000 is over the limit of 4096"),
    (_set("blocks.1.mid_ch", 4097), r"blocks\[1\]\.mid_ch: 4097 is over the limit of 4096"),
    (_set("blocks.1.mid_ch", 129), r"blocks\[1\]\.mid_ch: 129 is more than 16 x in_ch \(8\), the limit of the "
                                   r"expand ratio \(at most 128 here\)"),
    (_set("blocks.3.out_ch", 10 ** 7), r"blocks\[3\]\.out_ch: 10000000 is over the limit of 4096"),
    (_set("default_resolution", 10 ** 9), r"default_resolution: 1000000000 is over the limit of 1024"),
    (_set("default_resolution", 1025), r"default_resolution: 1025 is over the limit of 1024"),
])
def test_limits_are_stated_in_the_message(change, message):
    doc = custom_doc()
    change(doc)
    with pytest.raises(ModelError, match=message):
        spec_from_json(doc)


def test_the_limits_themselves_are_legal():
    doc = custom_doc()
    doc["blocks"][1]["mid_ch"] = 128  # expand ratio exactly 16
    doc["default_resolution"] = 1024
    assert spec_from_json(doc).default_resolution == 1024
    assert len(spec_from_json(chain_doc(spec_file.MAX_BLOCKS)).blocks) == 1024


def test_too_many_blocks():
    with pytest.raises(ModelError, match=r"blocks: 1025 blocks, over the limit of 1024"):
        spec_from_json(chain_doc(1025))


def test_weights_and_feature_maps_are_bounded_by_the_whole_network():
    # every field within its own limit, the whole too big: 40 blocks of 4096 -> 4096 channels
    wide = chain_doc(40, channels=4096, mid=4096, resolution=8)
    with pytest.raises(ModelError, match=r"chain-40: 1,326,985,216 backbone weights, over the limit of 33,554,432"):
        spec_from_json(wide)
    big_map = chain_doc(2, channels=512, mid=1024, resolution=1024)
    with pytest.raises(ModelError, match=r"at resolution 1024: blocks\[1\]\.mid_ch makes a feature map of "
                                         r"1024x512x512 = 268,435,456 values, over the limit of 33,554,432"):
        spec_from_json(big_map)


def test_network_size_matches_conv_shapes():
    from mcutrain.models.zoo import conv_shapes

    for spec in (zoo_spec("mcunet-5fps"), zoo_spec("tiny"), spec_from_json(custom_doc())):
        for res in (16, 33, 128):
            weights, (values, _, _) = spec_file.network_size(spec, res)
            convs = conv_shapes(spec, res)
            assert weights == sum(c.weights for c in convs)
            assert values == max(c.out_ch * c.out_side ** 2 for c in convs)  # every map is some conv's output


def test_hostile_files_are_refused_in_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "mcutrain-arch", "blocks": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelError, match=r"deep\.json: JSON nested 100001 levels deep, over the limit of 64"):
        read_spec_file(deep)
    huge_name = custom_doc()
    huge_name["name"] = "n" * 1_000_000
    path = write_doc(tmp_path / "name.json", huge_name)
    with pytest.raises(ModelError) as err:
        read_spec_file(path)
    assert "is not a valid name" in str(err.value) and len(str(err.value)) < 400
