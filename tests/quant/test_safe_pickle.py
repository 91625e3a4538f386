"""Restricted loading of the paper's model files: real files load, anything foreign is refused unexecuted."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mcutrain.errors import CheckpointError
from mcutrain.quant.safe_pickle import (
    load_restricted_torch_pickle,
    load_tiny_training_pickle,
    restricted_loads,
)

MODELS = Path("/work/shared/upstream/mcu_models")
# file: (blocks, convs, backbone int8 weights, biases, classifier in, degenerate channels) (upstream README)
EXPECTED = {
    "mcunet-5fps.pkl": (14, 42, 463_216, 6_008, 160, 57),
    "mbv2-w0.35.pkl": (17, 51, 238_688, 5_760, 112, 0),
    "proxyless-w0.3.pkl": (20, 60, 320_816, 5_416, 96, 30),
}
CONV_KEYS = {"in_channel", "out_channel", "in_shape", "out_shape", "kernel_size", "stride", "groups", "depthwise",
             "act", "params"}
PARAM_KEYS = {"weight", "bias", "w_scales", "x_scale", "x_zero", "y_scale", "y_zero"}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_model_file_structure(name):
    path = MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} not present: the paper's model files are not available here")
    n_blocks, n_convs, n_weights, n_biases, cls_in, n_degenerate = EXPECTED[name]
    model = load_tiny_training_pickle(path)
    assert set(model) == {"first_conv", "blocks", "feature_mix", "classifier"}
    assert len(model["blocks"]) == n_blocks and model["feature_mix"] is None
    assert model["blocks"][0]["pointwise1"] is None
    convs = [model["first_conv"]]
    for block in model["blocks"]:
        assert set(block) >= {"pointwise1", "depthwise", "pointwise2", "residual", "se"} and block["se"] is None
        convs += [block[k] for k in ("pointwise1", "depthwise", "pointwise2") if block[k] is not None]
        if block["residual"] is not None:
            assert set(block["residual"]["params"]) == {"x_scale", "x_zero", "y_scale", "y_zero"}
    assert len(convs) == n_convs
    for conv in convs + [model["classifier"]]:
        prm = conv["params"]
        assert PARAM_KEYS <= set(prm)
        assert prm["weight"].dtype == np.int8 and prm["weight"].ndim == 4
        assert prm["bias"].dtype == np.int32 and prm["bias"].shape == (prm["weight"].shape[0],)
        assert prm["w_scales"].shape == (prm["weight"].shape[0],)
        assert prm["weight"].min() >= -127  # symmetric weights
        assert isinstance(prm["x_scale"], float) and isinstance(prm["x_zero"], int)
    for conv in convs:
        assert CONV_KEYS <= set(conv)
        assert conv["params"]["weight"].shape[0] == conv["out_channel"]
    assert sum(c["params"]["weight"].size for c in convs) == n_weights
    assert sum(c["params"]["bias"].size for c in convs) == n_biases
    assert model["classifier"]["params"]["weight"].shape == (1000, cls_in, 1, 1)
    degenerate = sum(int((c["params"]["w_scales"] < 1e-8).sum()) for c in convs)
    assert degenerate == n_degenerate


def test_real_file_needs_no_persistent_load_and_only_allowed_globals():
    path = MODELS / "mcunet-5fps.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not present: the paper's model files are not available here")
    import pickletools

    with zipfile.ZipFile(path) as zf:
        data = zf.read("archive/data.pkl")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert not any(name.endswith("PERSID") for name, _ in ops)
    globals_ = {arg for name, arg in ops if name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "_codecs encode"}


# ---------------------------------------------------------------- files written here


def test_round_trip_of_a_torch_save_numpy_dict(tmp_path):
    obj = {
        "first_conv": {"params": {"weight": np.arange(-8, 8, dtype=np.int8).reshape(2, 2, 2, 2),
                                  "bias": np.array([2**31 - 1, -(2**31)], dtype=np.int32),
                                  "w_scales": np.array([0.5, 1e-12], dtype=np.float32),
                                  "x_scale": 0.25, "x_zero": -3}},
        "blocks": [{"residual": None, "t": (1, 2.5, "x", True)}],
        "feature_mix": None,
        "classifier": {"s": np.float32(1.5), "i": np.int64(-7), "f64": np.zeros((0, 3))},
    }
    path = tmp_path / "model.pkl"
    torch.save(obj, path)  # numpy 2 writes numpy._core.multiarray names and numpy scalars
    back = load_tiny_training_pickle(path)
    np.testing.assert_array_equal(back["first_conv"]["params"]["weight"], obj["first_conv"]["params"]["weight"])
    assert back["first_conv"]["params"]["weight"].dtype == np.int8
    np.testing.assert_array_equal(back["first_conv"]["params"]["bias"], obj["first_conv"]["params"]["bias"])
    assert back["blocks"] == [{"residual": None, "t": (1, 2.5, "x", True)}]
    assert back["classifier"]["s"] == np.float32(1.5) and back["classifier"]["s"].dtype == np.float32
    assert back["classifier"]["i"] == -7 and back["classifier"]["f64"].shape == (0, 3)


def test_torch_tensors_and_persistent_ids_are_refused(tmp_path):
    path = tmp_path / "tensors.pkl"
    torch.save({"first_conv": torch.zeros(3), "blocks": [], "feature_mix": None, "classifier": None}, path)
    with pytest.raises(CheckpointError, match=r"torch\._utils\._rebuild_tensor_v2"):
        load_tiny_training_pickle(path)

    class StoragePickler(pickle.Pickler):  # what torch.save does for a storage
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 3) if obj == "a storage" else None

    buf = io.BytesIO()
    StoragePickler(buf, protocol=2).dump({"w": "a storage"})
    with pytest.raises(CheckpointError, match="persistent object 'storage'"):
        restricted_loads(buf.getvalue())


def test_malicious_os_system_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"first_conv": RunsShell(marker), "blocks": []}, protocol=2)
    path = write_zip(tmp_path / "evil.pkl", {"archive/data.pkl": payload, "archive/version": b"3\n"})
    with pytest.raises(CheckpointError, match=r"refused to load (posix|nt|os)\.system"):
        load_tiny_training_pickle(path)
    assert not marker.exists()
    # the payload is real: plain pickle would have run it
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize("payload, refused", [
    (pickle.dumps(CallsEval(), protocol=2), "__builtin__.eval"),
    (pickle.dumps(CallsEval(), protocol=4), "builtins.eval"),
    (pickle.dumps(bytearray(b"xy"), protocol=2), "__builtin__.bytearray"),
    (b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.", "only bytes() is allowed"),
    (b"\x80\x02cevil_module_that_does_not_exist\nrun\nq\x00)R.", "evil_module_that_does_not_exist.run"),
    (pickle.dumps(np.array([1, "a"], dtype=object), protocol=2), "refused numpy dtype"),
    (pickle.dumps(np.ma.masked_array([1, 2]), protocol=2), "numpy.ma.core"),
    (pickle.dumps(np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f4")]), protocol=2), "recarray"),
    (pickle.dumps((codecs.encode, ("abc", "rot13")), protocol=2), "value of type function"),
    (pickle.dumps(zipfile.ZipInfo("x"), protocol=2), "zipfile.ZipInfo"),
])
def test_foreign_pickles_are_refused(payload, refused):
    with pytest.raises(CheckpointError, match=re.escape(refused)):
        restricted_loads(payload)


def test_codecs_encode_with_another_encoding_is_refused():
    payload = (b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00rot13q\x02\x86q\x03Rq\x04.")
    with pytest.raises(CheckpointError, match="encoding 'rot13'"):
        restricted_loads(payload)


def test_not_a_zip_or_wrong_zip_is_refused(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable zip"):
        load_tiny_training_pickle(junk)
    legacy = tmp_path / "legacy.pkl"
    torch.save({"a": np.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a readable zip"):
        load_tiny_training_pickle(legacy)
    no_data = write_zip(tmp_path / "nodata.pkl", {"archive/version": b"3\n"})
    with pytest.raises(CheckpointError, match="found 0"):
        load_tiny_training_pickle(no_data)
    two = write_zip(tmp_path / "two.pkl", {"a/data.pkl": pickle.dumps({}), "b/data.pkl": pickle.dumps({})})
    with pytest.raises(CheckpointError, match="found 2"):
        load_tiny_training_pickle(two)
    with pytest.raises(CheckpointError, match="no such model file"):
        load_tiny_training_pickle(tmp_path / "missing.pkl")
    other = write_zip(tmp_path / "other.pkl", {"archive/data.pkl": pickle.dumps({"state_dict": 1}, protocol=2)})
    assert load_restricted_torch_pickle(other) == {"state_dict": 1}
    with pytest.raises(CheckpointError, match="not a tiny-training model file"):
        load_tiny_training_pickle(other)


def test_truncated_files_are_refused(tmp_path):
    good = tmp_path / "good.pkl"
    torch.save({"first_conv": {"w": np.arange(1000, dtype=np.int8)}, "blocks": [], "feature_mix": None,
                "classifier": None}, good)
    raw = good.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 30, 50):
        bad = tmp_path / f"cut{cut}.pkl"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError):
            load_tiny_training_pickle(bad)
    # a well-formed zip whose data.pkl is cut short
    with zipfile.ZipFile(good) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
        data = zf.read(name)
    short = write_zip(tmp_path / "short.pkl", {name: data[: len(data) // 2]})
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_tiny_training_pickle(short)


# ---------------------------------------------------------------- bounded work


def _shared_nest(depth: int) -> list:
    """Lists that share their children: ``depth`` levels, 2**depth paths, depth + 1 distinct lists."""
    x: list = []
    for _ in range(depth):
        x = [x, x]
    return x


def test_a_40_deep_shared_list_is_refused_within_a_small_walk(monkeypatch):
    """2**40 paths: refused for its depth after visiting each shared list once (a node budget of 1,000
    would be exhausted first by a walk that followed every path)."""
    import mcutrain.quant.safe_pickle as sp

    blob = pickle.dumps({"first_conv": {}, "blocks": _shared_nest(40), "feature_mix": None, "classifier": {}},
                        protocol=2)
    assert len(blob) < 700  # the tester's file was 604 bytes
    monkeypatch.setattr(sp, "MAX_NODES", 1_000)
    with pytest.raises(CheckpointError, match=r"<bytes>\['blocks'\](\[0\])+: nested deeper than 32 levels"):
        restricted_loads(blob)


def test_shared_references_are_walked_once_and_accepted_when_shallow(monkeypatch):
    """2**25 paths and 50,000 references to one dict fit a budget of 60,000 visits only if every
    shared object is walked once."""
    import mcutrain.quant.safe_pickle as sp

    shared = {"w": np.zeros(3, np.int8)}
    data = {"a": _shared_nest(25), "b": [shared] * 50_000}
    monkeypatch.setattr(sp, "MAX_NODES", 60_000)
    back = restricted_loads(pickle.dumps(data, protocol=2))
    assert len(back["b"]) == 50_000 and back["b"][0] is back["b"][-1]


def test_depth_is_the_longest_path_even_through_a_shared_child():
    # the shared child is first met shallow ("a": levels 2 and 3), then again under a deep chain
    # ("b": the dict 1, deep 2, 29 nested lists to level 31, leaf 32, [1] 33 > 32)
    deep = inner = []
    for _ in range(29):
        inner.append([])
        inner = inner[0]
    leaf = [[1]]
    inner.append(leaf)
    with pytest.raises(CheckpointError, match="nested deeper than 32 levels"):
        restricted_loads(pickle.dumps({"a": leaf, "b": deep}, protocol=2))
    restricted_loads(pickle.dumps({"a": leaf, "b": deep[0]}, protocol=2))  # one level less: accepted


def test_node_count_limit_and_cycles(monkeypatch):
    from mcutrain.quant import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_NODES", 1000)
    with pytest.raises(CheckpointError, match=r"more than 1,000 objects and references"):
        restricted_loads(pickle.dumps([list(range(10)) for _ in range(100)], protocol=2))
    restricted_loads(pickle.dumps([list(range(10)) for _ in range(80)], protocol=2))  # 1 + 80 + 80 * 11 = 961
    loop: list = []
    loop.append([loop])
    with pytest.raises(CheckpointError, match=r"<bytes>\[0\]\[0\]: a reference cycle"):
        restricted_loads(pickle.dumps(loop, protocol=2))


def test_real_files_are_far_inside_the_limits():
    from mcutrain.quant import safe_pickle

    for name in EXPECTED:
        path = MODELS / name
        if not path.is_file():
            pytest.skip(f"{path} not present")
        data = load_tiny_training_pickle(path)
        assert safe_pickle.MAX_DEPTH >= 4 * 6 and isinstance(data, dict)  # the real files nest 6 deep
    assert safe_pickle.MAX_DATA_PKL_BYTES >= 32 * 1024 * 1024  # the real data.pkl files are < 1 MB
