"""Snapshots of the generated C (``mct_save`` / ``mct_restore``, format 2 of docs/firmware.md) on the
host build: the documented bytes, a round trip, and every damaged or foreign snapshot refused with its
own code while the live parameters and step counter stay as they were."""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.host import RestoreError
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

RES, CLASSES = 32, 4
OK, ELENGTH, EFORMAT, EMODEL, ECHECKSUM = 0, -1, -2, -3, -4


@lru_cache(maxsize=None)
def _program(scheme: str = "last-k:6", weights_seed: int = 1, lr: float = 0.1):
    q = random_qmodel("tiny", RES, CLASSES, seed=weights_seed)[0]
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=lr, seed=11)


def _engine(folder, **program) -> HostEngine:
    generate(_program(**program), folder)
    return HostEngine(build_host(folder))


def _trained(engine: HostEngine, steps: int = 3) -> HostEngine:
    rng = np.random.default_rng(5)
    for _ in range(steps):
        engine.train_step(rng.integers(-128, 128, (3, RES, RES)).astype(np.int8), int(rng.integers(0, CLASSES)))
    return engine


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A trained engine and its snapshot."""
    engine = _trained(_engine(tmp_path_factory.mktemp("live")))
    return engine, engine.save()


def _unchanged(engine: HostEngine, snapshot: bytes) -> None:
    assert engine.step == 3
    assert engine.save() == snapshot  # every trained copy and the step counter, byte for byte


def test_the_bytes_are_the_documented_format(live):
    engine, snap = live
    m = engine.manifest
    n = m["trainable_bytes"]
    assert len(snap) == m["save_bytes"] == 32 + n + 4
    assert snap[:4] == b"MCTS"
    version, = struct.unpack_from("<I", snap, 4)
    payload_bytes, step = struct.unpack_from("<II", snap, 24)
    assert (version, payload_bytes, step) == (2, n, 3)
    assert snap[8:24].hex() == m["model_id"]
    assert struct.unpack_from("<I", snap, 32 + n)[0] == zlib.crc32(snap[:32 + n])
    params = engine.parameters()
    for p in m["params"]:
        if p["kept_shape"] is not None:
            kept = tuple(p["kept_shape"])
            dtype = np.dtype(p["dtype"]).newbyteorder("<")
            chunk = snap[32 + p["save_offset"]:][:int(np.prod(kept)) * dtype.itemsize]
            assert np.array_equal(np.frombuffer(chunk, dtype).reshape(kept),
                                  params[p["name"]][tuple(slice(0, k) for k in kept)])


def test_round_trip_restores_parameters_and_step(tmp_path):
    engine = _trained(_engine(tmp_path))
    snap, params = engine.save(), engine.parameters()
    _trained(engine, 2)
    assert engine.step == 5 and engine.save() != snap
    assert engine.restore_code(snap) == OK
    assert engine.step == 3 and engine.save() == snap
    assert all(np.array_equal(params[k], v) for k, v in engine.parameters().items())


def test_every_flipped_bit_is_refused(live):
    engine, snap = live
    codes = {}
    for bit in range(len(snap) * 8):
        damaged = bytearray(snap)
        damaged[bit // 8] ^= 1 << (bit % 8)
        code = engine.restore_code(bytes(damaged))
        assert code != OK, f"bit {bit} flipped was accepted"
        codes.setdefault(code, []).append(bit)
    n = engine.manifest["trainable_bytes"]
    assert set(codes[EFORMAT]) == set(range(0, 64))  # magic and version
    assert set(codes[ELENGTH]) == set(range(24 * 8, 28 * 8))  # the payload size: not the length it says
    assert len(codes[ECHECKSUM]) == (len(snap) - 12) * 8  # identity, step, payload, the CRC itself
    assert EMODEL not in codes  # a damaged identity is damage, not another model
    assert n > 100
    _unchanged(engine, snap)


@pytest.mark.parametrize("what, code", [("second half erased", ECHECKSUM), ("all erased", EFORMAT),
                                        ("all zero", EFORMAT), ("tail erased", ECHECKSUM),
                                        ("crc erased", ECHECKSUM), ("format 1", EFORMAT)])
def test_erased_or_old_snapshots_are_refused(live, what, code):
    engine, snap = live
    half = len(snap) // 2
    damaged = {"second half erased": snap[:half] + b"\xff" * (len(snap) - half),
               "all erased": b"\xff" * len(snap), "all zero": bytes(len(snap)),
               "tail erased": snap[:-40] + b"\xff" * 40, "crc erased": snap[:-4] + b"\xff" * 4,
               "format 1": b"MCT1" + snap[4:]}[what]
    assert engine.restore_code(damaged) == code
    with pytest.raises(RestoreError, match="nothing was changed") as err:
        engine.restore(damaged)
    assert err.value.code == code
    _unchanged(engine, snap)


def test_truncated_or_padded_snapshots_are_refused(live):
    engine, snap = live
    for length in (0, 1, 8, 31, 35, 36, len(snap) // 2, len(snap) - 4, len(snap) - 1):
        assert engine.restore_code(snap[:length]) == ELENGTH, length
    assert engine.restore_code(snap + b"\0") == ELENGTH
    assert engine.restore_code(snap + b"\xff" * 64) == ELENGTH
    _unchanged(engine, snap)


@pytest.mark.parametrize("other", [{"weights_seed": 2}, {"scheme": "bias-only"}, {"scheme": "full"}],
                         ids=["same layout, other weights", "other slices, shorter", "other slices, longer"])
def test_another_models_snapshot_is_refused(live, tmp_path, other):
    engine, snap = live
    foreign = _trained(_engine(tmp_path, **other)).save()
    assert foreign[8:24] != snap[8:24]
    assert engine.restore_code(foreign) == EMODEL
    _unchanged(engine, snap)


def test_same_model_other_learning_rate_restores(live, tmp_path):
    """The identity is the model's (parameters and trained slices), not the build's: a snapshot taken
    with one learning rate continues under another."""
    engine, snap = live
    other = _engine(tmp_path, lr=0.02)
    assert other.manifest["model_id"] == engine.manifest["model_id"]
    other.restore(snap)
    assert other.step == 3 and other.save() == snap


def test_null_buffer_and_small_capacity(live):
    import ctypes

    engine, snap = live
    lib = engine._lib
    assert lib.mct_restore(None, len(snap)) == ELENGTH
    assert lib.mct_save(None, len(snap)) == 0
    small = (ctypes.c_uint8 * (len(snap) - 1))()
    assert lib.mct_save(small, len(small)) == 0 and not any(small)
    _unchanged(engine, snap)
