"""Corrupted saved-parameter buffers for the generated C's ``mct_restore``.

A tiny program (``tiny`` at 16x16, scheme last-k:2) is generated and built for the host once; one
training step, then ``mct_save`` gives the buffer every case corrupts (flipped bits in the header
and the payload, erased flash (0xFF), zeros, truncations, an extra byte, reordered payload, and the
buffer of another model with the same layout). Expected of each, as documented for the format: the
C API refuses it (non-zero) and leaves the parameters and the step counter as they were.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from tests.fuzz.assets import Assets
from tests.fuzz.harness import Case, fresh_dir

HEADER = 16
RES, CLASSES = 16, 3


def _build(folder: Path, seed: int) -> tuple[Path, bytes]:
    """(host library, its mct_save buffer after one training step) of a tiny program from model ``seed``."""
    from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.sparse import get_builtin, resolve

    q = random_qmodel("tiny", RES, CLASSES, seed=seed)[0]
    program = compile_for_codegen(q, resolve(get_builtin("last-k:2", "tiny"), q.spec), lr=0.05, seed=3)
    generate(program, folder)
    lib = build_host(folder)
    engine = HostEngine(lib)
    image = np.random.default_rng(seed).integers(-128, 128, (3, RES, RES)).astype(np.int8)
    engine.train_step(image, 1)
    return lib, engine.save()


@lru_cache(maxsize=None)
def programs(root: Path) -> tuple[Path, bytes, bytes]:
    """(library, its saved buffer, the saved buffer of another model with the same layout)."""
    lib, saved = _build(root / "program", seed=1)
    _, other = _build(root / "other-program", seed=2)
    assert len(other) == len(saved)
    return lib, saved, other


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def corruptions(saved: bytes, other: bytes) -> list[tuple[str, bytes]]:
    n = len(saved)
    rng = np.random.default_rng(16)
    out = [(f"bit {b} flipped (header)", _flip(saved, b)) for b in sorted({int(x) for x in rng.integers(0, HEADER * 8, 5)})]
    out += [(f"bit {b} flipped (payload)", _flip(saved, b))
            for b in sorted({int(x) for x in rng.integers(HEADER * 8, n * 8, 10)})]
    half = HEADER + (n - HEADER) // 2
    payload = saved[HEADER:]
    out += [
        ("second half 0xFF (erased flash)", saved[:half] + b"\xff" * (n - half)),
        ("payload 0xFF", saved[:HEADER] + b"\xff" * (n - HEADER)),
        ("all 0xFF", b"\xff" * n),
        ("all zeros", bytes(n)),
        ("payload zeroed", saved[:HEADER] + bytes(n - HEADER)),
        ("payload halves swapped", saved[:HEADER] + payload[len(payload) // 2:] + payload[:len(payload) // 2]),
        ("payload reversed", saved[:HEADER] + payload[::-1]),
        ("last byte + 1", saved[:-1] + bytes([(saved[-1] + 1) % 256])),
        ("truncated by 1 byte", saved[:-1]),
        ("truncated to half", saved[:half]),
        ("truncated to the header", saved[:HEADER]),
        ("empty", b""),
        ("one byte too many", saved + b"\0"),
        ("another model's buffer (same layout)", other),
        ("another model's payload under this header", saved[:HEADER] + other[HEADER:]),
    ]
    return out


def restore_cases(assets: Assets, root: Path) -> list[Case]:
    lib, saved, other = programs(root.parent / "saved-params-programs")
    cases = []
    for name, data in corruptions(saved, other):
        d = fresh_dir(root, "restore")
        buffer = d / "saved.bin"
        buffer.write_bytes(data)
        cases.append(Case("saved-params", name, restore={"lib": str(lib), "buffer": str(buffer)}))
    return cases


def valid_restore_cases(assets: Assets, root: Path) -> list[Case]:
    """The uncorrupted buffer restores (code 0): the refusals above are for the corruption."""
    lib, saved, _ = programs(root / "saved-params-programs")
    buffer = root / "saved-valid.bin"
    buffer.write_bytes(saved)
    return [Case("valid", "restore the saved buffer", restore={"lib": str(lib), "buffer": str(buffer)})]
