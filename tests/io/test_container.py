"""The safe container: round trip, and every way a file can be wrong is refused, never unpickled."""

import json
import pickle
import zipfile

import numpy as np
import pytest

from mcutrain.errors import CheckpointError
from mcutrain.io.atomic import append_jsonl, atomic_write_bytes
from mcutrain.io.container import peek_container, read_container, read_versioned_container, write_container

TENSORS = {"w": np.arange(12, dtype=np.int8).reshape(3, 4), "b": np.array([1.5, -2.0], np.float32)}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "m.safetensors"
    write_container(path, "thing", 3, {"name": "x", "n": [1, 2]}, TENSORS)
    return path


def test_round_trip(good):
    meta, tensors = read_container(good, "thing", (3,))
    assert meta == {"name": "x", "n": [1, 2]}
    assert set(tensors) == {"w", "b"}
    np.testing.assert_array_equal(tensors["w"], TENSORS["w"])
    assert tensors["w"].dtype == np.int8


def test_version_and_header_only_reads(good, tmp_path):
    assert read_versioned_container(good, "thing", (1, 3))[:2] == (3, {"name": "x", "n": [1, 2]})
    assert peek_container(good) == ("thing", 3, {"name": "x", "n": [1, 2]})
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="not an mcutrain file"):
        peek_container(tmp_path / "short")
    with pytest.raises(CheckpointError, match="no such file"):
        peek_container(tmp_path / "none")


def test_wrong_kind_and_version(good):
    with pytest.raises(CheckpointError, match="is a 'thing' file, expected 'other'"):
        read_container(good, "other", (3,))
    with pytest.raises(CheckpointError, match="version '3' is not supported"):
        read_container(good, "thing", (1, 2))


def test_flipped_data_byte_is_refused(good):
    blob = bytearray(good.read_bytes())
    blob[-3] ^= 0x40
    good.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        read_container(good, "thing", (3,))


@pytest.mark.parametrize("cut", [0, 5, 40, -4])
def test_truncated_file_is_refused(good, cut):
    blob = good.read_bytes()
    good.write_bytes(blob[:cut] if cut >= 0 else blob[:cut])
    with pytest.raises(CheckpointError):
        read_container(good, "thing", (3,))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_container(tmp_path / "nope", "thing", (1,))


PWNED = "/tmp/mcutrain-container-test-pwned"


class _Boom:
    def __reduce__(self):
        return (open, (PWNED, "w"))


def test_pickle_and_torch_zip_files_are_refused_without_unpickling(tmp_path):
    import os
    if os.path.exists(PWNED):
        os.remove(PWNED)
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match="not an mcutrain file"):
        read_container(bad, "thing", (1,))
    zipped = tmp_path / "evil.pt"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match="not an mcutrain file"):
        read_container(zipped, "thing", (1,))
    assert not os.path.exists(PWNED), "the payload ran: something unpickled the file"


def test_atomic_write_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_append_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    assert path.read_text().splitlines() == ['{"a": 1}', '{"a": 2}']


def test_equal_contents_give_equal_bytes(tmp_path):
    """safetensors writes its metadata from a randomly seeded hash map; the container sorts the header,
    so a model's file sha256 identifies its contents (the contribution cache relies on it)."""
    meta = {f"key{i}": i for i in range(20)}
    tensors = {f"t{i}": np.full((i + 1,), i, np.int8) for i in range(12)}
    blobs = []
    for name in ("a", "b", "c"):
        write_container(tmp_path / name, "thing", 1, meta, tensors)
        blobs.append((tmp_path / name).read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]
    n = int.from_bytes(blobs[0][:8], "little")
    assert n % 8 == 0
    header = blobs[0][8:8 + n].decode().rstrip(" ")
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":"))
    got_meta, got = read_container(tmp_path / "a", "thing", (1,))
    assert got_meta == meta and all(np.array_equal(got[k], v) for k, v in tensors.items())
