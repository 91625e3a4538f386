"""The safe container: round trip, and every way a file can be wrong is refused, never unpickled."""

import hashlib
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest

from mcutrain.errors import CheckpointError
from mcutrain.io.atomic import append_jsonl, atomic_write_bytes
from mcutrain.io import container
from mcutrain.io.container import (
    container_bytes,
    migrate_container,
    peek_container,
    read_container,
    read_versioned_container,
    write_container,
)

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
    with pytest.raises(CheckpointError, match="thing format version 3 is not supported"):
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


# ---- the checksum covers the whole file ------------------------------------------------------------


def _header_span(blob: bytes) -> tuple[int, int]:
    n = int.from_bytes(blob[:8], "little")
    return 8, 8 + n


def test_every_flipped_bit_anywhere_is_refused(tmp_path):
    """Length prefix, JSON header (kind, version, meta, tensor dtypes/shapes/offsets, padding) and data:
    one flipped bit anywhere is refused, never read as another valid file."""
    blob = container_bytes("thing", 3, {"resolution": 32, "scale": 0.5}, TENSORS)
    path = tmp_path / "f.safetensors"
    refused = 0
    for i in range(len(blob)):  # every byte, each bit position in turn (all 8 bits: 8x the time)
        bad = bytearray(blob)
        bad[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            read_container(path, "thing", (3,))
        refused += 1
    assert refused == len(blob) > 300


@pytest.mark.parametrize("old, new", [
    (b'"resolution\\": 32', b'"resolution\\": 33'),  # inside the meta string
    (b'"mcutrain.kind":"thing"', b'"mcutrain.kind":"thang"'),
    (b'"mcutrain.version":"3"', b'"mcutrain.version":"4"'),
    (b'"dtype":"I8"', b'"dtype":"U8"'),  # a tensor's type: same size, other values
])
def test_header_edits_without_a_new_checksum_are_refused(tmp_path, old, new):
    blob = container_bytes("thing", 3, {"resolution": 32}, TENSORS)
    assert blob.count(old) == 1
    path = tmp_path / "f.safetensors"
    path.write_bytes(blob.replace(old, new))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        read_container(path, "thing", (3, 4))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        peek_container(path)  # the header-only question checks the whole file too


def test_the_checksum_is_the_sha256_of_the_file_with_its_digits_zeroed():
    blob = container_bytes("thing", 3, {"a": 1}, TENSORS)
    start, end = _header_span(blob)
    header = json.loads(blob[start:end])["__metadata__"]
    digest = header["mcutrain.checksum"].removeprefix("sha256:")
    assert len(digest) == 64 and blob.count(digest.encode()) == 1
    assert hashlib.sha256(blob.replace(digest.encode(), b"0" * 64)).hexdigest() == digest
    assert "mcutrain.sha256" not in header


def test_a_non_canonical_header_is_refused(tmp_path):
    blob = container_bytes("thing", 3, {"a": 1}, TENSORS)
    start, end = _header_span(blob)
    spaced = blob[start:end].rstrip(b" ").replace(b'","', b'", "', 1)
    spaced += b" " * (-len(spaced) % 8)
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", len(spaced)) + spaced + blob[end:])
    with pytest.raises(CheckpointError, match="not in the canonical form"):
        read_container(path, "thing", (3,))


@pytest.mark.parametrize("meta_text, message", [
    ("[1, 2]", "metadata must be a JSON object"),
    ("{\"a\": " + "[" * 40 + "]" * 40 + "}", "nested deeper than 32 levels"),
    ("{\"a\": " + "[" * 100000 + "]" * 100000 + "}", "corrupt thing metadata"),
    ("{not json", "corrupt thing metadata"),
])
def test_bad_meta_documents_are_refused(tmp_path, meta_text, message, monkeypatch):
    # forge the meta string itself (write_container would serialise a dict), checksum recomputed
    monkeypatch.setattr(container.json, "dumps", _dumps_replacing_meta(meta_text))
    blob = container_bytes("thing", 3, {"placeholder": True}, TENSORS)
    monkeypatch.undo()
    path = tmp_path / "f.safetensors"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match=message):
        read_container(path, "thing", (3,))


def _dumps_replacing_meta(meta_text):
    real = json.dumps

    def dumps(obj, **kw):
        if obj == {"placeholder": True}:
            return meta_text
        return real(obj, **kw)
    return dumps


def test_files_over_the_size_limit_are_refused_before_reading(good, monkeypatch):
    monkeypatch.setattr(container, "MAX_FILE_BYTES", 64)
    with pytest.raises(CheckpointError, match=r"bytes, over the 64-byte limit"):
        read_container(good, "thing", (3,))


# ---- files of the earlier container (checksum over the tensor data only) ----------------------------


def _legacy_bytes(kind, version, meta, tensors) -> bytes:
    """A file exactly as the earlier container wrote it."""
    from safetensors.numpy import save as st_save

    data = st_save(tensors)
    n = int.from_bytes(data[:8], "little")
    header = {"mcutrain.kind": kind, "mcutrain.version": str(version),
              "mcutrain.meta": json.dumps(meta, sort_keys=True),
              "mcutrain.sha256": hashlib.sha256(data[8 + n:]).hexdigest()}
    return container._canonical(st_save(tensors, metadata=header))


def test_legacy_files_are_refused_with_how_to_resave_them(tmp_path):
    old = tmp_path / "old.safetensors"
    old.write_bytes(_legacy_bytes("thing", 3, {"a": 1}, TENSORS))
    with pytest.raises(CheckpointError, match=r"old\.safetensors: written by an earlier mcutrain whose checksum "
                                              r"covers only the tensor data; re-save it in the current format "
                                              r"with `python -m mcutrain.io.container OLD NEW`"):
        read_container(old, "thing", (3,))


def test_migration_keeps_kind_version_meta_and_tensors(tmp_path):
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    old.write_bytes(_legacy_bytes("thing", 3, {"a": 1}, TENSORS))
    before = old.read_bytes()
    assert container.main([str(old), str(new)]) == 0
    assert old.read_bytes() == before  # read-only on its input
    assert new.read_bytes() == container_bytes("thing", 3, {"a": 1}, TENSORS)
    meta, tensors = read_container(new, "thing", (3,))
    assert meta == {"a": 1} and all(np.array_equal(tensors[k], v) for k, v in TENSORS.items())
    assert migrate_container(new, tmp_path / "again.safetensors") == ("thing", 3)  # current files too
    assert (tmp_path / "again.safetensors").read_bytes() == new.read_bytes()


def test_migration_refuses_a_corrupt_legacy_file(tmp_path, capsys):
    old = tmp_path / "old.safetensors"
    blob = bytearray(_legacy_bytes("thing", 3, {"a": 1}, TENSORS))
    blob[-1] ^= 1
    old.write_bytes(bytes(blob))
    assert container.main([str(old), str(tmp_path / "new.safetensors")]) == 2
    assert "tensor data does not match its checksum" in capsys.readouterr().err
    assert not (tmp_path / "new.safetensors").exists()


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "BF16", "XX"])
def test_tensor_dtypes_numpy_cannot_hold_are_refused(tmp_path, dtype):
    """A forged tensor entry (checksum recomputed) is refused in one line, whatever safetensors raises."""
    blob = container_bytes("thing", 3, {"a": 1}, TENSORS)
    start, end = _header_span(blob)
    header = json.loads(blob[start:end])
    header["w"]["dtype"] = dtype
    text = container._canonical_header(header)
    forged = struct.pack("<Q", len(text)) + text + blob[end:]
    field = container._checksum_field(forged)
    forged = forged[:field.start(1)] + container._whole_file_sha256(forged, field).encode() + forged[field.end(1):]
    path = tmp_path / "f.safetensors"
    path.write_bytes(forged)
    with pytest.raises(CheckpointError, match=r"f\.safetensors: corrupt thing file \("):
        read_container(path, "thing", (3,))
