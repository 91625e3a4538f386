"""The host build of the generated C equals the NumPy reference executor on the paper's three networks
(random int8 weights, res 48) with the paper's 99 KB scheme on each, the last 6 layers on MCUNet and
biases only on Proxyless (each build costs ~4 s of the suite: every scheme on every net added little):
logits bit for bit before and after training; after N steps int8 weights identical except <= 1 LSB
on <= 0.1% of the elements, loss within 1e-5 (relative), the weights really moved."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import build_host, compile_for_codegen, generate
from mcutrain.codegen.check import side_by_side
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

LR, SEED, STEPS, CLASSES, RES = 0.1, 11, 4, 4, 48
PAPER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
SCHEMES = {"mcunet-5fps": ("paper-99kb", "last-k:6"), "mbv2-w0.35": ("paper-99kb",),
           "proxyless-w0.3": ("paper-99kb", "bias-only")}


@lru_cache(maxsize=None)
def _qmodel(name: str):
    return random_qmodel(name, RES, CLASSES, seed=1)[0]


@pytest.mark.parametrize("name", PAPER)
def test_training_steps_match_the_numpy_executor(tmp_path, name):
    q = _qmodel(name)
    rng = np.random.default_rng(5)
    images, labels = rng.integers(-128, 128, (STEPS, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, STEPS)
    for scheme in SCHEMES[name]:
        program = compile_for_codegen(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED)
        folder = tmp_path / scheme
        generate(program, folder)
        r = side_by_side(program, build_host(folder), images, labels, images[:2])
        d = r.differences
        print(f"{name} {scheme}: {d}; train step C {r.c_train_ms:.2f} ms, NumPy {r.numpy_train_ms:.2f} ms")
        assert r.logits_equal_before and r.logits_equal_after, scheme
        assert d["max_lsb"] <= 1 and d["bias_error"] <= 1, scheme
        assert d["differing_fraction"] <= 1e-3, scheme
        assert d["loss_rel_error"] <= 1e-5, scheme
        assert d["moved"] >= 50, scheme
